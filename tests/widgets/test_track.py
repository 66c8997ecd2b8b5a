"""The widget with a SAM 2 model: a local .pt recognised as SAM 2, *Track* instead of *Propagate*
with its direction and "committed objects" controls, results drawn live, a correction click on a
later plane, commit / undo / export, and SAM 2 on a 2D image like SAM 1 (random-weight small
SAM 2 test model, tiny frames)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.io import read_labels_tiff
from napari_sam.widgets.track_panel import PROPAGATE, TRACK
from tests.synthetic import cell_centres, two_cells

from .helpers import add_point, go_to, points_layer, press, shown_candidates, with_role

PLANES = 5


@pytest.fixture()
def ready(viewer, widget, sam2_checkpoint):
    viewer.add_image(two_cells((PLANES,)), name="cells")
    go_to(viewer, 2)
    widget.session.settings.prefetch_radius = 0
    widget.load_model(str(sam2_checkpoint), device="cpu")
    assert widget.wait_idle(120) and widget.embedding is not None, widget.status_text
    return widget


def test_sam2_file_gives_track_controls_and_tracks_two_objects(ready, viewer, tmp_path, tiny_checkpoint):
    w = ready
    assert w.session.model.kind == "sam2" and w.ui.propagate.text() == TRACK
    assert w.track_panel.controls.row.isVisibleTo(w)
    add_point(viewer, *cell_centres(2)[1])
    assert w.wait_idle(60) and w.commit()  # object 1
    add_point(viewer, *cell_centres(2)[0])
    assert w.wait_idle(60) and len(shown_candidates(viewer)) == 3
    w.track_panel.controls.committed.setChecked(True)
    w.track_panel.controls.direction.setCurrentText("both")
    w.ui.propagate.click()  # Track, with the committed object of this plane
    assert w.wait_idle(120), w.status_text
    assert "Tracked 2 objects" in w.status_text and w.tracked_planes() == list(range(PLANES))
    (prop,) = with_role(viewer, "propagated")
    for z in range(PLANES):
        assert np.array_equal(prop.data[z], w.session.shown_mask((z,)))  # drawn on every plane
    assert viewer.layers.selection.active is points_layer(viewer)

    go_to(viewer, 4)  # a correction on a later plane re-tracks the object under the click
    assert w.wait_idle(60) and not len(points_layer(viewer).data)
    owned = np.argwhere(w.session.current_track.owners(4) == 1)  # the new object there
    before = {z: w.session.current_track.objects[1].masks[z].copy() for z in range(PLANES)}
    add_point(viewer, *map(float, owned[len(owned) // 2]))
    assert w.wait_idle(60) and "Re-tracked the new object" in w.status_text, w.status_text
    assert all(np.array_equal(w.session.current_track.objects[1].masks[z], before[z]) for z in range(PLANES))
    assert np.array_equal(prop.data[4], w.session.shown_mask((4,)))

    press(viewer.layers.selection.active, "C")  # commit: one id per object through the planes
    (labels,) = with_role(viewer, "labels")
    assert all(set(np.unique(labels.data[z])) - {0} <= {1, 2} for z in range(PLANES))
    assert (labels.data == 2).any() and not prop.data.any()
    out = w.export_labels(tmp_path / "tracked.tif")
    assert np.array_equal(read_labels_tiff(out)[0], labels.data)
    after = labels.data.copy()
    press(viewer.layers.selection.active, "Control-Z")
    assert set(np.unique(labels.data)) == {0, 1} and not labels.data[[0, 1, 3, 4]].any()
    press(viewer.layers.selection.active, "Control-Shift-Z")
    assert np.array_equal(labels.data, after)

    w.load_model(str(tiny_checkpoint), device="cpu")  # SAM 1: Propagate again
    assert w.wait_idle(120) and w.ui.propagate.text() == PROPAGATE and not w.track_panel.controls.row.isVisibleTo(w)


def test_track_scripting_api(ready, viewer):
    w = ready
    with pytest.raises(ValueError, match="direction must be one of"):
        w.track(direction="up")
    assert not w.track() and "Track needs an object" in w.status_text
    add_point(viewer, *cell_centres(2)[0])
    assert w.wait_idle(60)
    assert w.track(direction="backward")
    assert w.wait_idle(120) and w.tracked_planes() == [0, 1, 2]
    w.cancel()
    w.clear()  # Esc drops the track
    assert w.tracked_planes() == [] and not with_role(viewer, "propagated")[0].data.any()


def test_sam2_on_a_2d_image_works_like_sam1(viewer, widget, sam2_checkpoint):
    viewer.add_image(two_cells(()), name="cell")
    widget.load_model(str(sam2_checkpoint), device="cpu")
    assert widget.wait_idle(120) and widget.embedding is not None
    assert widget.ui.propagate.text() == TRACK and not widget.track_panel.controls.row.isVisibleTo(widget)
    add_point(viewer, *cell_centres(0)[0])
    assert widget.wait_idle(60) and len(shown_candidates(viewer)) == 3  # three candidates
    assert widget.select_candidate(1)
    mask = widget.session.object.chosen_candidate.mask > 0
    add_point(viewer, *cell_centres(0)[1])  # refinement: one mask from the points and the chosen logits
    assert widget.wait_idle(60) and len(shown_candidates(viewer)) == 1
    refined = widget.session.object.chosen_candidate.mask > 0
    assert widget.commit() and not widget.track()
    (labels,) = with_role(viewer, "labels")
    assert np.array_equal(labels.data > 0, refined) and labels.data.shape == (64, 80)
    assert mask.shape == refined.shape
