"""The ``napari-sam`` command: ``napari-sam [IMAGE]`` opens napari with the widget docked;
``napari-sam SUBCOMMAND ...`` runs a subcommand registered in :data:`SUBCOMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import embed, segment

# name -> ``main(argv) -> int | None``. Adding a subcommand is one line here (its module imports
# its heavy dependencies inside its functions, so ``napari-sam --help`` stays fast).
SUBCOMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "segment": segment.main,
    "embed": embed.main,
}


def _parser() -> argparse.ArgumentParser:
    subs = ", ".join(SUBCOMMANDS) or "none yet"
    parser = argparse.ArgumentParser(
        prog="napari-sam",
        description="Open napari with the Segment Anything widget docked.",
        epilog=f"Subcommands (napari-sam SUBCOMMAND --help): {subs}.",
    )
    parser.add_argument("image", nargs="?", help="image file to open (default: the scikit-image coins sample)")
    parser.add_argument("--model", help="start loading this model: vit_b, vit_l, vit_h, any registered "
                        "model (vit_b_lm, vit_t, ...) or a checkpoint file")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return int(SUBCOMMANDS[argv[0]](argv[1:]) or 0)
    args = _parser().parse_args(argv)
    from ..widgets.launch import launch

    return launch(args.image, model=args.model, device=args.device)


if __name__ == "__main__":
    sys.exit(main())
