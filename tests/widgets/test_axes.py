"""The widget on time series and multichannel stacks: the axis walked by prefetch and
propagation, the channel SAM sees (one channel or channels as RGB), labels through channels,
and a store made for one channel (random-weight tiny SAM)."""

from __future__ import annotations

import numpy as np
import torch

from napari_sam.cli.embed import main as embed_main
from napari_sam.io import read_labels_tiff

from .helpers import add_point, with_role


def set_step(viewer, **steps):
    """Move the sliders: ``set_step(viewer, **{"0": t, "1": z})`` by viewer axis number."""
    step = list(viewer.dims.current_step)
    for axis, value in steps.items():
        step[int(axis)] = value
    viewer.dims.current_step = tuple(step)


def disc_planes(lead, drift_axis, seed):
    """uint16 ``(*lead, 96, 128)``: noise, plus a disc drifting along lead axis ``drift_axis``."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:96, :128]
    data = rng.integers(0, 400, (*lead, 96, 128)).astype(np.uint16)
    for idx in np.ndindex(*lead):
        data[idx][(rr - 48) ** 2 + (cc - 50 - 3 * idx[drift_axis]) ** 2 < 22**2] += 3000
    return data


def test_time_series_prefetches_and_propagates_through_time(viewer, widget, tiny_checkpoint):
    data = disc_planes((3, 4), drift_axis=0, seed=21)  # (T, Z, Y, X)
    viewer.add_image(data, name="movie")
    set_step(viewer, **{"0": 1, "1": 2})
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(120) and widget.embedding[0].plane == (1, 2)
    ui = widget.ui
    assert widget.planes.axis() == 1 and ui.through.currentData() == 1 and ui.through.isEnabled()
    assert [ui.through.itemData(i) for i in range(ui.through.count())] == [0, 1]
    vol = widget.planes.volume
    assert {item[:2] for item in vol.cache.keys()} == {(1, z) for z in range(4)}  # prefetched through z
    vol.cache.clear()
    vol.cache.put((1, 2, 0, 0), widget.embedding[1])
    ui.through.setCurrentIndex(ui.through.findData(0))  # the user picks time
    assert widget.planes.axis() == 0 and widget.wait_idle(120)
    assert {item[:2] for item in vol.cache.keys()} == {(0, 2), (1, 2), (2, 2)}  # prefetched through t

    widget.planes.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    add_point(viewer, 48, 53)
    assert widget.wait_idle(60) and widget.propagate() and widget.wait_idle(120)
    assert set(widget.annotation.propagated) == {(t, 2) for t in range(3)}
    assert "Propagated through 3 planes" in widget.status_text
    assert widget.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.data.shape == (3, 4, 96, 128)
    assert all(labels.data[t, 2].max() == 1 for t in range(3))
    assert not labels.data[:, [0, 1, 3]].any()  # other z untouched


def test_multichannel_stack_segments_the_chosen_channel_and_walks_z(viewer, widget, tiny_checkpoint, tmp_path):
    from napari_sam.engine import ChannelComposite

    rng = np.random.default_rng(22)
    data = np.stack([rng.integers(0, 400, (4, 96, 128)).astype(np.uint16),
                     disc_planes((4,), drift_axis=0, seed=23)], axis=1)  # (Z, C, Y, X): the disc in channel 1
    layer = viewer.add_image(data, name="cells", contrast_limits=(0, 3500))
    set_step(viewer, **{"0": 1, "1": 0})
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(120)
    ui = widget.ui
    assert widget.planes.axis() == 1  # no channel axis chosen: channels are planes (as before)
    assert ui.channel_axis.currentData() is None and not ui.channel.isEnabled()

    ui.channel_axis.setCurrentIndex(ui.channel_axis.findData(1))
    ui.channel.setCurrentIndex(ui.channel.findData(1))
    assert widget.wait_idle(120)
    key, emb = widget.embedding
    assert key.plane == (1,) and widget.planes.axis() == 0 and ui.through.currentData() == 0
    assert not ui.through.isEnabled()  # z is the only axis to walk
    expected = widget.model.predictor.compute_embedding(data[1, 1], (0.0, 3500.0))
    assert torch.equal(emb.features, expected.features)
    assert "SAM sees channel 1 of axis 1" in widget.status_text
    assert {item[0] for item in widget.planes.volume.cache.keys()} == {0, 1, 2, 3}  # prefetched along z

    add_point(viewer, 48, 53)
    assert widget.wait_idle(60) and len(with_role(viewer, "candidate")) == 3
    set_step(viewer, **{"1": 1})  # looking at the other channel keeps the object
    assert widget.wait_idle(60) and len(with_role(viewer, "candidate")) == 3
    widget.planes.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    assert widget.propagate() and widget.wait_idle(120)
    assert set(widget.annotation.propagated) == {(z, None) for z in range(4)}
    (prop,) = with_role(viewer, "propagated")
    assert prop.data.shape == data.shape and np.array_equal(prop.data[:, 0], prop.data[:, 1])
    assert widget.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.data.shape == (4, 2, 96, 128)  # the image's shape: overlays in napari
    assert np.array_equal(labels.data[:, 0], labels.data[:, 1]) and set(np.unique(labels.data)) == {0, 1}
    assert all(labels.data[z, 0].any() for z in range(4))
    out = widget.export_labels(tmp_path / "cells_labels.tif")
    back, meta = read_labels_tiff(out)
    assert back.shape == (4, 96, 128) and np.array_equal(back, labels.data[:, 0])
    assert len(meta["scale"]) == 3 and "without the channel axis" in widget.status_text
    assert widget.undo() and not labels.data.any()
    assert widget.segment_everything(points_per_side=4, pred_iou_thresh=-1.0, stability_score_thresh=0.0,
                                     box_nms_thresh=1.0)
    assert widget.wait_idle(120)
    everything = viewer.layers["SAM everything"].data
    assert everything.shape == data.shape and everything[1, 0].any()  # plane z=1, every channel
    assert np.array_equal(everything[1, 0], everything[1, 1]) and not everything[[0, 2, 3]].any()

    ui.channel.setCurrentIndex(ui.channel.findData("rgb"))  # channels 0 and 1 as red and green
    assert widget.wait_idle(120)
    vol = widget.planes.volume
    composite = ChannelComposite(data, 1, (0, 1))
    assert vol.rgb and vol.contrast_limits is None and "channels 0-1 as RGB" in widget.status_text
    expected = widget.model.predictor.compute_embedding(composite[1])
    assert torch.equal(widget.embedding[1].features, expected.features)
    ui.channel_axis.setCurrentIndex(ui.channel_axis.findData(None))  # back to channels as planes
    assert widget.wait_idle(120) and widget.embedding[0].plane == (1, 1) and widget.planes.axis() == 1
    assert layer.data is data


def test_channel_axis_named_c_is_taken_as_channels(viewer, widget):
    data = np.zeros((3, 2, 32, 32), np.uint16)
    viewer.add_image(data, name="named")
    viewer.dims.axis_labels = ("z", "c", "y", "x")
    widget.set_image(None)
    widget.set_image(viewer.layers["named"])
    assert widget.planes.axes.channel_axis == 1 and widget.ui.channel_axis.currentData() == 1
    assert widget.ui.channel_axis.currentText() == "c (axis 1, 2)"
    assert widget.planes.current() == (viewer.dims.current_step[0],)  # planes are indexed by z alone


def test_store_of_one_channel_is_reused_for_that_channel(viewer, widget, tiny_checkpoint, tmp_path,
                                                        count_embeddings):
    from napari_sam.engine import EmbeddingStore

    data = np.stack([disc_planes((3,), 0, 24), disc_planes((3,), 0, 25) // 3], axis=1)  # (Z, C, Y, X)
    np.save(tmp_path / "cells.npy", data)
    store = tmp_path / "cells.zarr"
    assert embed_main([str(tmp_path / "cells.npy"), "--model", str(tiny_checkpoint), "--out", str(store),
                       "--device", "cpu", "--channel-axis", "1", "--channel", "1"]) == 0
    assert EmbeddingStore(store).info.index_shape == (3, 1, 1)
    count_embeddings.clear()
    viewer.add_image(data, name="cells")
    widget.open_embedding_store(store)
    widget.planes.axes.set_channel(1, 1)
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None, widget.status_text
    assert "SAM sees channel 1 of axis 1; embeddings from 'cells.zarr'" in widget.status_text
    assert len(widget.planes.volume.cache.keys()) == 3 and count_embeddings == []
