"""Bad actions get a message (a warning where it matters), never a traceback.
(Moved from the widget tests; removing layers is in tests/widgets/.)"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator import ArrayLabels, ImageSource


def warnings(said):
    return [text for text, warn in said if warn]


def test_no_image(session, said):
    assert "No image" in session.status_text
    assert not session.commit() and "Nothing to commit" in session.status_text
    assert session.export("never.tif") is None and "Nothing to export" in session.status_text
    assert warnings(said)


def test_no_model_keeps_the_prompts(session, said, prompts, rgb_image):
    session.set_image(ImageSource(rgb_image, rgb=True))
    prompts.add(10, 10)
    assert "No model loaded" in session.status_text and warnings(said)
    assert len(prompts.points) == 1 and not session.object.candidates


def test_point_outside_the_image_is_ignored_with_a_message(ready, said, prompts):
    prompts.add(-40, 500)
    assert "outside the 300×400 image" in ready.status_text and warnings(said)
    assert not ready.object.candidates
    prompts.add(80, 100)  # a good point next to it still works
    assert len(ready.object.candidates) == 3 and "outside" in ready.status_text


def test_degenerate_box_is_ignored_with_a_message(ready, said, prompts):
    prompts.box((50, 50), (50.2, 120))
    assert "too small" in ready.status_text and warnings(said) and not ready.object.candidates
    prompts.box((-100, -100), (-50, -20))
    assert "outside the image" in ready.status_text


def test_only_negative_points_say_so(ready, prompts):
    ready.set_polarity(False)
    prompts.add(80, 100)
    assert "negative points only" in ready.status_text and not ready.object.candidates


def test_dropping_a_candidate(ready, prompts):
    """The view lost candidate 0 (e.g. its layer was removed): the next best is chosen."""
    prompts.add(80, 100)
    ready.drop_candidate(0)
    assert ready.object.chosen == 1
    assert not ready.select(0) and "No candidate 1" in ready.status_text
    assert ready.commit()


def test_a_forgotten_target_keeps_undo_safe(ready, prompts):
    prompts.add(80, 100)
    assert ready.commit()
    ready.forget_target(ready.labels.target)
    assert "can no longer be undone" in ready.status_text
    assert not ready.undo() and "Nothing to undo" in ready.status_text


def test_undo_on_a_target_that_is_gone(ready, prompts):
    prompts.add(80, 100)
    assert ready.commit()
    assert not ready.undo(exists=lambda target: False) and "was removed" in ready.status_text


def test_multiscale_image_gets_a_clear_message(session, said):
    session.set_image(ImageSource([np.zeros((64, 64), np.uint8), np.zeros((32, 32), np.uint8)], multiscale=True,
                                  name="pyramid"))
    assert "multiscale" in session.status_text and warnings(said)


def test_unknown_model_and_bad_device(session, tmp_path):
    session.load_model("vit_x", device="cpu")
    assert "failed" in session.status_text and "vit_x" in session.status_text
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    session.load_model(str(junk), device="cpu")
    assert "not a readable PyTorch checkpoint" in session.status_text
    assert not session.load_model("vit_b", device="cuda:7")
    assert "not available" in session.status_text or "does not exist" in session.status_text
    assert session.model is None


def test_export_to_an_unwritable_place(ready, prompts, tmp_path):
    prompts.add(80, 100)
    assert ready.commit()
    assert ready.export(tmp_path / "missing-folder" / "x.tif") is None
    assert "Export failed" in ready.status_text


def test_undo_after_the_labels_data_was_replaced(ready, prompts):
    prompts.add(80, 100)
    assert ready.commit()
    ready.labels.target.data = np.zeros((10, 10), np.uint8)
    assert not ready.undo() and "was replaced" in ready.status_text


def test_a_target_that_is_no_array(ready, prompts):
    class Lazy(ArrayLabels):
        pass

    import dask.array as da

    ready.set_target(Lazy(da.zeros((300, 400), np.uint32), "lazy"))
    prompts.add(80, 100)
    assert not ready.commit() and "not an in-memory array" in ready.status_text


def test_rgba_image_is_embedded_without_alpha(session, rgb_image, tiny_checkpoint):
    rgba = np.concatenate([rgb_image, np.full(rgb_image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    session.set_image(ImageSource(rgba, rgb=True, name="rgba"))
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert session.embedding is not None and session.embedding[1].original_size == (300, 400)


def test_export_with_nothing_committed_says_so(ready, said, prompts, tmp_path):
    """Image and model ready, a candidate shown but nothing committed: a message, no file."""
    prompts.add(80, 100)
    assert len(ready.object.candidates) == 3
    assert ready.export(tmp_path / "labels.tif") is None
    assert "Nothing to export" in ready.status_text and any("Nothing to export" in w for w in warnings(said))
    assert list(tmp_path.iterdir()) == []


def test_bad_axes_name_the_argument(session):
    with pytest.raises(ValueError, match="no image"):
        session.set_axes(channel_axis=0)
    session.set_image(ImageSource(np.zeros((3, 2, 8, 8), np.uint8)))
    with pytest.raises(ValueError, match="channel 5"):
        session.set_axes(channel_axis=1, channel=5)
    with pytest.raises(ValueError, match="through axis 3"):
        session.set_axes(through=3)
    with pytest.raises(ValueError, match="'rgb' needs a channel axis"):
        session.set_axes(channel_axis=None, channel="rgb")
