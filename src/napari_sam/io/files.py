"""Atomic file replacement with ordinary permissions (no Qt, no napari).

``tempfile.mkstemp`` creates files readable by their owner only (``0600``), and ``os.replace``
keeps that mode, so a file written through a temporary would end up private. The temporary
gets the mode a plain ``open()`` would have given (``0666`` less the umask) before the rename.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere it can only be read by setting it: briefly, under a lock
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode of a file created by a plain ``open()``."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write to; on success it gets the default
    file mode and replaces ``path`` at once. On any error the temporary is removed and an
    existing file at ``path`` is left untouched. The temporary is named ``.NAME.XXXXXXXX.tmp``
    (see :func:`remove_stale_temporaries` for those a killed process leaves)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_TEMP_CHARS = "[a-z0-9_]{8}"  # tempfile's random part of the names atomic_path uses


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of :func:`atomic_path` for ``path`` left in its folder (e.g. by a killed
    process): only files named exactly ``.NAME.XXXXXXXX.tmp``, nothing else."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + _TEMP_CHARS + re.escape(".tmp"))
    try:
        names = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []
    return sorted(p for p in names if p.is_file() and not p.is_symlink())


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_temporaries` of ``path`` (call it when no write of ``path`` is
    running, e.g. at the start of a batch); returns those removed."""
    removed = []
    for tmp in stale_temporaries(path):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed
