#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel (not editable) into a fresh venv, and use it
# from a folder outside the checkout: check a zoo spec (a copied file, and one by its zoo name),
# list the zoo and the layers, export one ONNX file.
# The venv sees the already-installed dependencies (torch pinned by .ci/run) but not the
# checkout: netspec itself must come from the wheel.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
# The sdist, then the wheel built from that sdist (what a user's pip would do with it).
python -m build --no-isolation --sdist --outdir "$work/dist" . >/dev/null
python -m build --no-isolation --wheel --outdir "$work/dist" "$work"/dist/netspec-*.tar.gz >/dev/null
python -m venv --system-site-packages "$work/venv"
unset PYTHONPATH  # a checkout on the path would hide the wheel
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/netspec-*.whl
mkdir "$work/outside"
cd "$work/outside"
where="$("$work/venv/bin/python" -c 'import netspec, os; print(os.path.dirname(netspec.__file__))')"
case "$where" in
  "$work/venv/"*) ;;
  *) echo "check_wheel: netspec imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac
cp "$root/specs/resnet18.ns" "$root/specs/mnist_cnn.ns" .
"$work/venv/bin/netspec" check resnet18.ns --brief
# The zoo ships inside the wheel: by name, with no specs/ folder anywhere near.
zoo_spec="$("$work/venv/bin/python" -c 'from netspec.zoo import path_of; print(path_of("resnet50"))')"
case "$zoo_spec" in
  "$work/venv/"*) ;;
  *) echo "check_wheel: zoo:resnet50 resolved to $zoo_spec, not inside the installed wheel" >&2; exit 1 ;;
esac
"$work/venv/bin/netspec" check zoo:resnet50 > check_resnet50.txt
grep -q "25,557,032" check_resnet50.txt
"$work/venv/bin/netspec" zoo > zoo.txt
test "$(grep -c '^zoo:' zoo.txt)" -eq "$(ls "$root"/specs/*.ns | wc -l)"
"$work/venv/bin/netspec" layers >/dev/null
"$work/venv/bin/netspec" export mnist_cnn.ns -o mnist_cnn.onnx
test -s mnist_cnn.onnx
"$work/venv/bin/netspec" draw mnist_cnn.ns -o mnist_cnn.dot && test -s mnist_cnn.dot
"$work/venv/bin/python" -c 'from netspec.serve.app import STATIC; assert (STATIC / "editor.js").is_file()'
echo "check_wheel: the installed wheel checks (by file and by zoo name), lists, exports and draws outside the checkout"
