"""``python -m napari_sam.bench``: the speed benchmark of a source checkout
(``benchmarks/bench.py``, which compares with the reference kept in ``tests/oracles``)."""

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"

if __name__ == "__main__":
    if not SCRIPT.is_file():
        sys.exit("the benchmarks live in the source checkout (benchmarks/bench.py); this install has none")
    sys.argv[0] = str(SCRIPT)
    runpy.run_path(str(SCRIPT), run_name="__main__")
