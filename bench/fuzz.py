"""Fuzzer for the message parsers and the whole datagram path of the core (Device.receive_datagrams).

    .venv/bin/python bench/fuzz.py [--inputs 1000000] [--seed 1] [--targets parse,responder,initiator,under-load]
    .venv/bin/python bench/fuzz.py --engine atheris [--inputs N] --targets responder   # coverage-guided, optional

The command line only: the targets, the mutator and the invariants checked after every input are in
src/wgpy_testkit/fuzz.py (its docstring says what each target checks), shared with tests/unit/test_fuzz.py.
The figures (inputs, inputs/s, what the core did with them) print as one JSON line per target.
"""

from __future__ import annotations

import argparse
import json
import sys

from wgpy_testkit.fuzz import TARGETS, Violation, run, run_atheris


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1000000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    ap.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (0: none)")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    if args.engine == "atheris":
        if len(targets) != 1:
            ap.error("--engine atheris runs one target per process")
        run_atheris(targets[0], args.inputs, args.seed)
        return 0
    rc = 0
    for t in targets:
        try:
            print(json.dumps(run(t, args.inputs, args.seed, args.progress)), flush=True)
        except Violation as e:
            print(json.dumps({"target": t, "violation": str(e)[:2000]}), flush=True)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
