"""Files in and out, written once for every command.

- Outputs appear whole or not at all: `atomic_path` / `atomic_write` write a temporary file in
  the target's folder, fsync it, `os.replace` it over the target and fsync the folder. A killed
  process leaves at most a hidden ``.NAME.*.netspec-tmp`` file, which `clean_stale_temps`
  removes on the next write to that folder.
- Booleans read the same everywhere: `BOOL_WORDS` / `parse_bool`.
- Sizes print the same everywhere: `fmt_bytes` uses binary units (KiB, MiB, GiB: powers of
  1024), as PyTorch and the summary's memory column do; `fmt_count` groups digits.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from netspec.errors import NetspecError

BOOL_WORDS: dict[str, bool] = {
    "true": True,
    "on": True,
    "yes": True,
    "1": True,
    "false": False,
    "off": False,
    "no": False,
    "0": False,
}

TEMP_SUFFIX = ".netspec-tmp"
STALE_AFTER_S = 3600.0  # a temporary file this old belongs to a process that died


def parse_bool(text: str) -> bool | None:
    """`on/off`, `true/false`, `yes/no`, `1/0` (any case) -> bool; anything else -> None."""
    return BOOL_WORDS.get(text.strip().lower())


def fmt_count(n: int | float) -> str:
    """12345678 -> '12,345,678'; floats keep up to 4 significant digits."""
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.4g}"
    return f"{int(n):,}"


def fmt_bytes(n: int | float) -> str:
    """Bytes in binary units: 512 -> '512 B', 1536 -> '1.5 KiB', 58*2**20 -> '58.0 MiB'."""
    n = float(n)
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def check_output_folder(path: Path) -> None:
    """Refuse, with a clear message, an output path whose folder is missing or unwritable."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise NetspecError(f"cannot write {path}: it is a folder", hint="name a file inside it")
    if not folder.is_dir():
        raise NetspecError(
            f"cannot write {path}: the folder {folder} does not exist",
            hint=f"create it first (mkdir -p {folder})",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NetspecError(f"cannot write {path}: the folder {folder} is not writable")


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it when the block ends normally.

    Write the complete contents to the yielded path. On success it is fsynced, given a normal
    file's mode (0o666 less the umask, or `mode`), moved over `path` and the folder fsynced;
    if the block raises, the temporary file is removed and `path` keeps its old contents.

    Raises:
        NetspecError: the folder is missing or unwritable, or the OS refuses the write.
    """
    path = Path(path)
    check_output_folder(path)
    clean_stale_temps(path.parent if str(path.parent) else Path("."))
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise NetspecError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NetspecError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write text (UTF-8), bytes, or whatever `data(tmp)` writes, to `path` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
    return Path(path)


def clean_stale_temps(folder: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove netspec's own temporary files left in `folder` by killed processes."""
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        candidates = list(folder.glob(f".*{TEMP_SUFFIX}"))
    except OSError:
        return 0
    for f in candidates:
        try:
            if f.is_file() and f.stat().st_mtime < cutoff:
                f.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
