"""Settings of the automatic mask generator, in one place: :func:`~napari_sam.engine.generate_masks`
takes them as keywords (its defaults are these), ``napari-sam segment`` derives its flags from
them, and the widget's *Segment everything* panel its spin boxes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


def _setting(default, label: str, tip: str, low, high, *, panel: bool = True, step: float | None = None):
    """A field with what a command-line flag and a spin box need: ``label``, ``tip`` (help text),
    the range ``low``-``high``, a ``step`` for float boxes, and whether the panel shows it."""
    return field(default=default, metadata={"label": label, "tip": tip, "range": (low, high), "panel": panel,
                                            "step": step})


@dataclass(frozen=True)
class GeneratorSettings:
    """Parameters of SAM's automatic mask generator (see :mod:`napari_sam.engine.automatic`)."""

    points_per_side: int = _setting(32, "Points per side", "grid of point prompts per side", 1, 128)
    points_per_batch: int = _setting(64, "Points per batch", "point prompts decoded per decoder call", 1, 4096,
                                     panel=False)
    pred_iou_thresh: float = _setting(0.88, "Pred. IoU threshold", "keep masks with predicted IoU above this "
                                      "(<= 0: off)", -1.0, 1.0, step=0.01)
    stability_score_thresh: float = _setting(0.95, "Stability threshold", "keep masks at least this stable "
                                             "(0 = off)", 0.0, 1.0, step=0.01)
    stability_score_offset: float = _setting(1.0, "Stability offset", "logit offset of the stability score",
                                             0.0, 10.0, panel=False, step=0.1)
    box_nms_thresh: float = _setting(0.7, "Box NMS threshold", "drop masks whose box overlaps a better one more "
                                     "than this (1 = keep duplicates)", 0.0, 1.0, step=0.05)
    crop_n_layers: int = _setting(0, "Crop layers", "layers of overlapping crops for small objects (each "
                                  "re-embeds crops: slow)", 0, 3)
    crop_overlap_ratio: float = _setting(512 / 1500, "Crop overlap", "overlap of neighbouring crops, as a "
                                         "fraction of the crop", 0.0, 1.0, panel=False, step=0.01)
    min_mask_region_area: int = _setting(0, "Min region area", "fill holes and remove islands smaller than "
                                         "this (pixels)", 0, 1_000_000)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The keyword names, in :func:`generate_masks` order."""
        return tuple(f.name for f in fields(cls))

    def keywords(self) -> dict:
        """The settings as :func:`generate_masks` keywords."""
        return asdict(self)

    def with_values(self, **values) -> GeneratorSettings:
        """A copy with ``values`` changed; an unknown name raises ``TypeError`` naming the known ones."""
        unknown = sorted(set(values) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown segment-everything setting(s) {', '.join(unknown)}; known: "
                            f"{', '.join(self.names())}")
        return replace(self, **values)


DEFAULTS = GeneratorSettings()
