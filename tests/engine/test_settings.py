"""One home for the generator settings: generate_masks, the segment CLI and the panel agree."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from napari_sam.cli.segment import PARAMS, build_parser
from napari_sam.engine import GeneratorSettings, generate_masks


def test_generate_masks_keywords_are_the_settings_with_their_defaults():
    params = inspect.signature(generate_masks).parameters
    settings = GeneratorSettings()
    for spec in fields(GeneratorSettings):
        assert params[spec.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[spec.name].default == getattr(settings, spec.name)
    assert list(params)[1:10] == list(GeneratorSettings.names())  # the signature kept, in order
    assert (params["points_per_side"].default, params["pred_iou_thresh"].default) == (32, 0.88)


def test_segment_flags_derive_from_the_settings():
    args = build_parser().parse_args(["in.tif", "--out", "o", "--points-per-side", "8", "--box-nms-thresh", "1"])
    assert PARAMS == GeneratorSettings.names()
    values = {name: getattr(args, name) for name in PARAMS}
    assert values == GeneratorSettings().with_values(points_per_side=8, box_nms_thresh=1.0).keywords()
    assert isinstance(args.points_per_side, int) and isinstance(args.box_nms_thresh, float)


def test_unknown_settings_name_the_known_ones():
    with pytest.raises(TypeError, match="points_per_side"):
        GeneratorSettings().with_values(points=4)
