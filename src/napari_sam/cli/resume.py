"""What ``napari-sam segment`` finds in its output folder before it starts (see docs/batch.md).

Every label TIFF it writes records the settings it was made with (image description, entry
``segment``: the model as given, a registry name or the absolute path of the checkpoint, the
generator parameters, the package version and the model's fingerprint). On a new run an
existing output is:

- ``done`` (skipped): readable, made with the same model and parameters;
- ``unrecorded`` (skipped): readable, but its settings were not recorded (an earlier version);
- ``other``: made with another model or other parameters; the run refuses to start unless
  ``--overwrite`` (nothing is mixed, nothing replaced silently);
- ``unreadable`` (redone): empty, cut short or not a TIFF.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

OUTPUT_SUFFIX = "_labels.tif"


def model_id(model: str) -> str:
    """The model as recorded: a registry name as it is, a checkpoint as its absolute path."""
    from ..weights import REGISTRY

    return model if model in REGISTRY else str(Path(model).expanduser().absolute())


def run_settings(model: str, params: dict) -> dict:
    """What an output records about how it was made (JSON-able, compared on resume)."""
    from .. import __version__

    return {"model": model_id(model), "params": json.loads(json.dumps(params)), "version": __version__}


def output_state(path: Path, settings: dict) -> tuple[str, str]:
    """``(state, detail)`` of an existing output (see the module docstring), or ``("missing", "")``."""
    from ..io import read_labels_metadata

    if not path.exists():
        return "missing", ""
    try:
        if path.stat().st_size == 0:
            return "unreadable", "empty file"
        meta = read_labels_metadata(path)
    except Exception as exc:  # noqa: BLE001 (any reader error: the output is redone)
        return "unreadable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    made = meta.get("segment")
    if not isinstance(made, dict):
        return "unrecorded", ""
    differ = [f"model {made.get('model')!r} (now {settings['model']!r})"] if made.get("model") != settings["model"] else []
    old = made.get("params") if isinstance(made.get("params"), dict) else {}
    differ += [f"{k} {old.get(k)!r} (now {v!r})" for k, v in settings["params"].items() if old.get(k) != v]
    return ("other", ", ".join(differ)) if differ else ("done", "")


def is_our_labels(path: Path) -> bool:
    """Whether ``path`` is a label TIFF this package wrote (``*_labels.tif`` with its metadata):
    never taken as an input when a folder is searched for images."""
    from ..io import read_labels_metadata

    if not path.name.endswith(OUTPUT_SUFFIX):
        return False
    try:
        return read_labels_metadata(path).get("napari_sam") == "labels"
    except Exception:  # noqa: BLE001 (unreadable: not ours to judge, it stays an input)
        return False


def prepare_out(out: Path) -> None:
    """Create ``out`` (with its parents) and make sure files can be written there, before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"--out {out} exists and is not a folder") from None
    except OSError as exc:
        raise OSError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".napari-sam-probe-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
