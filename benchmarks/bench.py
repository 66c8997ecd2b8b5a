"""Speed benchmark entry point; the implementation is :mod:`napari_sam.bench`.

    python benchmarks/bench.py --model vit_b --device cpu --compare-reference
"""

from napari_sam.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
