"""SAM 2 tracking on the session (no Qt): a 3D uint16 stack and a 2D+t series, several objects
both ways, keyframes on several planes, corrections that re-track one object, commit with one
id per object, undo/redo, export, Cancel, the end of a track, shared embeddings, bad input
(random-weight small SAM 2 test model, tiny frames)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator import ImageSource
from napari_sam.io import read_labels_tiff
from tests.synthetic import cell_centres, two_cells

from .helpers import chosen_mask

PLANES = 6


@pytest.fixture(scope="module")
def cells():
    return two_cells((PLANES,))


def tracking_session(session, data, checkpoint, plane=2, **source):
    session.settings.prefetch_radius = 0
    session.set_image(ImageSource(data, name="cells", **source), position=(plane,) * (data.ndim - 2))
    session.load_model(str(checkpoint), device="cpu")
    assert session.embedding is not None, session.status_text
    assert session.model.kind == "sam2"
    return session


@pytest.fixture()
def ready_cells(session, cells, sam2_checkpoint):
    return tracking_session(session, cells, sam2_checkpoint)


def click(prompts, plane, which=0):
    r, c = cell_centres(plane)[which]
    prompts.add(r, c)


def commit_cell(session, prompts, which):
    click(prompts, session.plane[0], which)
    assert session.commit(), session.status_text


def test_two_objects_tracked_both_ways_commit_undo_redo_export(ready_cells, prompts, tmp_path):
    s = ready_cells
    commit_cell(s, prompts, 1)  # object 1: the right cell, committed on plane 2
    labels = s.labels.target.data
    before = labels.copy()
    assert s.committed_on_plane() == [1]
    click(prompts, 2, 0)  # the current object: the left cell
    chosen = chosen_mask(s)
    shown = []
    s.events.object_planes.connect(lambda ats: shown.append(ats))
    assert s.track(direction="both", objects=[1]), s.status_text
    assert "Tracked 2 objects" in s.status_text
    assert s.tracked_planes() == list(range(PLANES))
    assert {at for ats in shown for at in ats} >= {(z,) for z in range(PLANES)}  # each plane shown as it came
    track = s.current_track
    assert set(track.objects) == {0, 1}
    assert all(set(obj.masks) == set(range(PLANES)) for obj in track.objects.values())
    assert np.array_equal(track.objects[0].masks[2], chosen)  # the chosen candidate is the prompt
    assert np.array_equal(track.objects[1].masks[2], before[2] == 1)  # so is the committed mask
    expected = before.copy()  # object 1 keeps its id, the new object gets 2; overlaps: the higher score
    for z in range(PLANES):
        a, b = (track.objects[k].masks[z] for k in (0, 1))
        sa, sb = (track.objects[k].scores[z] for k in (0, 1))
        owner = np.where(a & (~b | (sa > sb)), 2, np.where(b, 1, 0))
        assert np.array_equal(s.shown_mask((z,)), np.array([0, 2, 1])[owner])  # the view's object numbers
        expected[z][(before[z] == 0) & (owner > 0)] = owner[(before[z] == 0) & (owner > 0)]
    n = len(s.history.done)
    assert s.commit(), s.status_text
    assert "Committed objects" in s.status_text and "on 6 planes" in s.status_text
    assert len(s.history.done) == n + 1 and s.current_track is None and s.tracked_planes() == []
    assert np.array_equal(labels, expected)  # one id per object through the planes, labels there kept
    after = labels.copy()
    assert s.undo() and np.array_equal(labels, before)
    assert s.redo() and np.array_equal(labels, after)
    out = s.export(tmp_path / "tracked.tif")
    back, _ = read_labels_tiff(out)
    assert np.array_equal(back, labels)


def test_time_series_forward_only_and_planes_before_untouched(session, prompts, sam2_checkpoint):
    movie = two_cells((5,))
    s = tracking_session(session, movie, sam2_checkpoint, plane=1, axis_names=("t", "y", "x"))
    click(prompts, 1, 0)
    assert s.planes.plane_label((1,)) == "t=1"
    assert s.track(direction="forward"), s.status_text
    assert s.tracked_planes() == [1, 2, 3, 4]
    assert s.commit()
    labels = s.labels.target.data
    assert not labels[0].any() and all(labels[t].max() == 1 for t in range(1, 5))


def test_correction_retracks_only_that_object_beyond_it_and_undoes_as_one_step(ready_cells, prompts):
    s = ready_cells
    commit_cell(s, prompts, 1)
    click(prompts, 2, 0)
    assert s.track(direction="both", objects=[1])
    old = {k: dict(o.masks) for k, o in s.current_track.objects.items()}
    s.set_position((4,))
    assert not prompts.points  # the view's prompt layers are emptied for the new plane
    shown = []
    s.events.object_planes.connect(lambda ats: shown.append(ats))
    owned = np.argwhere(s.current_track.owners(4) == 2)  # pixels of object 1 (after the new object) on plane 4
    assert len(owned)
    r, c = owned[len(owned) // 2]
    prompts.add(float(r), float(c))
    assert "Re-tracked object 1" in s.status_text, s.status_text
    track = s.current_track
    assert {at for ats in shown for at in ats} == {(4,), (5,)}  # only planes from the correction on
    assert all(np.array_equal(track.objects[0].masks[z], old[0][z]) for z in range(PLANES))  # the other object
    assert all(np.array_equal(track.objects[1].masks[z], old[1][z]) for z in range(4))  # planes before
    assert 4 in track.objects[1].keyframes and len(track.done) == 1
    corrected = {z: track.objects[1].masks.get(z) for z in (4, 5)}
    assert not np.array_equal(corrected[4], old[1][4])  # the click changed the mask there
    n = len(s.history.done)
    assert s.undo() and "Undid the correction of object 1" in s.status_text
    assert len(s.history.done) == n  # the commit history is not touched
    assert all(np.array_equal(track.objects[1].masks[z], old[1][z]) for z in range(PLANES))
    assert s.redo() and all(np.array_equal(track.objects[1].masks[z], corrected[z]) for z in (4, 5))
    s.set_position((2,))  # back on the first plane: its prompts come back (and are not decoded again)
    assert prompts.points == [list(cell_centres(2)[0])] and not s.object.candidates
    assert s.current_track is track and s.tracked_planes() == list(range(PLANES))


def test_keyframes_on_several_planes_are_all_prompts(ready_cells, prompts):
    s = ready_cells
    click(prompts, 2, 0)
    first = chosen_mask(s)
    s.set_position((4,))  # the mask on plane 2 stays as a keyframe of a draft track
    assert s.current_track is not None and not s.current_track.propagated and s.tracked_planes() == [2]
    click(prompts, 4, 0)
    second = chosen_mask(s)
    assert s.track(direction="forward"), s.status_text
    obj = s.current_track.objects[0]
    assert obj.keyframes == {2, 4} and s.tracked_planes() == [2, 3, 4, 5]
    assert np.array_equal(obj.masks[2], first) and np.array_equal(obj.masks[4], second)


def test_cancel_mid_track_leaves_committed_labels_untouched(ready_cells, prompts):
    s = ready_cells
    commit_cell(s, prompts, 1)
    labels = s.labels.target.data
    before = labels.copy()
    click(prompts, 2, 0)
    seen = []

    def cancel_after_plane_3(ats):
        seen.extend(ats)
        if (3,) in ats:
            s.cancel()

    s.events.object_planes.connect(cancel_after_plane_3)
    s.track(direction="forward", objects=[1])
    assert "cancelled" in s.status_text
    assert np.array_equal(labels, before)
    assert s.tracked_planes() == [2, 3]  # what was tracked before Cancel is kept


def test_a_track_ends_where_the_object_left(ready_cells, prompts):
    s = ready_cells
    s.settings.tracking.min_object_score = 1e9  # every tracked plane says "absent"
    s.settings.tracking.absent_planes = 2
    click(prompts, 2, 0)
    assert s.track(direction="forward")
    assert s.tracked_planes() == [2]
    assert "the new object left at plane 3" in s.status_text, s.status_text
    assert s.volume.cached((5, 0, 0)) is None  # the stack's end was never reached


def test_planes_are_embedded_once_and_shared_with_the_session(ready_cells, prompts, count_embeddings):
    s = ready_cells
    click(prompts, 2, 0)
    assert s.track(direction="both")
    assert len(count_embeddings) == PLANES - 1  # plane 2 was embedded before
    s.set_position((4,))
    assert s.embedding is not None and len(count_embeddings) == PLANES - 1  # from the session's cache


def test_bad_arguments_and_sam1(ready_cells, prompts, stack, tiny_checkpoint):
    s = ready_cells
    with pytest.raises(ValueError, match="direction must be one of 'forward', 'backward', 'both'"):
        s.track(direction="sideways")
    with pytest.raises(ValueError, match="objects must be label ids"):
        s.track(objects=["a"])
    with pytest.raises(ValueError, match="no committed labels yet"):
        s.track(objects=[3])
    commit_cell(s, prompts, 1)
    with pytest.raises(ValueError, match=r"objects \[7\] are not on plane 2 .*labels there: \[1\]"):
        s.track(objects=[7])
    assert not s.track() and "Track needs an object" in s.status_text
    s.load_model(str(tiny_checkpoint), device="cpu")
    click(prompts, 2, 0)
    assert not s.track() and "SAM 1" in s.status_text  # Propagate stays for SAM 1
    assert s.propagate()
