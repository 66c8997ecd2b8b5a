"""*Automatic instances*: the model's instance-segmentation decoder (micro-sam's finetunes have
one) on the session's cached embeddings, for the plane on screen or the whole stack through it,
into a new label image (:class:`AutomaticInstances`, a job run by :meth:`Session.run_job`).

The decoder is found when the model loads (:func:`find_decoder`) and kept on the
:class:`~napari_sam.annotator.tasks.LoadedModel`. Parameters are
:func:`napari_sam.engine.segment_instances` keywords; unset ones take the model's defaults
(:func:`napari_sam.engine.instance_defaults`). The result goes to the view as the session's
``instances`` event ``(name, labels, info)``: ``labels`` has the labels shape of the image
(the segmented planes filled, every channel, zero elsewhere), ``info`` says what it is
(``scope``, ``planes``, ``model``, ``params``, ``count``). Committed labels are never touched,
and a cancelled run delivers nothing (no partial result).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import checked_instance_params, segment_instances
from .history import plane_index
from .jobs import Job, JobRefused

PARAMS = ("center_distance_threshold", "boundary_distance_threshold", "foreground_threshold",
          "foreground_smoothing", "distance_smoothing", "min_size")
SCOPES = ("plane", "stack")
LAYER_NAME = "SAM instances"
NO_DECODER = ("Automatic instances needs a model with an instance-segmentation decoder (the light-microscopy, "
              "EM, histopathology and medical models, e.g. vit_b_lm)")


def find_decoder(name_or_path, device=None, progress=None, cancel=None):
    """The instance decoder of a registered model or a checkpoint file, on ``device``, or None
    when the model has none. A file is read once (a micro-sam export or a training checkpoint
    holds the decoder beside the model; a plain SAM checkpoint has none)."""
    from ..model.formats import decoder_state, read_checkpoint
    from ..model.unetr import build_decoder
    from ..weights import REGISTRY, load_decoder

    info = REGISTRY.get(str(name_or_path))
    if info is not None:
        decoder = load_decoder(info.name, progress, cancel) if info.has_decoder else None
    else:
        path = Path(name_or_path).expanduser()
        state = decoder_state(read_checkpoint(path), path.name)
        decoder = None if state is None else build_decoder(state, name=path.name)
    return decoder if decoder is None or device is None else decoder.to(device)


def instance_params(decoder, settings: dict, overrides: dict) -> dict:
    """``segment_instances`` keywords: the model's defaults, then ``settings`` (the panel's;
    None: the default), then ``overrides``. Unknown names raise ``TypeError``, values out of
    range ``ValueError`` (both naming the parameter)."""
    unknown = sorted(set(settings) - set(PARAMS)) + sorted(set(overrides) - set(PARAMS))
    if unknown:
        raise TypeError(f"unknown automatic-instances parameter(s) {', '.join(unknown)}; accepted: {', '.join(PARAMS)}")
    given = {k: v for k, v in settings.items() if v is not None}
    return checked_instance_params(getattr(decoder, "model_name", None), {**given, **overrides})


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be 'plane' (the plane on screen) or 'stack' (every plane along the stack "
                         f"axis, merged across planes), got {scope!r}")
    return scope


class AutomaticInstances(Job):
    """The model's decoder on the plane on screen (``scope="plane"``) or on every plane along
    the session's stack axis through it (``"stack"``: segmented plane by plane, then merged
    across planes by overlap), as one new label image (see module docstring)."""

    label = "automatic instances"

    def __init__(self, scope: str, params: dict) -> None:
        self.scope, self.params = check_scope(scope), dict(params)
        self.planes: list[tuple[int, ...]] = []
        self.where = ""

    def prepare(self, session):
        source, key, model = session.image, session.current_key(), session.model
        if source is None or source.plane_shape is None:
            raise JobRefused("Automatic instances needs an image: choose a 2D (or nD) single-scale image layer.")
        if key is None:
            raise JobRefused(f"{NO_DECODER}: load one first ('Load model').")
        if model.decoder is None:
            raise JobRefused(f"{NO_DECODER}; {model.label} has none: load such a model, or use Segment everything.")
        planes = session.planes
        axis = planes.through_axis()
        if self.scope == "stack" and axis is None:
            raise JobRefused("Automatic instances on the whole stack needs a stack or time series: "
                             "this image has one plane (use the current plane).")
        try:
            vol = session.volume_for(key)
        except (ValueError, OSError) as exc:
            raise JobRefused(f"Cannot segment '{source.name}': {exc}") from exc
        if self.scope == "stack":
            session.cancel_prefetch()  # the job embeds the planes it needs itself
            self.planes = [key.plane[:axis] + (i,) + key.plane[axis + 1:] for i in range(vol.lead_shape[axis])]
            where = f" along {planes.axis_label(planes.through_image_axis())}"
        else:
            self.planes = [key.plane]
            where = f" {planes.plane_label(key.plane)}" if key.plane else ""
        self.where = where
        self.label = f"automatic instances in {source.name}{where}"
        session.message(f"{self.label}…")
        total = len(self.planes) * (vol.grid[0] * vol.grid[1] + 1) + (len(self.planes) > 1)
        return _instances(vol, model.decoder, list(self.planes), self.params), total

    def stale(self, session, task) -> bool:
        """Computed for another image, data version or model (the plane on screen may change)."""
        then, now = task.key[0], session.current_key()
        return now is None or (then.layer_id, then.data_version, then.model_token) != \
            (now.layer_id, now.data_version, now.model_token)

    def on_result(self, session, task, labels: np.ndarray) -> None:
        if self.stale(session, task) or session.image.labels_shape is None:
            session.message("Automatic instances finished for another image or model: result discarded.")
            return
        count = int(labels.max()) if labels.size else 0
        if not count:
            session.message("Automatic instances found no objects: lower the foreground threshold or the "
                            "minimum size (Options).", warn=True)
            return
        planes = session.planes
        data = np.zeros(session.image.labels_shape, np.uint32)
        for plane, plane_labels in zip(self.planes, labels):
            data[plane_index(planes.labels_at(plane))] = plane_labels  # every channel of the plane
        info = {"scope": self.scope, "planes": [tuple(p) for p in self.planes], "model": session.model.label,
                "params": dict(self.params), "count": count}
        session.events.instances.emit(LAYER_NAME, data, info)
        merged = f" in {len(self.planes)} planes, merged across planes" if len(self.planes) > 1 else ""
        session.message(f"Automatic instances{self.where}: {count} objects{merged} in '{LAYER_NAME}'.")


def _instances(vol, decoder, planes: list[tuple[int, ...]], params: dict):
    """Task function returning labels ``(N, H, W)`` uint32 of ``planes`` of ``vol`` (merged
    across them when N > 1), from the volume's cached embeddings where it has them."""
    def run(report, cancelled):
        return segment_instances(vol, decoder, planes=planes, progress=report, cancel=cancelled, **params)

    return run
