"""Speed benchmark: embedding, decode + post-processing, peak memory; optionally side by side
with the reference ``segment-anything`` on the same random weights, in the same process.

    python benchmarks/bench.py --model vit_b --device cpu --compare-reference
    python benchmarks/bench.py --model vit_h --device cuda --dtype bf16 --batch 8
    python benchmarks/bench.py --model sam2.1_hiera_t --compare-reference   # SAM 2: bench_sam2.py

Measured: embedding of one 1024 x 1024 RGB image (``compute_embedding``; the reference's
``SamPredictor.set_image``), embedding of a batch, and ``predict`` for one foreground point
(three masks) on 1024 x 1024 and 4096 x 4096 images (decoder + post-processing to full-size
boolean masks; the 4096 case reuses the 1024 features with a 4096 geometry). Ours and the
reference alternate in every repetition; figures are medians. Agreement: embedding relative
error ``|ours - ref| / |ref|`` (Frobenius) and mask IoU against the reference (fp32), or
against our own fp32 path when ``--dtype`` is not fp32 and no reference runs. Random weights:
timings hold for official checkpoints (same shapes); masks of random weights are noisy, which
makes post-processing slower than with real weights (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # --compare-reference: the oracle lives in the checkout's tests/

from benchmarks.measure import CPU_TIMES, PeakMemory, iou, machine, test_image, timed  # noqa: E402, F401


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_b", help="vit_b, vit_l, vit_h, sam2.1_hiera_t/s/b+/l (or a *_test config)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                    help="encoder precision (auto: bf16 on CUDA, fp32 elsewhere)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    ap.add_argument("--batch", type=int, default=None, help="batch size for the batched embedding "
                    "(default 8 on CUDA, 2 elsewhere; 0 skips it)")
    ap.add_argument("--repeats", type=int, default=3, help="timed embedding runs (after one warm-up)")
    ap.add_argument("--decode-repeats", type=int, default=15, help="timed predict() calls per size")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--compare-reference", action="store_true", help="also run segment-anything 1.0")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--json", default=None, help="result file (default bench-MODEL-DEVICE-DTYPE.json)")
    ap.add_argument("--track-frames", type=int, default=10, help="SAM 2: frames to propagate through (0 skips)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from napari_sam.engine import Predictor
    from napari_sam.engine.predictor import Embedding, resolve_device
    from napari_sam.model import build_sam, random_state_dict

    CPU_TIMES.clear()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = args.batch if args.batch is not None else (8 if device.type == "cuda" else 2)
    model = build_sam(args.model)
    state = random_state_dict(model, seed=args.seed)
    model.load_state_dict(state)
    ours = Predictor(model, device, precision=args.dtype, compile=args.compile)
    res: dict = {"model": args.model, "device": str(device), "dtype": ours.precision, "compile": args.compile,
                 "batch": batch, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": machine(),
                 "ours": {}, "reference": {}, "agreement": {}}
    ref = ref_pred = exact = None
    if args.compare_reference:
        from tests.oracles.sam1 import load_reference, reference_sam

        ref = reference_sam(args.model, state).to(device)
        ref_pred = load_reference().SamPredictor(ref)
    elif ours.precision != "fp32":  # agreement against our own exact path
        m32 = build_sam(args.model)
        m32.load_state_dict(state)
        exact = Predictor(m32, device, precision="fp32")
    image = test_image(1024)

    # --- embedding, batch 1 (one warm-up each, then alternate) -------------------------
    emb = ours.compute_embedding(image)
    if ref_pred is not None:
        ref_pred.set_image(image)
    with PeakMemory(device) as mem:
        times, emb = timed(lambda: ours.compute_embedding(image), device, "ours")
    res["ours"]["embed_peak_mib"], times = mem.peak_mib, [times]
    ref_times = []
    for i in range(args.repeats):
        if ref_pred is not None:
            if i == 0:
                with PeakMemory(device) as mem:
                    ref_times.append(timed(lambda: ref_pred.set_image(image), device, "ref")[0])
                res["reference"]["embed_peak_mib"] = mem.peak_mib
            else:
                ref_times.append(timed(lambda: ref_pred.set_image(image), device, "ref")[0])
        if i > 0:
            times.append(timed(lambda: ours.compute_embedding(image), device, "ours")[0])
    res["ours"]["embed_s"], res["ours"]["embed_runs"] = statistics.median(times), times
    if ref_times:
        res["reference"]["embed_s"], res["reference"]["embed_runs"] = statistics.median(ref_times), ref_times
    if device.type == "cpu":
        for who, key in (("ours", "ours"), ("reference", "ref")):
            if CPU_TIMES.get(key):
                res[who]["embed_cpu_s"] = statistics.median(CPU_TIMES[key])
    oracle = ref_pred.features if ref_pred is not None else None
    if exact is not None:
        oracle = exact.compute_embedding(image).features
    if oracle is not None:
        diff = (emb.features.float() - oracle.float()).norm() / oracle.float().norm()
        res["agreement"]["embedding_rel_err"] = float(diff)

    # --- batched embedding ----------------------------------------------------------------
    if batch > 0:
        stack = [image] * batch
        ours.compute_embeddings(stack[:1], batch_size=1)
        t_ours, _ = timed(lambda: ours.compute_embeddings(stack, batch_size=batch), device)
        res["ours"]["batch_img_s"] = t_ours / batch
        if ref is not None:
            x = torch.from_numpy(np.stack(stack)).permute(0, 3, 1, 2).float().to(device)
            with torch.no_grad():
                t_ref, _ = timed(lambda: ref.image_encoder(ref.preprocess(x)), device)
            res["reference"]["batch_img_s"] = t_ref / batch

    # --- decode + post-processing -----------------------------------------------------------
    for size in (1024, 4096):
        point = np.array([[0.3 * size, 0.4 * size]])  # (row, col): inside the first disc
        e = Embedding(emb.features, (size, size), (1024, 1024), emb.model_name)
        ours.set_embedding(e)
        if ref_pred is not None:
            ref_pred.features = oracle if ref is not None else emb.features
            ref_pred.original_size, ref_pred.input_size, ref_pred.is_image_set = (size, size), (1024, 1024), True
        t_o, t_r = [], []
        for _ in range(args.decode_repeats + 1):
            dt, pred = timed(lambda: ours.predict(point, np.array([1])), device)
            t_o.append(dt)
            if ref_pred is not None:
                dt, (rm, _, _) = timed(lambda: ref_pred.predict(point[:, ::-1].copy(), np.array([1])), device)
                t_r.append(dt)
        res["ours"][f"decode_{size}_ms"] = 1e3 * statistics.median(t_o[1:])
        if t_r:
            res["reference"][f"decode_{size}_ms"] = 1e3 * statistics.median(t_r[1:])
            res["agreement"][f"mask_iou_{size}"] = min(iou(a, b) for a, b in zip(pred.masks, rm))
        elif exact is not None:
            exact.set_embedding(Embedding(oracle, (size, size), (1024, 1024), emb.model_name))
            base = exact.predict(point, np.array([1])).masks
            res["agreement"][f"mask_iou_{size}"] = min(iou(a, b) for a, b in zip(pred.masks, base))
    if ref is not None:
        postprocess_smooth(res, device, args.decode_repeats)
    res["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return res


def smooth_logits(device: torch.device) -> torch.Tensor:
    """Low-res logits ``(1, 3, 256, 256)`` of three nested discs, smooth like a trained model's
    (random weights give ragged logits, the worst case for post-processing)."""
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    dist = ((yy - 77) ** 2 + (xx - 102) ** 2).sqrt()
    return torch.stack([20 - dist * r for r in (0.3, 0.5, 1.0)])[None].to(device)


def postprocess_smooth(res: dict, device: torch.device, repeats: int) -> None:
    """Post-processing alone on smooth masks: ours (lean) vs the straightforward path the
    reference takes (upsample to 1024², crop, upsample to the image, threshold)."""
    from napari_sam.engine.postprocess import masks_from_logits, upscale_logits
    from napari_sam.engine.preprocess import Geometry

    logits = smooth_logits(device)
    for size in (1024, 4096):
        geometry = Geometry.for_image(size, size, 1024)
        lean = lambda: masks_from_logits(logits, geometry, 1024)  # noqa: E731
        plain = lambda: upscale_logits(logits, geometry, 1024) > 0  # noqa: E731
        assert torch.equal(lean(), plain())
        t_o, t_r = [], []
        for _ in range(repeats + 1):
            t_o.append(timed(lean, device)[0])
            t_r.append(timed(plain, device)[0])
        res["ours"][f"post_smooth_{size}_ms"] = 1e3 * statistics.median(t_o[1:])
        res["reference"][f"post_smooth_{size}_ms"] = 1e3 * statistics.median(t_r[1:])


ROWS = [("embed_s", "embedding bs1 (s)"), ("embed_cpu_s", "embedding bs1, process CPU time (s)"),
        ("batch_img_s", "embedding batched, per image (s)"),
        ("decode_1024_ms", "predict 1 point -> 3 masks, 1024² (ms)"),
        ("decode_4096_ms", "predict 1 point -> 3 masks, 4096² (ms)"),
        ("post_smooth_1024_ms", "post-processing only, 3 smooth masks, 1024² (ms; ref = straightforward path)"),
        ("post_smooth_4096_ms", "post-processing only, 3 smooth masks, 4096² (ms; ref = straightforward path)"),
        ("embed_peak_mib", "embedding peak memory (MiB)"),
        ("track_frame_s", "SAM 2 propagation per frame, 1 object (s)"),
        ("track_frame_cpu_s", "SAM 2 propagation per frame, process CPU time (s)"),
        ("track_peak_mib", "SAM 2 propagation peak memory (MiB)")]


def table(res: dict) -> str:
    """The results as a Markdown table (ours, reference, ratio) plus agreement lines."""
    m = res["machine"]
    lines = [f"{res['model']} on {res['device']} ({m.get('gpu') or m['cpu']}, {m['threads']} threads), "
             f"dtype {res['dtype']}{' + compile' if res['compile'] else ''}, batch {res['batch']}, "
             f"load {m['loadavg'][0]:.1f} -> {m['loadavg_end'][0]:.1f}" if m.get("loadavg") else "",
             "", "| measure | ours | reference | ours / ref |", "|---|---|---|---|"]
    for key, label in ROWS:
        a, b = res["ours"].get(key), res["reference"].get(key)
        if a is None:
            continue
        ratio = f"{a / b:.2f}" if b else "–"
        lines.append(f"| {label} | {a:.3g} | {'–' if b is None else f'{b:.3g}'} | {ratio} |")
    for key, value in res["agreement"].items():
        lines.append(f"\n{key}: {value:.3g}" if key == next(iter(res["agreement"])) else f"{key}: {value:.3g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model.startswith("sam2"):
        from benchmarks.bench_sam2 import run_sam2

        res = run_sam2(args)
    else:
        res = run(args)
    print(table(res))
    path = Path(args.json or f"bench-{res['model']}-{res['device'].replace(':', '')}-{res['dtype']}.json")
    path.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
