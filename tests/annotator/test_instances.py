"""*Automatic instances* in the session: the model's decoder (a small random-weight micro-sam style
export, ``decoder_checkpoint``) on the plane on screen or the whole stack, compared with direct
``segment_instances`` calls on the session's own volume; committed labels are never touched, a
cancelled run gives nothing, a model without a decoder is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator import ImageSource, Session, SyncExecutor
from napari_sam.annotator import instances as job_module
from napari_sam.engine import instance_defaults, segment_instances

from .helpers import make_ready


@pytest.fixture()
def results(session):
    out = []
    session.events.instances.connect(lambda name, data, info: out.append((name, data, info)))
    return out


@pytest.fixture()
def ais(session, rgb_image, decoder_checkpoint):
    """The discs picture with the decoder model loaded and embedded."""
    make_ready(session, ImageSource(rgb_image, rgb=True, name="discs"), decoder_checkpoint)
    assert session.model.decoder is not None
    return session


@pytest.fixture()
def ais_stack(session, stack, decoder_checkpoint):
    return make_ready(session, ImageSource(stack, name="stack"), decoder_checkpoint, (2,))


def test_plane_matches_segment_instances_and_commits_are_untouched(ais, prompts, results, count_embeddings):
    s = ais
    prompts.add(80, 100)
    assert s.commit()
    committed, before = s.labels.target, s.labels.target.data.copy()
    embedded = len(count_embeddings)

    assert s.segment_instances()
    ((name, data, info),) = results
    assert name == "SAM instances" and data.shape == (300, 400) and data.dtype == np.uint32
    expected = segment_instances(s.embedding[1], s.model.decoder, **instance_defaults(None))
    assert expected.max() > 1
    np.testing.assert_array_equal(data, expected)
    assert info["scope"] == "plane" and info["planes"] == [()] and info["count"] == expected.max()
    assert info["params"] == instance_defaults(None)  # a decoder from a file: micro-sam's generic defaults
    assert len(count_embeddings) == embedded  # the cached embedding, not a new one
    assert f"{expected.max()} objects" in s.status_text and "SAM instances" in s.status_text
    np.testing.assert_array_equal(committed.data, before)
    assert s.labels.target is committed and not s.busy


def test_parameters_reach_segment_instances(ais, results, monkeypatch):
    s = ais
    seen = []
    real = job_module.segment_instances
    monkeypatch.setattr(job_module, "segment_instances", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    s.settings.instances = {"min_size": 5, "foreground_smoothing": None}  # None: the model's default
    assert s.segment_instances(center_distance_threshold=0.45)
    (kw,) = seen
    expected = dict(instance_defaults(None), min_size=5, center_distance_threshold=0.45)
    assert {k: kw[k] for k in expected} == expected and kw["planes"] == [()]
    ((_, data, info),) = results
    np.testing.assert_array_equal(data, segment_instances(s.embedding[1], s.model.decoder, **expected))
    assert info["params"] == expected
    assert s.instance_params()["min_size"] == 5
    with pytest.raises(TypeError, match="min_area.*accepted: center_distance_threshold"):
        s.segment_instances(min_area=5)


def test_bad_values_and_scopes_are_named(ais, results):
    with pytest.raises(ValueError, match="scope must be 'plane'.*or 'stack'.*got 'volume'"):
        ais.segment_instances("volume")
    assert not ais.segment_instances("stack") and "needs a stack" in ais.status_text  # a 2D picture
    with pytest.raises(ValueError, match="foreground_threshold must lie in 0..1"):
        ais.segment_instances(foreground_threshold=1.5)  # before anything starts
    assert not results and not ais.busy


def test_stack_is_segmented_plane_by_plane_and_merged(ais_stack, results, stack):
    s = ais_stack
    assert s.segment_instances("stack")
    ((_, data, info),) = results
    assert data.shape == stack.shape and info["scope"] == "stack"
    assert info["planes"] == [(z,) for z in range(5)]
    expected = segment_instances(s.volume, s.model.decoder)  # every plane, merged along z
    np.testing.assert_array_equal(data, expected)
    shared = [set(np.unique(data[z])) & set(np.unique(data[z + 1])) - {0} for z in range(4)]
    assert data.max() > 0 and all(shared)  # objects go on through the planes (one id)
    assert "merged across planes" in s.status_text


def test_plane_of_a_stack_fills_only_that_plane(ais_stack, results):
    s = ais_stack
    assert s.segment_instances("plane")
    ((_, data, info),) = results
    assert info["planes"] == [(2,)] and "Automatic instances plane 2:" in s.status_text
    np.testing.assert_array_equal(data[2], segment_instances(s.volume, s.model.decoder, plane=(2,)))
    assert data[2].any() and not data[[0, 1, 3, 4]].any()


def test_channels_of_a_zcyx_stack_get_the_same_labels(session, results, stack, decoder_checkpoint):
    zcyx = np.stack([stack[:3], stack[:3, ::-1]], axis=1)  # (3, 2, 96, 128)
    session.set_image(ImageSource(zcyx, name="zcyx", axis_names=("z", "c", "y", "x")))
    session.load_model(str(decoder_checkpoint), device="cpu")
    assert session.axes.channel_axis == 1
    assert session.segment_instances("stack")
    ((_, data, _),) = results
    assert data.shape == zcyx.shape
    assert data.any()
    np.testing.assert_array_equal(data[:, 0], data[:, 1])


def test_cancel_mid_stack_gives_nothing_and_keeps_commits(ais_stack, prompts, results):
    s = ais_stack
    prompts.add(48, 64)
    assert s.commit()
    before = s.labels.target.data.copy()
    steps, busy = [], []
    s.events.busy.connect(busy.append)

    def progressed(label, done, total):
        steps.append(done)
        if done == 4:  # two of five planes done
            s.cancel()

    s.events.progress.connect(progressed)
    assert s.segment_instances("stack")
    assert max(steps) == 4 and not results
    assert "cancelled" in s.status_text and busy == [True, False]
    np.testing.assert_array_equal(s.labels.target.data, before)


def test_a_model_without_a_decoder_is_refused_clearly(ready, results):
    assert ready.model.decoder is None
    assert not ready.segment_instances()
    assert "instance-segmentation decoder" in ready.status_text and ready.model.label in ready.status_text
    assert "vit_b_lm" in ready.status_text and not results


def test_no_image_or_no_model(session, results, rgb_image):
    assert not session.segment_instances() and "needs an image" in session.status_text
    session.set_image(ImageSource(rgb_image, rgb=True))
    assert not session.segment_instances() and "Load model" in session.status_text
    assert not results


def test_a_result_for_another_image_is_discarded_but_a_moved_slider_is_not(stack, rgb_image, decoder_checkpoint):
    executor = SyncExecutor(deferred=True)
    s = Session(executor)
    out, said = [], []
    s.events.instances.connect(lambda name, data, info: out.append(data))
    s.events.status.connect(lambda text, warn: said.append(text))
    s.set_image(ImageSource(stack, name="stack"))
    s.set_position((2,))
    s.load_model(str(decoder_checkpoint), device="cpu")
    executor.run_all()
    assert s.segment_instances("plane")
    s.set_position((3,))  # the result is for plane 2 and lands there
    executor.run_all()
    (data,) = out
    assert data[2].any() and not data[3].any()
    assert s.segment_instances("plane")
    s.set_image(ImageSource(rgb_image, rgb=True, name="other"))
    executor.run_all()
    assert len(out) == 1 and any("another image or model: result discarded" in t for t in said)
