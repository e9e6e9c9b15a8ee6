"""`netspec zoo`: the specs bundled with netspec, each with its published figures beside what
netspec computes. Any command takes one as `zoo:NAME` (`netspec check zoo:resnet50`)."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import click


@click.command()
@click.option("--path", "show_path", is_flag=True, help="also show where each spec file lies")
@click.option("--wide", is_flag=True, help="print the whole table, whatever the terminal's width")
def zoo(show_path: bool, wide: bool) -> None:
    """List the bundled specs: description, published params and MACs, netspec's figures.

    `agree` is `yes` when netspec's params equal the published count exactly and its MACs
    round to the published GMACs (within 0.5%); `reference` where nothing is published and the
    figures equal those of an independent torch reference the tests build (U-Net); empty
    where no figure is held by a test. A family is shown at its first member.
    `pretrained` names the torchvision weights `--init pretrained` loads (the default first).
    At a terminal (or with COLUMNS set) the table fits its width: the description is folded,
    then dropped, with the pretrained weights; a figure is never cut. `--wide`: the whole table."""
    from netspec.summary import Column, compact, text_table
    from netspec.weights.pretrained import for_spec
    from netspec.zoo import PUBLISHED, gmacs_agree, names, path_of

    cells: dict[str, list[str]] = {
        k: [] for k in ("name", "description", "pub_p", "p", "pub_m", "m", "agree", "pre", "path")
    }
    for name in names():
        path = path_of(name)
        graph, errors, family = _compile(path)
        pub = PUBLISHED.get(name)
        cells["name"].append(f"zoo:{name}")
        description = graph.description if graph is not None else ""
        if family:
            description = f"{description} (family; first member)"
        cells["description"].append(description or "")
        published = pub if pub and not pub.reference else None
        cells["pub_p"].append(f"{published.params:,}" if published else "-")
        cells["pub_m"].append(f"{published.gmacs}G" if published and published.gmacs else "-")
        cells["path"].append(str(path))
        cells["pre"].append(",".join(w.name for w in for_spec(name)) or "-")
        if graph is None:
            cells["p"].append("-")
            cells["m"].append("-")
            cells["agree"].append("error")
            continue
        t = graph.totals
        cells["p"].append(f"{t.params:,}")
        cells["m"].append(compact(t.macs))
        verdict = ""
        if pub:
            same = t.params == pub.params and (pub.gmacs is None or gmacs_agree(t.macs, pub.gmacs))
            verdict = ("reference" if pub.reference else "yes") if same else "NO"
        if errors:
            verdict = (verdict + ", " if verdict else "") + f"check fails ({len(errors)})"
        cells["agree"].append(verdict)
    # At a narrow terminal the pretrained weights give way first, then the published figures
    # (`agree` says whether they agree), then the description folds or goes; netspec's stay.
    columns = [
        Column("spec", "spec", False, cells["name"], cells["name"]),
        Column("description", "description", False, [], cells["description"], True, True, 2),
        Column("params, published", "", True, [], cells["pub_p"], True, False, 1),
        Column("params, netspec", "", True, [], cells["p"]),
        Column("MACs, published", "", True, [], cells["pub_m"], True, False, 1),
        Column("MACs, netspec", "", True, [], cells["m"]),
        Column("agree", "", False, [], cells["agree"]),
        Column("pretrained", "", False, [], cells["pre"], True, False, 0),
    ]
    if show_path:
        columns.append(Column("file", "", False, [], cells["path"], descriptive=True))
    at_terminal = sys.stdout.isatty() or "COLUMNS" in os.environ
    width = shutil.get_terminal_size().columns if at_terminal and not wide else None
    lines = text_table(columns, width, header=True)
    shown = set(lines[0].split("  ")) if lines else set()
    hidden = [c.header for c in columns if c.header not in {h.strip() for h in shown}]
    if hidden:
        note = f"not shown at this width: {'; '.join(hidden)} (--wide prints the whole table)"
        lines.extend(textwrap.wrap(note, width or len(note)))
    sys.stdout.write("\n".join(lines) + "\n")


def _compile(path):
    """(graph or None, errors, is a family): a family is compiled at its first member."""
    from netspec.errors import NetspecError
    from netspec.ir.build import load_spec

    try:
        spec = load_spec(path)
    except NetspecError as e:
        return None, [e], False
    bindings = {name: d.values[0] for name, d in spec.free.items()}
    graph, errors = spec.instantiate(bindings, collect=True)
    return graph, errors, spec.is_family
