"""Automatic instance segmentation: post-processing identical to micro-sam's on maps of known discs,
merging across planes as micro-sam's 3D mode, and ``segment_instances`` on 2D images, tiled planes
and stacks (decoder stand-ins that turn pixels into maps make the expected labels known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import Cancelled, Predictor, VolumeEmbeddings, instance_defaults, instance_maps, segment_instances
from napari_sam.engine.instance_maps import greedy_merge, labels_from_maps, merge_planes, smooth
from napari_sam.model import build_decoder, build_sam, random_state_dict
from tests.engine.stand_ins import PixelDecoder, PixelPredictor, disc_image, moving_discs, stack_labels
from tests.oracles import micro_sam
from tests.synthetic import disc_maps

RNG = np.random.default_rng(1)
DISCS = [(RNG.uniform(20, 492), RNG.uniform(20, 492), RNG.uniform(8, 30)) for _ in range(60)]


@pytest.fixture(scope="module")
def maps():
    return disc_maps((512, 512), DISCS, noise=0.08, seed=2)


@pytest.mark.parametrize("model", [None, "vit_b_lm", "vit_l_lm", "vit_t_lm", "vit_b_em_organelles"])
def test_labels_identical_to_micro_sam(maps, model):
    """Same labels, pixel for pixel and id for id, as InstanceSegmentationWithDecoder.generate
    with micro-sam's per-model settings (touching and overlapping discs, noisy maps)."""
    params = instance_defaults(model)
    ours = labels_from_maps(*maps, **params)
    theirs = micro_sam.reference_labels(*maps, **params)
    assert ours.dtype == np.uint32 and ours.shape == maps.shape[1:]
    assert 20 < ours.max() < 60
    np.testing.assert_array_equal(ours, theirs)


def test_parameters_change_the_result_as_micro_sams(maps):
    params = dict(instance_defaults(None), center_distance_threshold=0.3, foreground_smoothing=0.0,
                  distance_smoothing=0.0, min_size=50, foreground_threshold=0.6)
    np.testing.assert_array_equal(labels_from_maps(*maps, **params), micro_sam.reference_labels(*maps, **params))


@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.6, 2.0, 3.3])
def test_smoothing_is_micro_sams(maps, sigma):
    import bioimage_cpp

    expected = bioimage_cpp.filters.gaussian_smoothing(maps[1], sigma)
    assert float(np.abs(smooth(maps[1], sigma) - expected).max()) < 1e-6


def test_separate_discs_are_found():
    discs = [(40, 40, 20), (40, 130, 25), (130, 60, 22), (120, 140, 24)]
    labels = labels_from_maps(*disc_maps((180, 180), discs, noise=0.05), **instance_defaults(None))
    rr, cc = np.mgrid[:180, :180]
    assert labels.max() == len(discs)
    for r, c, rad in discs:
        disc = (rr - r) ** 2 + (cc - c) ** 2 < rad**2
        ids, counts = np.unique(labels[disc], return_counts=True)
        best = ids[np.argmax(counts)]
        iou = (disc & (labels == best)).sum() / (disc | (labels == best)).sum()
        assert best > 0 and iou > 0.9


def test_min_size_renumbers(maps):
    params = instance_defaults(None)
    small = labels_from_maps(*maps, **dict(params, min_size=1500))
    everything = labels_from_maps(*maps, **params)
    assert 0 < small.max() < everything.max()
    assert np.array_equal(np.unique(small), np.arange(small.max() + 1))
    assert np.bincount(small.ravel())[1:].min() >= 1500


def test_without_bioimage_cpp_the_labels_barely_differ(maps, monkeypatch):
    """Where bioimage-cpp has no wheel, scikit-image floods: ties may be broken differently."""
    params = instance_defaults("vit_b_lm")
    exact = labels_from_maps(*maps, **params)
    monkeypatch.setattr(instance_maps, "_bic_watershed", None)
    fallback = labels_from_maps(*maps, **params)
    assert fallback.max() == exact.max()
    assert (fallback != exact).mean() < 1e-3


def test_merge_planes_as_micro_sam():
    """Objects followed through a stack (moving, shrinking, one splitting): the same grouping as
    micro-sam's merge_instance_segmentation_3d."""
    stack = stack_labels(planes=8, split_at=4)
    ours = merge_planes(stack)
    theirs = micro_sam.load().multi_dimensional_segmentation.merge_instance_segmentation_3d(stack, verbose=False)
    pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()], axis=1), axis=0)
    assert len(pairs) == len(np.unique(ours)) == len(np.unique(theirs))  # one-to-one: the same partition
    assert 1 < ours.max() < stack.max() / 4
    assert np.array_equal(ours > 0, stack > 0)


def test_greedy_merge_is_additive():
    pairs = np.array([[1, 2], [2, 3], [1, 3], [4, 5]])
    # 1-2 and 2-3 attract, 1-3 repels more than both attract: 2 joins one side only
    root = greedy_merge(6, pairs, np.array([1.0, 0.8, -3.0, -0.5]))
    assert root[2] == root[1] and root[3] == 3 and root[4] != root[5]
    # after 1-2 join, the links 2-3 and 1-3 add up (0.8 - 0.5 > 0): all three join
    root = greedy_merge(6, pairs, np.array([1.0, 0.8, -0.5, 2.0]))
    assert root[1] == root[2] == root[3] == 1 and root[5] == 4


# --- segment_instances ---------------------------------------------------------------------


def test_tiled_plane_is_stitched_without_seams():
    """Discs crossing the tile borders come out whole, exactly as decoded on the untiled plane."""
    image, discs = disc_image((512, 512), [(256, 250, 24), (100, 256, 20), (380, 256, 14), (400, 120, 26),
                                           (240, 40, 18), (60, 60, 22)])
    decoder = PixelDecoder()
    tiled = VolumeEmbeddings(image, PixelPredictor(), tile=256, halo=64)
    assert tiled.grid == (2, 2)
    whole = segment_instances(VolumeEmbeddings(image, PixelPredictor(), tile=1024), decoder)
    labels = segment_instances(tiled, decoder)
    assert labels.shape == (512, 512) and labels.max() == len(discs)
    np.testing.assert_array_equal(labels, whole)


def test_stack_planes_are_merged_by_overlap():
    image, tracks = moving_discs(planes=5)
    vol = VolumeEmbeddings(image, PixelPredictor())
    decoder = PixelDecoder()
    labels = segment_instances(vol, decoder)
    assert labels.shape == image.shape and labels.dtype == np.uint32
    assert labels.max() == tracks  # every disc one object through the stack
    apart = segment_instances(vol, decoder, merge=False)
    assert apart.max() == tracks * image.shape[0]
    one = segment_instances(vol, decoder, plane=(2,))
    assert one.shape == image.shape[1:]
    pairs = np.unique(np.stack([one.ravel(), labels[2].ravel()], axis=1), axis=0)
    assert len(pairs) == tracks + 1
    with pytest.raises(IndexError, match="plane"):
        segment_instances(vol, decoder, plane=(5,))


def test_time_series_stacks_keep_unique_ids():
    image, tracks = moving_discs(planes=3)
    series = np.stack([image, image])  # (t, z, y, x)
    labels = segment_instances(VolumeEmbeddings(series, PixelPredictor()), PixelDecoder())
    assert labels.shape == series.shape
    assert labels.max() == 2 * tracks
    assert set(np.unique(labels[0])) & set(np.unique(labels[1])) == {0}


def test_chosen_planes_of_a_time_series_are_one_merged_stack():
    """``planes=``: the z stack at one time point of a (t, z, y, x) series, merged like a 3D image."""
    image, tracks = moving_discs(planes=3)
    series = np.stack([image[::-1], image])
    vol = VolumeEmbeddings(series, PixelPredictor())
    expected = segment_instances(VolumeEmbeddings(image, PixelPredictor()), PixelDecoder())
    labels = segment_instances(vol, PixelDecoder(), planes=[(1, z) for z in range(3)])
    assert labels.shape == image.shape and labels.max() == tracks
    np.testing.assert_array_equal(labels, expected)
    apart = segment_instances(vol, PixelDecoder(), planes=[(1, 0), (1, 1)], merge=False)
    assert apart.max() == 2 * tracks
    with pytest.raises(IndexError, match="plane"):
        segment_instances(vol, PixelDecoder(), planes=[(1, 3)])
    with pytest.raises(TypeError, match="not both"):
        segment_instances(vol, PixelDecoder(), plane=(1, 0), planes=[(1, 0)])
    with pytest.raises(ValueError, match="planes is empty"):
        segment_instances(vol, PixelDecoder(), planes=[])


def test_progress_and_cancel():
    image, _ = moving_discs(planes=3)
    vol = VolumeEmbeddings(image, PixelPredictor())
    seen = []
    segment_instances(vol, PixelDecoder(), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == 3 * 2 + 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    calls = []

    def cancel():
        calls.append(1)
        return len(seen) > 0 and len(calls) > 3

    seen.clear()
    decoder = PixelDecoder()
    with pytest.raises(Cancelled):
        segment_instances(vol, decoder, progress=lambda d, t: seen.append(d), cancel=cancel)
    assert decoder.calls < 3


def test_per_model_defaults_and_overrides(maps):
    decoder = PixelDecoder(fixed_maps=maps)
    emb = PixelPredictor().compute_embedding(np.zeros(maps.shape[1:], np.float32))
    decoder.model_name = "pixels"
    generic = segment_instances(emb, decoder)
    np.testing.assert_array_equal(generic, labels_from_maps(*maps, **instance_defaults(None)))
    with pytest.raises(ValueError, match="decoder belongs to model 'vit_b_lm'"):
        decoder.model_name = "vit_b_lm"
        segment_instances(emb, decoder)
    emb_lm = PixelPredictor(model_name="vit_b_lm").compute_embedding(np.zeros(maps.shape[1:], np.float32))
    lm = segment_instances(emb_lm, decoder)
    np.testing.assert_array_equal(lm, labels_from_maps(*maps, **instance_defaults("vit_b_lm")))
    own = segment_instances(emb_lm, decoder, min_size=0, center_distance_threshold=0.45)
    np.testing.assert_array_equal(own, labels_from_maps(*maps, **dict(instance_defaults("vit_b_lm"), min_size=0,
                                                                      center_distance_threshold=0.45)))


@pytest.mark.parametrize("name,value", [("center_distance_threshold", 1.5), ("foreground_threshold", -0.1),
                                        ("distance_smoothing", -1), ("min_size", -5)])
def test_bad_parameters_fail_before_decoding(name, value):
    decoder = PixelDecoder()
    emb = PixelPredictor().compute_embedding(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match=name):
        segment_instances(emb, decoder, **{name: value})
    assert decoder.calls == 0
    with pytest.raises(TypeError, match="Predictor, an Embedding or a VolumeEmbeddings"):
        segment_instances(np.zeros((4, 4)), decoder)


def test_real_decoder_on_a_predictor(rgb_image, tmp_path):
    """The real decoder and a real (small, random) SAM: labels at the image's size, the same from the
    predictor, its embedding and a decoder file given by path."""
    model = build_sam("vit_tiny_test_256")
    model.load_state_dict(random_state_dict(model, seed=1))
    predictor = Predictor(model, "cpu")
    predictor.set_image(rgb_image)
    state = random_state_dict(build_decoder(), seed=2)
    decoder = build_decoder(state)
    labels = segment_instances(predictor, decoder, min_size=0)
    assert labels.shape == rgb_image.shape[:2] and labels.dtype == np.uint32
    np.testing.assert_array_equal(segment_instances(predictor.embedding, decoder, min_size=0), labels)
    path = tmp_path / "mine_decoder.pt"
    torch.save(state, path)
    from napari_sam.engine import load_decoder

    loaded = load_decoder(path)
    assert loaded.model_name is None
    np.testing.assert_array_equal(segment_instances(predictor, loaded, min_size=0), labels)
    with pytest.raises(RuntimeError, match="no image set"):
        segment_instances(Predictor(model, "cpu"), decoder)
