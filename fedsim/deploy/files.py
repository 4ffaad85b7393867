"""All-or-nothing writes of a set of files into one folder.

``fedsim deploy certs`` and ``fedsim deploy keys`` write several files that
only make sense together (a CA and the certificate it signed; one key pair per
silo). :func:`write_files` writes them into a temporary folder next to the
target first, then moves them in by ``rename``; on any error, what was moved
is taken out again, files it replaced are put back, and the temporary folder
is removed. A target folder that did not exist is created by renaming the
temporary folder itself, so it appears complete or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fedsim.errors import FedsimError


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write one file with permissions ``mode`` (set at creation, no window with wider ones)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)


def write_files(out: str | os.PathLike, files: Mapping[str, tuple[bytes, int]],
                overwrite: bool = False) -> dict[str, Path]:
    """Write ``{name: (data, mode)}`` into folder ``out``, all or nothing; returns the final paths.

    Without ``overwrite`` an existing file of the same name is an error (and nothing is written).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "keys"
    >>> sorted(p.name for p in write_files(d, {"a.key": (b"1", 0o600), "a.pub": (b"2", 0o644)}).values())
    ['a.key', 'a.pub']
    """
    out = Path(out)
    for name in files:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
    clash = [n for n in files if (out / n).exists()]
    if clash and not overwrite:
        raise FedsimError(f"{out / clash[0]} exists; use another --out or --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    placed: list[Path] = []  # new files now in ``out``
    saved: list[tuple[Path, Path]] = []  # (backup, original place) of replaced files
    try:
        for name, (data, mode) in files.items():
            _write_file(tmp / name, data, mode)
        if not out.exists():
            os.chmod(tmp, 0o755 & ~_umask())
            os.rename(tmp, out)
            return {n: out / n for n in files}
        backup = tmp / ".replaced"
        backup.mkdir()
        for name in files:
            dest = out / name
            if dest.exists():
                os.replace(dest, backup / name)
                saved.append((backup / name, dest))
            os.replace(tmp / name, dest)
            placed.append(dest)
        return {n: out / n for n in files}
    except BaseException:
        for dest in placed:
            dest.unlink(missing_ok=True)
        for old, dest in saved:
            os.replace(old, dest)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
