"""SAM 2 speed benchmark (``python benchmarks/bench.py --model sam2.1_hiera_t --compare-reference``
runs this): image embedding, one click, and propagation per frame, against Meta's ``sam2``
(the test oracle) on the same random weights in the same process, with peak memory.

Embedding: one 1024 x 1024 RGB image (``compute_embedding``; Meta's ``SAM2ImagePredictor.set_image``),
alternating ours and Meta's, medians. Click: ``predict`` for one foreground point (three masks).
Propagation: ``--track-frames`` frames of 1024 x 1024 moving discs, one object clicked on frame 0,
then :meth:`Tracker.propagate` and Meta's ``propagate_in_video`` advanced alternately, frame by
frame (a busy machine slows both alike); the per-frame figure is the median over the frames with
a full memory bank (frame 7 on) when there are such frames, else over all tracked frames, and
the peak memory is a frame's above the state before it. Each frame is embedded once on both
sides (neither had it cached). Agreement:
embedding relative error, mask IoU of the click, largest difference of tracked low-res logits.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from benchmarks.measure import CPU_TIMES, PeakMemory, iou, machine, test_image, timed


def frames_1024(n: int) -> np.ndarray:
    from tests.synthetic import moving_discs

    return moving_discs(n, (1024, 1024))


def run_sam2(args) -> dict:
    import datetime
    import sys
    from pathlib import Path

    from napari_sam.engine import Predictor, Tracker
    from napari_sam.engine.predictor import resolve_device
    from napari_sam.model import build_sam, random_state_dict

    CPU_TIMES.clear()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = build_sam(args.model)
    state = random_state_dict(model, seed=args.seed)
    model.load_state_dict(state)
    ours = Predictor(model, device, precision=args.dtype)
    res: dict = {"model": args.model, "device": str(device), "dtype": ours.precision, "compile": False, "batch": 0,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": machine(),
                 "ours": {}, "reference": {}, "agreement": {}}
    meta = None
    if args.compare_reference:
        from tests.oracles import sam2 as oracle

        meta = oracle.image_predictor(oracle.reference_model(args.model, state).to(device))
    image = test_image(1024)

    # --- embedding ------------------------------------------------------------------------
    ours.set_image(image)
    if meta is not None:
        meta.set_image(image)
    runs: dict[str, list[float]] = {"ours": [], "ref": []}
    for i in range(args.repeats):
        for who in ("ours", "ref") if meta is not None else ("ours",):
            fn = (lambda: ours.set_image(image)) if who == "ours" else (lambda: meta.set_image(image))
            if i == 0:
                with PeakMemory(device) as mem:
                    runs[who].append(timed(fn, device, who)[0])
                res["ours" if who == "ours" else "reference"]["embed_peak_mib"] = mem.peak_mib
            else:
                runs[who].append(timed(fn, device, who)[0])
    for who, key in (("ours", "ours"), ("ref", "reference")):
        if runs[who]:
            res[key]["embed_s"], res[key]["embed_runs"] = statistics.median(runs[who]), runs[who]
            res[key]["embed_cpu_s"] = statistics.median(CPU_TIMES[who])
    if meta is not None:
        theirs = meta._features["image_embed"]
        mine = ours.embedding.features + model.no_mem_embed.view(1, -1, 1, 1)
        res["agreement"]["embedding_rel_err"] = float(((mine - theirs).norm() / theirs.norm()).detach())

    # --- one click --------------------------------------------------------------------------
    point = np.array([[0.3 * 1024, 0.4 * 1024]])
    t_o, t_r = [], []
    for _ in range(args.decode_repeats + 1):
        dt, pred = timed(lambda: ours.predict(point, np.array([1])), device)
        t_o.append(dt)
        if meta is not None:
            dt, (masks, _, _) = timed(lambda: meta.predict(point[:, ::-1].copy(), np.array([1])), device)
            t_r.append(dt)
    res["ours"]["decode_1024_ms"] = 1e3 * statistics.median(t_o[1:])
    if t_r:
        res["reference"]["decode_1024_ms"] = 1e3 * statistics.median(t_r[1:])
        res["agreement"]["mask_iou_1024"] = min(iou(a, b) for a, b in zip(pred.masks, masks))

    # --- propagation, frame by frame alternating with Meta's -------------------------------------
    if args.track_frames > 1:
        frames = frames_1024(args.track_frames)
        click = np.array([[80.0 / 300 * 1024, 100.0 / 400 * 1024]])  # inside the first disc
        tracker = Tracker(ours, frames)
        tracker.add_prompt(0, 1, points=click)
        sides = {"ours": tracker.propagate()}
        if meta is not None:
            from tests.oracles import sam2 as oracle

            video = oracle.reference_model(args.model, state, video=True).to(device)
            state_v = oracle.video_state(video, list(frames))
            video.add_new_points_or_box(state_v, 0, 1, points=click[:, ::-1].copy(), labels=np.array([1]))
            sides["reference"] = video.propagate_in_video(state_v)
        steps: dict[str, list] = {who: [] for who in sides}
        for _ in range(len(frames)):
            for who, gen in sides.items():
                with PeakMemory(device) as mem:
                    t, item = timed(lambda: next(gen), device, f"track_{who}")
                steps[who].append((t, CPU_TIMES[f"track_{who}"][-1], mem.peak_mib, item))
        for who, done in steps.items():
            _record(res[who], done)
        if meta is not None:
            out = state_v["output_dict_per_obj"][0]
            diffs = [float(np.abs((out["cond_frame_outputs"].get(t) or out["non_cond_frame_outputs"][t])["pred_masks"][0, 0]
                                  .numpy() - r.logits[1]).max()) for t, (*_, r) in enumerate(steps["ours"])]
            res["agreement"]["track_logits_max_abs"] = max(diffs)
    res["machine"]["loadavg_end"] = machine()["loadavg"]
    return res


def _record(out: dict, steps: list) -> None:
    """Per-frame medians over the frames with a full memory bank (frame 7 on) if any, else over
    the tracked ones (frame 0 is the prompted one); peak memory of a frame above the state before it."""
    steady = steps[7:] if len(steps) > 7 else steps[1:]
    out["track_frame_s"] = statistics.median(t for t, *_ in steady)
    out["track_frame_cpu_s"] = statistics.median(c for _, c, *_ in steady)
    out["track_peak_mib"] = max(p for *_, p, _ in steps)
    out["track_runs"] = [t for t, *_ in steps]
