"""``napari-sam embed IMAGE --model vit_b --out EMB.zarr``: precompute embeddings to disk.

Works on 2D images, stacks and time series (one embedding per plane), on one channel (or
channels as RGB) of multichannel images, and on large planes (by tiles with a halo).
Resumable: run it again after an interruption and it computes only what is missing, and
repairs exactly the entries it finds damaged. Everything is checked before the model loads and
before anything is created; only a store is ever replaced, and only with ``--overwrite``. The
napari widget reuses the store without recomputing (with the store's contrast limits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..io.images import guess_rgb, open_image


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-sam embed", description=__doc__.splitlines()[0])
    p.add_argument("image", type=Path, help="image file (.tif, .npy, .zarr, .png ...)")
    p.add_argument("--out", type=Path, required=True, help="zarr store to write (EMB.zarr)")
    p.add_argument("--model", default="vit_b", help="vit_b, vit_l, vit_h, any registered model (vit_b_lm, vit_t, "
                   "...: docs/models.md) or a checkpoint file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--tile", type=int, default=None, help="tile size for large planes (default: auto)")
    p.add_argument("--halo", type=int, default=None, help="halo around each tile (default 128)")
    p.add_argument("--rgb", dest="rgb", action="store_true", default=None, help="last axis is RGB(A)")
    p.add_argument("--no-rgb", dest="rgb", action="store_false", help="last axis is spatial")
    p.add_argument("--contrast-limits", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="gray images: map LO..HI to 0..255 (default: the image's range); not with "
                        "--channel rgb, which scales each channel to its own range")
    p.add_argument("--channel-axis", type=int, default=None, metavar="K",
                   help="leading axis that holds channels (default: none, every leading axis is planes)")
    p.add_argument("--channel", default=None, metavar="C",
                   help="needs --channel-axis: the channel to embed (default 0), or 'rgb' for channels "
                        "0-2 as RGB, each scaled to its own range")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the embedding store at --out if there is one (made for other pixels, "
                        "settings or another model); any other folder or file is never replaced")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that would be ignored or misread (exit 2, like argparse)."""
    if args.channel is not None and args.channel_axis is None:
        parser.error("--channel needs --channel-axis (the leading axis that holds the channels)")
    if args.contrast_limits is not None and str(args.channel).lower() == "rgb":
        parser.error("--contrast-limits cannot be used with --channel rgb: the composite scales each "
                     "channel to its own range")
    from ..engine import resolve_device
    from ..engine.checks import contrast_limits
    from ..weights import check_model_name

    checks = [(lambda: contrast_limits(args.contrast_limits, "--contrast-limits"), "--contrast-limits"),
              (lambda: resolve_device(args.device), "--device"), (lambda: check_model_name(args.model), "--model")]
    for check, option in checks:
        try:
            check()
        except (TypeError, ValueError) as exc:
            parser.error(f"{option}: {exc}")
    if args.tile is not None and args.tile < 16:
        parser.error(f"--tile must be at least 16 pixels, got {args.tile}")
    if args.halo is not None and args.halo < 0:
        parser.error(f"--halo must be 0 or more pixels, got {args.halo}")


def select_channel(image, rgb: bool, axis: int | None, channel: str):
    """``(image, rgb)`` as the widget sees it with the same channel axis and channel."""
    from ..engine import channel_view

    try:
        return channel_view(image, rgb, axis, channel)
    except ValueError as exc:  # name the options in the message
        raise ValueError(f"--channel-axis {axis} / --channel {channel}: {exc}") from exc


def check_out(path: Path, overwrite: bool) -> None:
    """Before the model loads: ``--out`` may be created (or is our store, readable in this
    format); a folder or file that is not a store is refused, untouched."""
    from ..engine import EmbeddingStore
    from ..engine.store_files import check_creatable, path_kind

    if path_kind(path) in ("store", "damaged") and not overwrite:
        EmbeddingStore(path, mode="r")  # an older format or damaged metadata: refused now, with what to do
    else:
        check_creatable(path, overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    from ..engine import StoreMismatch, VolumeEmbeddings
    from ..engine.checks import pixel_dtype
    from ..engine.tiling import choose_layout
    from ..weights import load_model

    try:
        image = open_image(args.image)
        rgb = guess_rgb(image.shape) if args.rgb is None else args.rgb
        image, rgb = select_channel(image, rgb, args.channel_axis, args.channel or "0")
        pixel_dtype(image.dtype)
        spatial = 3 if rgb else 2
        if image.ndim < spatial:
            raise ValueError(f"image of shape {tuple(image.shape)} has fewer than {spatial} dimensions")
        choose_layout(tuple(image.shape[image.ndim - spatial: image.ndim - spatial + 2]), args.tile, args.halo)
        check_out(args.out, args.overwrite)
        predictor = load_model(args.model, device=args.device)
        vol = VolumeEmbeddings(image, predictor, rgb=rgb, contrast_limits=args.contrast_limits,
                               tile=args.tile, halo=args.halo)
        print(f"{args.image.name}: shape {tuple(image.shape)}, {'RGB' if rgb else 'gray'}, "
              f"{int(np.prod(vol.index_shape))} item(s) of index shape {vol.index_shape}"
              + (f", tiles {vol.layout.tile}+{vol.layout.halo}" if vol.layout else ""), flush=True)
        vol.attach_store(args.out, overwrite=args.overwrite)
    except (OSError, ValueError, TypeError, StoreMismatch, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, StoreMismatch) and not args.overwrite and (args.out / "zarr.json").exists():
            print(f"  (--overwrite replaces the store at {args.out}; or choose another --out)", file=sys.stderr)
        return 2
    damaged = vol.store.verify()
    for index, why in damaged:
        print(f"{args.out}: {vol.store.describe(index)} is damaged ({why}): computing it again", file=sys.stderr)
    todo = sorted(set(vol.missing()) | {index for index, _ in damaged})
    if not todo:
        print(f"{args.out}: complete, nothing to compute")
        return 0
    t0 = time.perf_counter()
    bar = _progress_bar(len(todo))
    vol.on_store_problem = lambda exc: None  # a failed write is an error here (below), not a warning

    def progress(done: int, total: int) -> None:
        if vol.store_write_error is not None:  # the engine goes on in memory; here that is pointless
            raise vol.store_write_error
        bar(done)

    try:
        vol.precompute(todo, progress=progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume ({args.out})", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"\nerror: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 1
    repaired = f" ({len(damaged)} damaged one(s) repaired)" if damaged else ""
    print(f"\n{args.out}: {len(todo)} embedding(s) in {time.perf_counter() - t0:.1f} s{repaired}")
    return 0


def _progress_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda done: print(f"\r{done}/{total}", end="", flush=True)
    bar = tqdm(total=total, unit="emb")
    return lambda done: bar.update(done - bar.n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
