"""Files in and out, written once for every command.

- Outputs appear whole or not at all: `atomic_path` / `atomic_write` write a temporary file in
  the target's folder, fsync it, `os.replace` it over the target and fsync the folder. A killed
  process leaves at most a hidden ``.NAME.nst-HOST-PID.*.netspec-tmp`` file or folder, which
  `clean_stale_temps` removes on the next write to that folder once that process is gone
  (`sweep_stale`; never a live one); `temp_folder` does the same for work folders elsewhere.
- Booleans read the same everywhere: `BOOL_WORDS` / `parse_bool`; `--set` words by
  `parse_bindings` (the CLI's and the server's).
- Sizes print the same everywhere: `fmt_bytes` uses binary units (KiB, MiB, GiB: powers of
  1024), as PyTorch and the summary's memory column do; `fmt_count` groups digits.
- Inputs are read the same everywhere: `read_input` takes regular files only (never a device
  such as /dev/zero or a named pipe, which would never end) up to a size cap; `read_image`
  refuses decompression bombs from their header, before any pixel is decoded;
  `checkpoint_file` resolves a weights file or a run folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
SPEC_MAX_BYTES = 1 << 20  # 1 MiB: the largest bundled spec is a few KiB
MAX_IMAGE_PIXELS = 1 << 26  # 64 Mpx (8192 x 8192): a larger header is a decompression bomb
CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")  # a run folder's weights, best first
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
        fd, name = tempfile.mkstemp(
            prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent
        )
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


def owner_tag() -> str:
    """`nst-HOST-PID`: put in the name of every temporary file or folder netspec makes, so a
    later run can tell one whose process is gone (and sweep it) from a live one (never)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
    return f"nst-{host}-{os.getpid()}"


_OWNER = re.compile(r"nst-([A-Za-z0-9]+)-(\d+)(?:[.-]|$)")


def _owner_gone(name: str) -> bool | None:
    """Whether the process named in `name`'s owner tag has ended: None when the name has no
    tag, or names another host (a shared folder: that process cannot be seen from here)."""
    m = _OWNER.search(name)
    if m is None or m.group(1) != owner_tag().split("-")[1]:
        return None
    try:
        os.kill(int(m.group(2)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False  # alive under another user (or unknowable): keep it
    return False


def sweep_stale(folder: Path, pattern: str, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove the temporary files and folders matching `pattern` in `folder` that a killed
    process left: those whose owner (`owner_tag`) has ended on this host; untagged ones, or
    ones of another host, only once older than `older_than_s`. Never one of a live process.
    Returns how many were removed."""
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return 0
    for f in candidates:
        gone = _owner_gone(f.name)
        try:
            if gone is False or (gone is None and f.lstat().st_mtime >= cutoff):
                continue
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def clean_stale_temps(folder: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove netspec's own temporary files and folders left in `folder` by killed processes."""
    return sweep_stale(folder, f".*{TEMP_SUFFIX}", older_than_s)


def temp_prefix(name: str) -> str:
    """The prefix of a hidden temporary beside the output `name`: `.NAME.nst-HOST-PID.`."""
    return f".{name}.{owner_tag()}."


@contextlib.contextmanager
def temp_folder(prefix: str, folder: str | Path | None = None) -> Iterator[Path]:
    """A temporary folder named `PREFIX` + the owner tag, in `folder` (the system's temporary
    folder by default), removed when the block ends; first sweeps the folders of the same
    prefix whose process is gone (`sweep_stale`): a `kill -9` leaves nothing behind for long."""
    where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    sweep_stale(where, f"{prefix}*")
    made = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=where))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def read_input(path: str | Path, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing missing files, folders, devices, pipes and files
    over `limit` bytes before reading them.

    Raises:
        NetspecError: naming the file and why it cannot be read.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise NetspecError(f"no such {what}: {path}") from None
    except OSError as e:
        raise NetspecError(f"cannot read the {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise NetspecError(f"{path} is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise NetspecError(
            f"{path} is not a regular file (a device, pipe or socket); netspec reads a {what} "
            "only from a regular file",
            hint="save it to a regular file first",
        )
    if limit is not None and st.st_size > limit:
        raise NetspecError(
            f"the {what} {path} is {fmt_bytes(st.st_size)}, over netspec's limit of "
            f"{fmt_bytes(limit)}"
        )
    try:
        with p.open("rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise NetspecError(f"cannot read the {what} {path}: {e.strerror or e}") from None
    if limit is not None and len(data) > limit:  # it grew while we looked
        raise NetspecError(f"the {what} {path} is over netspec's limit of {fmt_bytes(limit)}")
    return data


def read_text(path: str | Path, what: str = "file", limit: int | None = None) -> str:
    """`read_input` decoded as UTF-8, refusing other encodings with the offset of the bad byte."""
    data = read_input(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NetspecError(
            f"the {what} {path} is not UTF-8 text (bad byte at offset {e.start})"
        ) from None


def read_image(
    path: str | Path, channels: int, height: int, width: int, resize: int | None = None
) -> Any:
    """An image file as a uint8 array, gray ``(H, W)`` for 1 channel or RGB ``(H, W, 3)``,
    resized (bilinear) to `height` x `width`; with `resize`, as torchvision's `Resize(resize)`
    then `CenterCrop((height, width))` do it: the short side scaled to `resize` (the aspect
    ratio kept), then the centre `height` x `width` cut out (pretrained weights' preprocessing).

    Raises:
        NetspecError: an unreadable or corrupt file, or one whose header claims more than
            `MAX_IMAGE_PIXELS` pixels (refused before decoding: a decompression bomb).
    """
    import warnings

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                w, h = image.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise _bomb(path, w, h)
                converted = image.convert("L" if channels == 1 else "RGB")
                if resize is None:
                    resized = converted.resize((width, height), Image.Resampling.BILINEAR)
                else:
                    resized = _resize_crop(converted, resize, height, width)
                return np.asarray(resized)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise NetspecError(
            f"the image {path} is too large to read: {err}",
            hint=f"netspec reads images up to {MAX_IMAGE_PIXELS:,} pixels",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise NetspecError(f"cannot read the image {path}: {err}") from None


def _resize_crop(image: Any, resize: int, height: int, width: int) -> Any:
    """torchvision's `Resize(resize)` (short side, its rounding) then `CenterCrop` on a PIL
    image; a side still short of the crop is scaled up to it."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)
    size = (resize, new_long) if w <= h else (new_long, resize)
    size = (max(size[0], width), max(size[1], height))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = int(round((size[0] - width) / 2.0))
    top = int(round((size[1] - height) / 2.0))
    return image.crop((left, top, left + width, top + height))


def _bomb(path: str | Path, w: int, h: int) -> NetspecError:
    return NetspecError(
        f"the image {path} claims {w} x {h} = {w * h:,} pixels, over netspec's limit of "
        f"{MAX_IMAGE_PIXELS:,} (a decompression bomb?)",
        hint="resize it first",
    )


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself, or for a training run's folder its best.safetensors (else
    last.safetensors).

    Raises:
        NetspecError: nothing there, or a folder without weights.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        for name in CHECKPOINT_NAMES:
            if (file / name).is_file():
                return file / name
        raise NetspecError(f"the folder {file} holds no {' or '.join(CHECKPOINT_NAMES)}")
    if not file.exists():
        raise NetspecError(
            f"no checkpoint at {path} (weights file not found)",
            hint="train one with `netspec train SPEC`",
        )
    if not file.is_file():
        raise NetspecError(f"{path} is not a regular file, so not a checkpoint")
    return file


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


def parse_bindings(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--set` words, `N=2 M=3 pool=on` -> {"N": "2", ...}; the spec coerces the values."""
    out: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split():
            if "=" not in item:
                raise NetspecError(
                    f"--set takes NAME=VALUE; received `{item}`", hint="e.g. --set N=2 M=3 pool=on"
                )
            name, value = (part.strip() for part in item.split("=", 1))
            if name in out:
                if out[name] == value:
                    continue
                raise NetspecError(
                    f"`{name}` is bound twice: {name}={out[name]} and {name}={value}",
                    hint=f"give --set {name}=... once",
                )
            out[name] = value
    return out
