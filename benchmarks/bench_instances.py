"""Time automatic instance segmentation after the embedding, ours against micro-sam's, and the
vit_t (MobileSAM) embedding against vit_b.

Same random weights, same embedding, same device, same process; each step runs ``--repeats``
times per implementation, alternating, and the best time is reported. No official weights:

    python benchmarks/bench_instances.py                     # CPU, a 1024 x 1024 image
    python benchmarks/bench_instances.py --size 1024 768 --repeats 3 --json out.json

Instance segmentation after the embedding is, for micro-sam, ``DecoderAdapter(embedding,
input_size, original_size)`` followed by ``InstanceSegmentationWithDecoder.generate()`` (its
post-processing with the default parameters); for us ``decode_maps`` (``InstanceDecoder.maps``)
and ``labels_from_maps`` with the engine's allocator setting (which then holds for micro-sam's
runs too), as ``segment_instances`` runs them. Both decode the same 256 x 64 x 64 embedding (random features) with the
same random decoder weights; the post-processing runs on the decoder's own maps. The table also
reports the decoder and the post-processing on their own, and the largest difference between
the two implementations' maps and labels (labels are identical when the maps agree).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the oracles live in the source checkout's tests/

from tests.oracles import micro_sam, mobile_sam  # noqa: E402

from napari_sam.engine import Predictor, instance_defaults  # noqa: E402
from napari_sam.engine.allocator import keep_freed_memory, release_freed_memory  # noqa: E402
from napari_sam.engine.instance_maps import labels_from_maps  # noqa: E402
from napari_sam.engine.instances import decode_maps  # noqa: E402
from napari_sam.engine.predictor import Embedding  # noqa: E402
from napari_sam.model import build_decoder, build_sam, random_state_dict  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ais(args) -> dict:
    state = random_state_dict(build_decoder(upsampler=args.upsampler), seed=0)
    ours = build_decoder(state)
    frame_model = "vit_tiny_test" if args.grid == 64 else "vit_tiny_test_256"  # the oracle reads its frame there
    theirs = micro_sam.reference_decoder(build_sam(frame_model).image_encoder, state)
    segmenter = micro_sam.reference_segmenter(theirs)
    features = torch.randn(1, 256, args.grid, args.grid, generator=torch.Generator().manual_seed(1))
    h, w = args.size
    scale = 16 * args.grid / max(h, w)
    input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
    params = instance_defaults(None)

    embedding = Embedding(features, (h, w), input_size, "vit_b")

    def ours_step():  # what segment_instances runs after its checks
        keep_freed_memory()
        try:
            maps = decode_maps(ours, embedding)
            return maps, labels_from_maps(*maps, **params)
        finally:
            release_freed_memory()

    def theirs_step():
        with torch.no_grad():
            maps = theirs(features, input_size, (h, w)).numpy()[0]
        segmenter.set_state({"foreground": maps[0], "center_distances": maps[1], "boundary_distances": maps[2]})
        return maps, segmenter.generate(**params)

    res = {"ours": {}, "micro_sam": {}}
    steps = {"ours": ours_step, "micro_sam": theirs_step}
    for _ in range(args.repeats):  # alternate, so that a busy machine slows both alike
        for who, step in steps.items():
            t, out = best_of(step, 1)
            res[who]["step_s"] = min(res[who].get("step_s", float("inf")), t)
            res[who]["out"] = out
    (m_ours, l_ours), (m_theirs, l_theirs) = res["ours"].pop("out"), res["micro_sam"].pop("out")
    res["ours"]["post_s"], _ = best_of(lambda: labels_from_maps(*m_ours, **params), args.repeats)
    res["micro_sam"]["post_s"], _ = best_of(lambda: micro_sam.reference_labels(*m_theirs, **params), args.repeats)
    for who in steps:
        res[who]["decoder_s"] = res[who]["step_s"] - res[who]["post_s"]
    res["agreement"] = {"maps_max_abs": float(np.abs(m_ours - m_theirs).max()),
                        "labels_differing": float((l_ours != l_theirs).mean()), "objects": int(l_ours.max())}
    return res


def embeddings(args) -> dict:
    image = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
    predictors = {}
    for name in ("vit_t", "vit_b"):
        model = build_sam(name)
        model.load_state_dict(random_state_dict(model, seed=2))
        predictors[name] = Predictor(model, "cpu")
    ms = mobile_sam.load()
    reference = ms.SamPredictor(mobile_sam.reference_sam(predictors["vit_t"].model.state_dict()))
    runs = {"vit_t": lambda: predictors["vit_t"].compute_embedding(image),
            "vit_b": lambda: predictors["vit_b"].compute_embedding(image),
            "vit_t_mobile_sam": lambda: reference.set_image(image)}
    times = {k: float("inf") for k in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            with torch.no_grad():
                times[name] = min(times[name], best_of(run, 1)[0])
    return {f"{k}_s": v for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"), help="image size")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--grid", type=int, default=64, choices=(64, 16),
                   help="embedding grid: 64 (every released model; a 1024 px frame) or 16 (quick checks)")
    p.add_argument("--upsampler", default="interpolate", choices=("interpolate", "transpose"))
    p.add_argument("--skip-embeddings", action="store_true", help="only the instance segmentation step")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    res = {"command": "python benchmarks/bench_instances.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "size": list(args.size), "upsampler": args.upsampler, "ais": ais(args)}
    a = res["ais"]
    rows = [("AIS after the embedding (s)", "step_s"), ("  decoder (s)", "decoder_s"), ("  post-processing (s)", "post_s")]
    print(f"image {args.size[0]} x {args.size[1]}, {args.upsampler} decoder, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| step | ours | micro-sam | ours / micro-sam |\n|---|---|---|---|")
    for label, key in rows:
        ours, theirs = a["ours"][key], a["micro_sam"][key]
        print(f"| {label} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")
    print(f"maps max-abs difference {a['agreement']['maps_max_abs']:.1e}, label pixels differing "
          f"{100 * a['agreement']['labels_differing']:.3f} % ({a['agreement']['objects']} objects; random-weight "
          "maps are noise, so tiny map differences move some watershed borders)")
    if not args.skip_embeddings:
        e = res["embeddings"] = embeddings(args)
        print("| embedding | seconds | / vit_b |\n|---|---|---|")
        for name in ("vit_b", "vit_t", "vit_t_mobile_sam"):
            print(f"| {name} | {e[name + '_s']:.2f} | {e[name + '_s'] / e['vit_b_s']:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
