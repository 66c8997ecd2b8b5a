"""Peak memory of tracking one object through a long uint16 stack with SAM 2:

    python benchmarks/bench_track_memory.py                      # 200 frames, 1024 x 1024, sam2.1_hiera_t
    python benchmarks/bench_track_memory.py --frames 40 --size 512

The stack is a zarr array on disk (one chunk per frame; moving discs on noise, 16-bit), so the
process holds only what the tracker keeps: the model, the bounded embedding cache, each
object's bounded history, and one frame's work. Peak RSS is sampled every 2 ms over the whole
run (model build included) and reported above the interpreter's baseline and in total. For
comparison, the frames Meta's video predictor loads at ``init_state`` (fp32, ``3 x S x S``
each) are computed from the same sizes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.measure import PeakMemory, machine  # noqa: E402


def make_stack(path: Path, frames: int, size: int):
    import zarr
    from tests.synthetic import moving_discs

    z = zarr.open_array(str(path), mode="w", shape=(frames, size, size), chunks=(1, size, size), dtype="uint16")
    for t in range(frames):
        z[t] = moving_discs(1, (size, size), seed=t)[0, ..., 0].astype(np.uint16) * 200 + (t % 7) * 10
    return zarr.open_array(str(path), mode="r")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench_track_memory.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--every", type=int, default=25, help="print a progress line every N frames")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from napari_sam.engine import Predictor, Tracker
    from napari_sam.model import build_sam, random_state_dict

    with tempfile.TemporaryDirectory() as tmp, PeakMemory(torch.device("cpu")) as mem:
        stack = make_stack(Path(tmp) / "stack.zarr", args.frames, args.size)
        base = PeakMemory._rss() / 2**20
        model = build_sam(args.model)
        model.load_state_dict(random_state_dict(model, seed=0))
        tracker = Tracker(Predictor(model, "cpu"), stack, contrast_limits=(0.0, 51000.0))
        tracker.add_prompt(0, 1, points=np.array([[0.27 * args.size, 0.25 * args.size]]))
        start, areas = time.perf_counter(), []
        for r in tracker.propagate():
            areas.append(float(r.masks[1].mean()))
            if r.frame % max(1, args.every) == 0:
                print(f"frame {r.frame}: {time.perf_counter() - start:.0f} s, RSS {PeakMemory._rss() / 2**20:.0f} MiB, "
                      f"peak so far {mem._peak / 2**20:.0f} MiB", flush=True)
        seconds = time.perf_counter() - start
    s = model.img_size
    res = {"model": args.model, "frames": args.frames, "size": args.size, "machine": machine(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "peak_rss_above_start_mib": mem.peak_mib, "rss_at_start_mib": mem._base / 2**20,
           "peak_rss_total_mib": mem.peak_mib + mem._base / 2**20, "rss_before_model_mib": base,
           "seconds": seconds, "seconds_per_frame": seconds / max(1, args.frames - 1),
           "tracked_outputs_kept": len(tracker._objects[1].tracked), "cache_mib": tracker.volume.cache.nbytes / 2**20,
           "meta_frames_mib": args.frames * 3 * s * s * 4 / 2**20, "mask_area_first_last": [areas[0], areas[-1]]}
    print(f"{args.model}, {args.frames} frames of {args.size}² uint16 (zarr), one object: peak RSS "
          f"{res['peak_rss_total_mib']:.0f} MiB ({res['peak_rss_above_start_mib']:.0f} above the interpreter's "
          f"{res['rss_at_start_mib']:.0f}), {res['seconds_per_frame']:.2f} s per frame; kept: "
          f"{res['tracked_outputs_kept']} tracked outputs, {res['cache_mib']:.0f} MiB of embeddings. "
          f"Meta's predictor would hold {res['meta_frames_mib']:.0f} MiB of frames alone.")
    path = Path(args.json or f"bench-track-memory-{args.model}-{args.frames}x{args.size}.json")
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
