"""The session on time series and multichannel stacks: default axes (from names or shapes), the
axis walked by prefetch and propagation, the channel SAM sees (one channel or channels as RGB),
labels through channels, and a store made for one channel (random-weight tiny SAM).
(Moved from the widget tests; the ZCYX defaults are new.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.annotator import Axes, ImageSource, Planes, default_axes
from napari_sam.cli.embed import main as embed_main
from napari_sam.io import read_labels_tiff
from tests.synthetic import drifting_disc

OPEN = dict(points_per_side=4, pred_iou_thresh=-1.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def disc_planes(lead, drift_axis, seed):
    """uint16 ``(*lead, 96, 128)``: noise, plus a disc drifting along lead axis ``drift_axis``."""
    return drifting_disc(lead, drift_axis, seed)


@pytest.mark.parametrize("names", [(), ("z", "c", "y", "x"), ("Z", "C", "Y", "X")])
def test_zcyx_stack_starts_with_the_right_axes(names):
    """The (31, 2, 244, 228) ZCYX stack of issue 11: channels on axis 1, propagation along z."""
    source = ImageSource(np.zeros((31, 2, 244, 228), np.uint16), axis_names=names, name="cells")
    axes = default_axes(source)
    assert axes == Axes(channel_axis=1, channel=0, through=None)
    planes = Planes(source, axes)
    assert planes.through_image_axis() == 0 and planes.through_choices() == [0]
    assert planes.plane_of((15, 1)) == (15,) and planes.labels_at((15,)) == (15, None)
    if names:
        assert planes.axis_label(0) == "Z (31)" and planes.axis_label(1) == "C (2)"
        assert planes.plane_label((15,)) == "z=15"
        assert planes.describe() == "channel 0 of C (2)"
    else:
        assert planes.axis_label(0) == "axis 0 (31)" and planes.plane_label((15,)) == "plane 15"


@pytest.mark.parametrize(("shape", "names", "channel", "through"), [
    ((5, 96, 128), (), None, 0),  # a z-stack
    ((3, 4, 96, 128), (), None, 1),  # short axes only: no guess, the last one is walked
    ((3, 31, 96, 128), (), 0, 1),  # CZYX
    ((31, 3, 96, 128), ("t", "z", "y", "x"), None, 1),  # named: z walked, never guessed a channel
    ((31, 3, 96, 128), ("t", "c", "y", "x"), 1, 0),
    ((4, 2, 96, 128), (), None, 1),  # 4 planes and 2: neither is long
])
def test_default_axes(shape, names, channel, through):
    source = ImageSource(np.zeros(shape, np.uint8), axis_names=names)
    axes = default_axes(source)
    assert axes.channel_axis == channel
    assert Planes(source, axes).through_image_axis() == through


def test_commit_through_channels_counts_label_pixels_once(session, prompts, tiny_checkpoint):
    data = np.stack([disc_planes((3,), 0, 31), disc_planes((3,), 0, 32)], axis=1)  # (Z, C, Y, X)
    session.set_image(ImageSource(data, axis_names=("z", "c", "y", "x"), name="cells"))
    session.set_position((1, 0))
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert session.axes.channel_axis == 1 and session.plane == (1,)
    prompts.add(48, 53)
    assert session.commit()
    labels = session.labels.target.data
    painted = int(np.count_nonzero(labels[1, 0]))
    assert f"({painted} pixels at z=1)" in session.status_text  # not twice that (two channel copies)


def test_time_series_prefetches_and_propagates_through_time(session, prompts, tiny_checkpoint):
    s = session
    data = disc_planes((3, 4), drift_axis=0, seed=21)  # (T, Z, Y, X)
    s.set_image(ImageSource(data, name="movie"))
    s.set_position((1, 2))
    s.load_model(str(tiny_checkpoint), device="cpu")
    assert s.embedding[0].plane == (1, 2)
    planes = s.planes
    assert planes.through_axis() == 1 and planes.through_image_axis() == 1 and planes.through_choices() == [0, 1]
    vol = s.volume
    assert {item[:2] for item in vol.cache.keys()} == {(1, z) for z in range(4)}  # prefetched through z
    vol.cache.clear()
    vol.cache.put((1, 2, 0, 0), s.embedding[1])
    s.set_through(0)  # the user picks time
    assert s.planes.through_axis() == 0
    assert {item[:2] for item in vol.cache.keys()} == {(0, 2), (1, 2), (2, 2)}  # prefetched through t

    s.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    prompts.add(48, 53)
    assert s.propagate()
    assert set(s.propagated) == {(t, 2) for t in range(3)}
    assert "Propagated through 3 planes" in s.status_text
    assert s.commit()
    labels = s.labels.target.data
    assert labels.shape == (3, 4, 96, 128)
    assert all(labels[t, 2].max() == 1 for t in range(3))
    assert not labels[:, [0, 1, 3]].any()  # other z untouched


def test_multichannel_stack_segments_the_chosen_channel_and_walks_z(session, prompts, tiny_checkpoint, tmp_path):
    from napari_sam.engine import ChannelComposite

    s = session
    rng = np.random.default_rng(22)
    data = np.stack([rng.integers(0, 400, (4, 96, 128)).astype(np.uint16),
                     disc_planes((4,), drift_axis=0, seed=23)], axis=1)  # (Z, C, Y, X): the disc in channel 1
    source = ImageSource(data, name="cells", contrast_limits=(0, 3500), scale=(1.0, 1.0, 1.0, 1.0))
    s.set_image(source)
    s.set_position((1, 0))
    s.load_model(str(tiny_checkpoint), device="cpu")
    assert s.planes.through_axis() == 1  # no channel axis guessed (4 and 2 planes): channels are planes
    assert s.axes.channel_axis is None

    s.set_axes(channel_axis=1, channel=1)
    key, emb = s.embedding
    assert key.plane == (1,) and s.planes.through_axis() == 0 and s.planes.through_image_axis() == 0
    assert s.planes.through_choices() == [0]  # z is the only axis to walk
    expected = s.model.predictor.compute_embedding(data[1, 1], (0.0, 3500.0))
    assert torch.equal(emb.features, expected.features)
    assert "SAM sees channel 1 of axis 1 (2)" in s.status_text
    assert {item[0] for item in s.volume.cache.keys()} == {0, 1, 2, 3}  # prefetched along z

    prompts.add(48, 53)
    assert len(s.object.candidates) == 3
    s.set_position((1, 1))  # looking at the other channel keeps the object
    assert len(s.object.candidates) == 3
    s.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    assert s.propagate()
    assert set(s.propagated) == {(z, None) for z in range(4)}  # every channel of each plane
    assert s.commit()
    labels = s.labels.target.data
    assert labels.shape == (4, 2, 96, 128)  # the image's shape: overlays in napari
    assert np.array_equal(labels[:, 0], labels[:, 1]) and set(np.unique(labels)) == {0, 1}
    assert all(labels[z, 0].any() for z in range(4))
    out = s.export(tmp_path / "cells_labels.tif")
    back, meta = read_labels_tiff(out)
    assert back.shape == (4, 96, 128) and np.array_equal(back, labels[:, 0])
    assert len(meta["scale"]) == 3 and "without the channel axis" in s.status_text
    assert s.undo() and not labels.any()
    new = []
    s.events.new_labels.connect(lambda name, image: new.append((name, image)))
    assert s.segment_everything(**OPEN)
    ((name, everything),) = new
    assert name == "SAM everything"
    assert everything.shape == data.shape and everything[1, 0].any()  # plane z=1, every channel
    assert np.array_equal(everything[1, 0], everything[1, 1]) and not everything[[0, 2, 3]].any()

    s.set_axes(channel="rgb")  # channels 0 and 1 as red and green
    vol = s.volume
    composite = ChannelComposite(data, 1, (0, 1))
    assert vol.rgb and vol.contrast_limits is None and "channels 0-1 as RGB" in s.status_text
    expected = s.model.predictor.compute_embedding(composite[1])
    assert torch.equal(s.embedding[1].features, expected.features)
    s.set_axes(channel_axis=None)  # back to channels as planes
    assert s.embedding[0].plane == (1, 1) and s.planes.through_axis() == 1
    assert source.data is data
    with pytest.raises(ValueError, match="channel_axis 7"):
        s.set_axes(channel_axis=7)


def test_channel_axis_named_c_is_taken_as_channels(session):
    data = np.zeros((3, 2, 32, 32), np.uint16)
    session.set_image(ImageSource(data, axis_names=("z", "c", "y", "x"), name="named"))
    assert session.axes.channel_axis == 1
    assert session.planes.axis_label(1) == "C (2)"
    session.set_position((2, 1))
    assert session.plane == (2,)  # planes are indexed by z alone


def test_store_of_one_channel_is_reused_for_that_channel(session, tiny_checkpoint, tmp_path, count_embeddings):
    from napari_sam.engine import EmbeddingStore

    data = np.stack([disc_planes((3,), 0, 24), disc_planes((3,), 0, 25) // 3], axis=1)  # (Z, C, Y, X)
    np.save(tmp_path / "cells.npy", data)
    store = tmp_path / "cells.zarr"
    assert embed_main([str(tmp_path / "cells.npy"), "--model", str(tiny_checkpoint), "--out", str(store),
                       "--device", "cpu", "--channel-axis", "1", "--channel", "1"]) == 0
    assert EmbeddingStore(store).info.index_shape == (3, 1, 1)
    count_embeddings.clear()
    session.set_image(ImageSource(data, name="cells"))
    session.set_position((1, 0))
    session.open_store(store)
    session.set_channel(1, 1)
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert session.embedding is not None, session.status_text
    assert "SAM sees channel 1 of axis 1 (2); embeddings from 'cells.zarr'" in session.status_text
    assert len(session.volume.cache.keys()) == 3 and count_embeddings == []
