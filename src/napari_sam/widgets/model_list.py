"""The model chooser's entries: registered models grouped as :data:`napari_sam.zoo.GROUPS` (a
group without a registered model is left out; groups and models come from the registry, never
from a list here), each with its download size and a one-line summary, then local files.

Item data is what to load: a registry name, a file's path, None for the *Checkpoint file…*
entry; group headings are disabled items (data ``""``) that cannot be chosen.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont

from ..weights import REGISTRY, WeightsInfo, models_by_group
from ..zoo import GROUPS

MODEL_FILE = "Checkpoint file (.pth)…"
DEFAULT_MODEL = "vit_b_lm"  # micro-sam's light-microscopy generalist (docs/models.md: why)
FILES_GROUP = "Your files"
# Download sizes of files the publishers give no size for, by architecture (an official
# checkpoint of the same architecture holds the same tensors); the decoder is the same network
# for every model (44 MB with the transposed-convolution upsampler, 38 MB without).
APPROX_BYTES = {"vit_t": 40_600_000, **{a: REGISTRY[a].size for a in ("vit_b", "vit_l", "vit_h") if a in REGISTRY}}
DECODER_BYTES = 44_000_000


def size_text(n: float, approx: bool = False) -> str:
    """``"375 MB"``, ``"≈1.2 GB"``."""
    mark = "≈" if approx else ""
    return f"{mark}{n / 1e9:.1f} GB" if n >= 1e9 else f"{mark}{n / 1e6:.0f} MB"


def download_text(info: WeightsInfo, total: bool = False) -> str:
    """What loading ``info`` downloads: ``"375 MB"``, ``"≈375 MB + ≈44 MB decoder"`` (``total``:
    ``"≈419 MB"``)."""
    size = info.size or APPROX_BYTES.get(info.architecture, 0)
    if not size:
        return "size unknown"
    approx = not info.size or info.has_decoder
    if total:
        return size_text(size + (DECODER_BYTES if info.has_decoder else 0), approx)
    return size_text(size, approx) + (f" + {size_text(DECODER_BYTES, True)} decoder" if info.has_decoder else "")


def describe(data) -> str:
    """The line under the chooser for item data ``data`` (see module docstring)."""
    info = REGISTRY.get(data) if isinstance(data, str) else None
    if info is not None:
        extra = "; with an instance decoder: Automatic instances" if info.has_decoder else ""
        return f"{info.summary or info.group} Download {download_text(info)}{extra}."
    if data:
        return f"Local checkpoint {data}"
    return ("Pick a checkpoint file: an official SAM .pth, a micro-sam export or training checkpoint, "
            "or your own finetune (its instance decoder is used when the file has one).")


def _heading(combo, text: str, tip: str) -> None:
    combo.addItem(text, "")
    item = combo.model().item(combo.count() - 1)
    item.setFlags(Qt.NoItemFlags)  # not selectable, not enabled
    font = QFont(combo.font())
    font.setBold(True)
    item.setData(font, Qt.FontRole)
    item.setData(tip, Qt.ToolTipRole)


def fill_models(combo) -> None:
    """Fill ``combo`` with the grouped registry, a files section and *Checkpoint file…*, and
    choose :data:`DEFAULT_MODEL` (the first model if it is not registered)."""
    combo.clear()
    for group, infos in models_by_group().items():
        _heading(combo, group, GROUPS.get(group, ""))
        for info in infos:
            combo.addItem(f"  {info.name}  ({download_text(info, total=True)})", info.name)
            combo.setItemData(combo.count() - 1, describe(info.name), Qt.ToolTipRole)
    _heading(combo, FILES_GROUP, "Checkpoint files on this computer")
    combo.addItem(MODEL_FILE, None)
    combo.setItemData(combo.count() - 1, describe(None), Qt.ToolTipRole)
    index = combo.findData(DEFAULT_MODEL)
    combo.setCurrentIndex(index if index >= 0 else 1)


def add_file(combo, path: str) -> int:
    """The entry of checkpoint ``path`` (added under the files heading if new); its index."""
    index = combo.findData(path)
    if index < 0:
        index = combo.findText(MODEL_FILE)
        combo.insertItem(index, Path(path).name, path)
        combo.setItemData(index, describe(path), Qt.ToolTipRole)
    return index


def model_names(combo) -> list[str]:
    """The registry names the chooser offers, in order (test and script helper)."""
    return [combo.itemData(i) for i in range(combo.count()) if combo.itemData(i) in REGISTRY]


def headings(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count()) if combo.itemData(i) == ""]
