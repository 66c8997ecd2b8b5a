"""The widget on stacks: sliders drive the session's plane, the axes choosers, the propagated
layer, *Segment everything* into a new layer, the store dialog, and the keyboard flow after
jobs (our keys keep working: the points layer is active again). Random-weight tiny SAM."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.widgets import layers as L

from .helpers import add_point, candidate_layer, go_to, points_layer, press, set_step, shown_candidates, with_role

OPEN = dict(points_per_side=4, pred_iou_thresh=-1, stability_score_thresh=0, box_nms_thresh=1.0)


@pytest.fixture()
def ready(viewer, widget, stack, tiny_checkpoint):
    viewer.add_image(stack, name="stack")
    go_to(viewer, 2)
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(120)
    assert widget.embedding is not None, widget.status_text
    return widget


def test_slider_moves_the_plane_and_drops_the_object(ready, viewer):
    w = ready
    assert w.embedding[0].plane == (2,)
    add_point(viewer, 48, 56)
    assert w.wait_idle(60) and len(shown_candidates(viewer)) == 3
    go_to(viewer, 4)
    assert w.wait_idle(60) and w.embedding[0].plane == (4,)
    assert not candidate_layer(viewer).data.any() and not len(points_layer(viewer).data)
    add_point(viewer, 40, 60)
    assert w.wait_idle(60) and w.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.data.shape == (5, 96, 128) and labels.data[4].max() == 1 and not labels.data[2].any()
    assert "at plane 4" in w.status_text


def test_propagate_button_shows_planes_and_keys_work_afterwards(ready, viewer):
    w = ready
    w.session.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    w.ui.propagate.click()
    assert w.wait_idle(120) and "Propagated through 5 planes" in w.status_text
    (prop,) = with_role(viewer, "propagated")
    for at, mask in w.session.object.planes.items():
        assert np.array_equal(prop.data[at] > 0, mask > 0)
    active = viewer.layers.selection.active
    assert active is points_layer(viewer)  # the new layer does not take our keys
    press(active, "C")  # commit with the key, right after the job
    (labels,) = with_role(viewer, "labels")
    assert set(np.unique(labels.data)) == {0, 1} and all(labels.data[z].any() for z in range(5))
    assert not prop.data.any()  # drawn empty, kept for the next object
    press(viewer.layers.selection.active, "Control-Z")
    assert not labels.data.any()
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    assert w.propagate() and w.wait_idle(120) and with_role(viewer, "propagated") == [prop]  # reused


def test_segment_everything_adds_a_layer_placed_like_the_image_and_keys_still_work(viewer, widget, rgb_image,
                                                                                    tiny_checkpoint):
    w = widget
    viewer.add_image(rgb_image, name="discs", scale=(0.5, 0.5), translate=(3, 4))
    w.load_model(str(tiny_checkpoint), device="cpu")
    assert w.wait_idle(60)
    add_point(viewer, 80, 100)
    assert w.wait_idle(60) and w.commit()
    (committed,) = with_role(viewer, "labels")
    panel = w.ui.everything
    assert panel.points.value() == 0 and not panel.options.isVisibleTo(w)
    panel.toggle.setChecked(True)
    assert panel.options.isVisibleTo(w)
    for name, value in OPEN.items():
        panel.boxes[name].setValue(value)
    panel.run.click()
    assert w.wait_idle(60), w.status_text
    layer = viewer.layers["SAM everything"]
    assert layer.metadata["napari_sam"] == {"role": "labels"} and layer.data.dtype == np.uint32
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (3, 4) and layer.data.max() > 0
    assert w.ui.labels.currentText() == committed.name  # commits still go where they went
    active = viewer.layers.selection.active
    assert active is points_layer(viewer)
    press(active, "N")
    assert not w.session.positive
    with pytest.raises(TypeError):
        w.segment_everything(points=4)


def test_axes_choosers_for_a_zcyx_stack(viewer, widget, tiny_checkpoint):
    data = np.zeros((31, 2, 64, 60), np.uint16)
    data[:, 1, 20:40, 20:40] = 3000
    viewer.add_image(data, name="cells", axis_labels=("z", "c", "y", "x"))
    set_step(viewer, **{"0": 15, "1": 0})
    assert widget.wait_idle(10)
    ui = widget.ui
    assert ui.stack_rows.isVisibleTo(widget)
    assert ui.channel_axis.currentText() == "C (2)" and ui.channel_axis.currentData() == 1
    assert ui.through.currentText() == "Z (31)" and not ui.through.isEnabled()  # the only axis to walk
    assert [ui.channel.itemText(i) for i in range(ui.channel.count())] == ["channel 0", "channel 1",
                                                                          "RGB: channels 0-1"]
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding[0].plane == (15,)
    ui.channel.setCurrentIndex(ui.channel.findData(1))
    assert widget.wait_idle(60) and widget.session.axes.channel == 1
    assert "SAM sees channel 1 of C (2)" in widget.status_text
    set_step(viewer, **{"1": 1})  # the channel slider does not change the plane
    assert widget.wait_idle(60) and widget.session.plane == (15,)
    ui.channel_axis.setCurrentIndex(ui.channel_axis.findData(None))
    assert widget.wait_idle(60) and widget.session.plane == (15, 1) and ui.through.isEnabled()


def test_channel_axis_named_by_the_viewer(viewer, widget):
    data = np.zeros((3, 2, 32, 32), np.uint16)
    viewer.add_image(data, name="named")
    viewer.dims.axis_labels = ("z", "c", "y", "x")
    widget.set_image(None)
    widget.set_image(viewer.layers["named"])
    assert widget.session.axes.channel_axis == 1 and widget.ui.channel_axis.currentData() == 1
    assert widget.ui.channel_axis.currentText() == "C (2)"
    assert widget.session.plane == (viewer.dims.current_step[0],)  # planes are indexed by z alone


def test_scripts_of_issue_5_still_set_the_axes(ready, viewer):
    ready.planes.axes.set_through(0)
    assert ready.session.planes.through_image_axis() == 0
    with pytest.raises(ValueError):
        ready.planes.axes.set_channel(3, 0)


def test_open_store_button(ready, tmp_path, monkeypatch):
    from napari_sam.widgets import sam_widget

    monkeypatch.setattr(sam_widget.QFileDialog, "getExistingDirectory", lambda *a, **k: "")
    ready.ui.open_store.click()  # dialog cancelled: nothing opened
    assert ready.session.embeddings.store_path(ready.session.image) is None
    monkeypatch.setattr(sam_widget.QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    ready.ui.open_store.click()
    assert "Cannot use" in ready.status_text and "no embedding store" in ready.status_text


def test_cancel_is_enabled_exactly_while_a_job_runs(ready, viewer, qtbot):
    import threading

    w = ready
    w.session.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    add_point(viewer, 48, 56)
    assert w.wait_idle(60) and not w.ui.cancel.isEnabled()
    vol = w.session.volume
    gate, original = threading.Event(), vol.embedding

    def held(item, cancel=None):
        assert gate.wait(30)
        return original(item, cancel=cancel)

    vol.embedding = held
    assert w.propagate() and w.ui.cancel.isEnabled()
    w.ui.cancel.click()
    assert not w.ui.cancel.isEnabled() and "propagating cancelled" in w.status_text  # at once
    gate.set()
    assert w.wait_idle(60) and not w.ui.cancel.isEnabled()
    assert not with_role(viewer, "propagated") or not with_role(viewer, "propagated")[0].data.any()
    del vol.embedding
    assert L.role(viewer.layers.selection.active) == "points"


def test_a_zcyx_imagej_tiff_starts_with_the_right_axes(viewer, widget, tmp_path):
    """The stack of issue 11, opened with napari's own reader (which names no axes): the
    widget reads the file's ImageJ axes, takes C as the channel axis and walks Z."""
    import npe2
    import tifffile

    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, np.zeros((31, 2, 244, 228), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    npe2.PluginManager.instance().discover()
    viewer.open(str(path))
    assert widget.wait_idle(20)
    s, ui = widget.session, widget.ui
    assert s.axes.channel_axis == 1 and s.planes.through_image_axis() == 0
    assert ui.channel_axis.currentText() == "C (2)" and ui.through.currentText() == "Z (31)"
    assert s.planes.plane_label(s.plane) == f"z={viewer.dims.current_step[0]}"
