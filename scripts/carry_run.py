"""Carry a training run to another machine or session as one file, and back.

A CPU run of 100 epochs outlasts a 3-hour session, and a session's untracked files do not reach the next
one. ``pack`` writes what ``--resume`` needs (``last.pt``, ``best.pt``, ``config.json``, ``log.csv``) as one
file with 16-bit weights, about half the size of the two checkpoints; ``unpack`` restores it into an empty run
folder, and the run goes on with the command that started it plus ``--resume``:

    python scripts/carry_run.py pack /work/runs/kd_scratch carry/kd_scratch.pt [--no-best]
    python scripts/carry_run.py unpack carry/kd_scratch.pt /work/runs/kd_scratch
"""

from __future__ import annotations

import argparse
import sys

from ferkit.errors import FerkitError
from ferkit.training.checkpoint import pack_run, unpack_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="run folder → one file")
    p.add_argument("run_dir")
    p.add_argument("dest")
    p.add_argument("--no-best", action="store_true", help="leave best.pt out (a run whose best epoch is to come)")
    u = sub.add_parser("unpack", help="one file → run folder")
    u.add_argument("src")
    u.add_argument("run_dir")
    args = ap.parse_args()
    try:
        if args.cmd == "pack":
            out = pack_run(args.run_dir, args.dest, best=not args.no_best)
        else:
            out = unpack_run(args.src, args.run_dir)
    except FerkitError as e:
        sys.exit(f"carry_run: {e}")
    print(out)


if __name__ == "__main__":
    main()
