"""Time our segment-everything generator against the reference ``SamAutomaticMaskGenerator``.

Same random weights, same image, same device, same process; each case is run ``--repeat``
times per generator and the best time is reported. Both generators embed the image once
(included in the times). No official weights needed:

    python benchmarks/bench_amg.py                         # CPU, vit_tiny_test, small cases
    python benchmarks/bench_amg.py --model vit_b --device cuda --points 32

``--weights plain`` uses the seeded random weights as they are (speckled masks, near-zero
logits); ``coherent`` (default) uses the edited weights of ``tests/synthetic.py``, which
give image-like masks so the filters behave as with trained weights.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the oracles and test data live in the source checkout's tests/

from tests.oracles import sam1 as reference  # noqa: E402
from tests.synthetic import coherent_state, discs_image  # noqa: E402

from napari_sam.engine import Predictor, generate_masks  # noqa: E402
from napari_sam.model import build_sam, random_state_dict  # noqa: E402

CASES = {
    "filters off": dict(pred_iou_thresh=-1.0, stability_score_thresh=0.0, box_nms_thresh=1.0),
    "defaults": {},
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class DecoderClock:
    """Accumulates the wall time spent inside a model's mask decoder (same network in both
    implementations), so the rest (grid, upscaling, filters, NMS, encoding) can be compared."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.total, self._start = 0.0, 0.0
        decoder.register_forward_pre_hook(self._pre)
        decoder.register_forward_hook(self._post)

    def _pre(self, *_):
        sync()
        self._start = time.perf_counter()

    def _post(self, *_):
        sync()
        self.total += time.perf_counter() - self._start


def best_of(fn, repeat: int, clock: DecoderClock) -> tuple[float, float, object]:
    """Best total time, the decoder time of that run, and the output."""
    best, dec, out = float("inf"), 0.0, None
    for _ in range(repeat):
        sync()
        clock.total = 0.0
        start = time.perf_counter()
        out = fn()
        sync()
        if time.perf_counter() - start < best:
            best, dec = time.perf_counter() - start, clock.total
    return best, dec, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, nargs="+", default=[8, 16], help="points per side (one row each)")
    p.add_argument("--size", type=int, nargs=2, default=[600, 800], metavar=("H", "W"))
    p.add_argument("--weights", choices=("coherent", "plain"), default="coherent")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sa = reference.load()
    model = build_sam(args.model)
    state = random_state_dict(model, seed=1)
    if args.weights == "coherent":
        state = coherent_state(state)
    model.load_state_dict(state)
    predictor = Predictor(model, args.device)
    ref_model = reference.reference_sam(args.model, state).to(predictor.device)
    from PIL import Image

    image = np.array(Image.fromarray(discs_image()).resize(args.size[::-1]))
    print(f"# {args.model}, {args.weights} weights, image {args.size[0]}x{args.size[1]}, device "
          f"{predictor.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    ours_clock, ref_clock = DecoderClock(model.mask_decoder), DecoderClock(ref_model.mask_decoder)
    print("| case | points | masks (ours / ref) | ours s | reference s | speed-up "
          "| decoder s (ours / ref) | rest s (ours / ref) | rest speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.points:
        for name, kwargs in CASES.items():
            kw = dict(points_per_side=n, **kwargs)

            def ours():
                predictor.set_image(image)
                return generate_masks(predictor, **kw)

            generator = sa.SamAutomaticMaskGenerator(ref_model, **kw)
            t_ours, d_ours, m_ours = best_of(ours, args.repeat, ours_clock)
            t_ref, d_ref, m_ref = best_of(lambda: generator.generate(image), args.repeat, ref_clock)
            r_ours, r_ref = t_ours - d_ours, t_ref - d_ref
            print(f"| {name} | {n}x{n} | {len(m_ours)} / {len(m_ref)} | {t_ours:.2f} | {t_ref:.2f} | "
                  f"{t_ref / t_ours:.1f}x | {d_ours:.2f} / {d_ref:.2f} | {r_ours:.2f} / {r_ref:.2f} | "
                  f"{r_ref / r_ours:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
