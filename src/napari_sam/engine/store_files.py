"""Where an embedding store may be created, and creating it without touching anything else.

Nothing the project did not create is ever deleted or overwritten: a store is created only
at a path that does not exist or is an empty folder; an existing store is replaced only when
asked (``overwrite``), and then only its own entries are removed. A store is built in a hidden
sibling folder ``.NAME.creating-XXXXXXXX`` and renamed into place when complete, so an
interrupted creation never leaves a half-made store at the path; such a leftover (only that
exact name, holding only store entries) is removed by the next creation of the same store.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

ENTRIES = frozenset({"zarr.json", "features", "sizes", "done"})  # everything a store holds
_CREATING = ".{name}.creating-"


class StoreExists(FileExistsError):
    """The path holds something that is not an embedding store (or one that may not be
    replaced): nothing was changed."""


def path_kind(path: str | os.PathLike) -> str:
    """What is at ``path``: ``"missing"``, ``"empty"`` (an empty folder), ``"store"`` (a
    napari-sam store, maybe damaged inside), ``"interrupted"`` (a store whose creation by an
    earlier version stopped before its attributes were written: it holds no embeddings),
    ``"damaged"`` (store entries with unreadable group metadata) or ``"foreign"`` (anything else)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "foreign"
    names = {p.name for p in path.iterdir()}
    if not names:
        return "empty"
    if "zarr.json" not in names:
        return "foreign"
    try:
        meta = json.loads((path / "zarr.json").read_text())
        attrs = meta.get("attributes") or {}
        if meta.get("node_type") != "group":
            return "foreign"
    except (OSError, ValueError, AttributeError):
        return "damaged" if names <= ENTRIES and (path / "features" / "zarr.json").is_file() else "foreign"
    if "napari_sam" in attrs:
        return "store"
    return "interrupted" if not attrs and "features" in names and names <= ENTRIES else "foreign"


def foreign_entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name not in ENTRIES) if path.is_dir() else []


def check_creatable(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Raise :class:`StoreExists` (nothing changed) unless a store may be created at ``path``
    (replacing the store there only if ``overwrite``), or ``OSError`` if its folder cannot be
    written. Returns :func:`path_kind`."""
    path = Path(path)
    kind = path_kind(path)
    if kind == "foreign":
        what = "a file" if path.is_file() else "a folder that is not an embedding store"
        if path.is_dir():
            names = sorted(p.name for p in path.iterdir())
            what += f" (it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        raise StoreExists(f"{path} is {what}: nothing was changed; choose a new path for the store")
    if kind in ("store", "damaged") and not overwrite:
        raise StoreExists(f"{path} is an embedding store already: open it, or replace it explicitly "
                          "(napari-sam embed --overwrite; VolumeEmbeddings.attach_store(..., overwrite=True))")
    others = foreign_entries(path) if kind in ("store", "damaged") else []
    if others:
        raise StoreExists(f"{path} is an embedding store that also holds {', '.join(others[:3])}, which are not "
                          "part of it: nothing was changed; move them away to replace the store")
    parent = path.parent if kind == "missing" else path
    while not parent.exists() and parent != parent.parent:  # missing folders are created: check the first one there
        parent = parent.parent
    if not parent.is_dir():
        raise StoreExists(f"cannot create {path}: {parent} is a file, not a folder")
    probe = parent / f".{path.name}.probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise PermissionError(f"cannot create the embedding store {path}: {parent} is not writable "
                              f"({exc.strerror or exc})") from exc
    probe.rmdir()
    return kind


def remove_store_entries(path: Path) -> None:
    """Remove a store's own entries (never anything else) and then its folder if empty."""
    for name in ENTRIES:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
    if not any(path.iterdir()):
        path.rmdir()


def _is_leftover(folder: Path, name: str) -> bool:
    pattern = re.escape(_CREATING.format(name=name)) + r"[0-9a-f]{8}"
    return (re.fullmatch(pattern, folder.name) is not None and folder.is_dir() and not folder.is_symlink()
            and {p.name for p in folder.iterdir()} <= ENTRIES)


def remove_leftovers(path: Path) -> list[Path]:
    """Remove hidden half-built stores of ``path`` left by an interrupted creation (ours only:
    the exact naming pattern, holding nothing but store entries)."""
    gone = []
    for folder in path.parent.glob(f".{glob_escape(path.name)}.creating-*"):
        if _is_leftover(folder, path.name):
            shutil.rmtree(folder)
            gone.append(folder)
    return gone


def glob_escape(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def building_folder(path: Path) -> Path:
    """A new hidden sibling folder to build the store at ``path`` in (missing parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent / f"{_CREATING.format(name=path.name)}{secrets.token_hex(4)}"
    folder.mkdir()
    return folder


def move_into_place(built: Path, path: Path) -> None:
    """Rename the finished store ``built`` to ``path`` (missing, or an empty folder)."""
    try:
        os.rename(built, path)  # POSIX: replaces an empty folder at once
    except OSError:
        if path.is_dir() and not any(path.iterdir()):  # Windows: an empty folder is in the way
            path.rmdir()
            os.rename(built, path)
        else:
            raise
