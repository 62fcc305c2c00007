"""Run issue 11's bad-input matrix (every reading verb × every bad input) and count the verdicts.

    python benchmarks/bad_input_matrix.py                 # all cells, one JSON line each, then the counts
    python benchmarks/bad_input_matrix.py --verb train --case png_one_corrupt
    python benchmarks/bad_input_matrix.py --assets /tmp/bim  # reuse (or keep) the good sample and models
    python benchmarks/bad_input_matrix.py --skip             # also: --on-error skip processes the good items

Verdicts (``tests/bad_inputs.py``): clean (exit 2, ``galmo: error:`` naming the file, nothing half-written),
traceback, silent (exit 0), unnamed (the error does not name the file), leftover, other. The
oversized-FITS cells run in a child process under a 6 GiB address-space limit.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import bad_inputs as b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verb", nargs="*", default=None, help="only these verbs")
    ap.add_argument("--case", nargs="*", default=None, help="only these cases")
    ap.add_argument("--skip", action="store_true", help="also the --on-error skip cells")
    ap.add_argument("--assets", default=None, help="folder of the good sample (built there if absent)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    cells = [(v, c) for v, c in b.matrix() if (not args.verb or v in args.verb) and (not args.case or c in args.case)]
    with tempfile.TemporaryDirectory(prefix="galmo-bim-") as tmp:
        root = Path(args.assets or Path(tmp) / "assets")
        a = b.load_assets(root) if (root / "assets.json").is_file() else b.build_assets(root)
        b.save_assets(a)
        t0 = time.perf_counter()
        outcomes = []
        sub = [cell for cell in cells if cell[1] in b.SUBPROCESS_CASES]
        for v, c in cells:
            if (v, c) not in sub:
                outcomes.append(b.run_case(v, c, a, Path(tmp) / f"{v}-{c}"))
                print(outcomes[-1].line(), flush=True)
        for o in b.run_in_subprocess(sub, root, Path(tmp) / "sub").values() if sub else ():
            outcomes.append(o)
            print(o.line(), flush=True)
        skipped = []
        for v, c in b.skip_cells() if args.skip else ():
            if (not args.verb or v in args.verb) and (not args.case or c in args.case):
                ok, why = b.run_skip_case(v, c, a, Path(tmp) / f"skip-{v}-{c}")
                skipped.append(ok)
                print(json.dumps({"verb": v, "case": c, "on_error": "skip", "ok": ok, "detail": why[:300]}), flush=True)
    counts = collections.Counter(o.verdict for o in outcomes)
    print(json.dumps({"cells": len(outcomes), **{k: counts.get(k, 0) for k in
                      ("clean", "traceback", "silent", "unnamed", "leftover", "other")},
                      **({"skip_ok": sum(skipped), "skip_failed": len(skipped) - sum(skipped)} if args.skip else {}),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
