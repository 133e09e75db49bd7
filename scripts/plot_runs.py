"""Validation accuracy of several training runs against the share of their schedule done, as one picture.

Runs of different lengths (a 112-epoch GPU run, a 100-epoch CPU run still going) are compared where each
stands in its own learning-rate schedule: epoch e of N is at e / N. Each run's ``log.csv`` (from ``ferkit
train``) needs the planned epoch count, given as ``LABEL=LOG.csv:EPOCHS``.

    python scripts/plot_runs.py "KD from scratch, CPU=/work/runs/kd_scratch/log.csv:100" \\
        "fernet_m s5, GPU=docs/training_logs/fernet_m_s5.csv:112" -o docs/img/kd_scratch.png
"""

from __future__ import annotations

import argparse
import csv

import numpy as np

from ferkit.core.plots import save_png, timeline_image


def parse_run(spec: str) -> tuple[str, np.ndarray, np.ndarray, int]:
    """(label, share of the schedule done, val accuracy, planned epochs) of one ``LABEL=LOG.csv:EPOCHS``."""
    label, _, rest = spec.partition("=")
    path, _, epochs = rest.rpartition(":")
    if not (label and path and epochs.isdigit()):
        raise SystemExit(f"plot_runs: {spec!r}: give LABEL=LOG.csv:EPOCHS")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    done = np.array([int(r["epoch"]) for r in rows], np.float64) / int(epochs)
    return label, done, np.array([float(r["val_acc"]) for r in rows]), int(epochs)


def print_table(runs: list[tuple[str, np.ndarray, np.ndarray, int]], step: float = 0.05) -> None:
    """Markdown: each run's val accuracy at every ``step`` of its schedule (the logged epoch nearest to it)."""
    print("\n| share of schedule | " + " | ".join(label for label, *_ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for share in np.arange(step, 1.0 + 1e-9, step):
        cells = []
        for _, done, acc, planned in runs:
            i = int(np.argmin(np.abs(done - share)))
            cells.append(f"{acc[i]:.2%} (epoch {round(done[i] * planned)})" if abs(done[i] - share) <= step / 2 else "")
        if any(cells):
            print(f"| {share:.0%} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=LOG.csv:EPOCHS")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    ap.add_argument("--table", action="store_true", help="also print val accuracy every 5 %% of each schedule")
    ap.add_argument("--low", type=float, default=0.4, help="accuracy at the bottom of the chart")
    ap.add_argument("--high", type=float, default=0.8, help="accuracy at the top of the chart")
    args = ap.parse_args()
    grid = np.linspace(0.01, 1.0, 100)
    series = {}
    for label, done, acc, _ in map(parse_run, args.runs):
        # on the grid up to where the run has got; NaN (no line) beyond it
        y = np.where(grid <= done.max() + 1e-9, np.interp(grid, done, acc), np.nan)
        series[f"{label} (best {acc.max():.2%})"] = y
        print(f"{label}: {len(acc)} epochs logged, {done.max():.0%} of its schedule, best val {acc.max():.2%}")
    if args.table:
        print_table([parse_run(spec) for spec in args.runs])
    title = "FER2013 val accuracy against the share of each run's schedule done"
    save_png(args.out, timeline_image(grid, series, title, size=(1100, 400), y_label="val acc", x_format="{:.0%}",
                                      y_range=(args.low, args.high)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
