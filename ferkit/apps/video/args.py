"""Command-line options shared by ``ferkit video`` and ``ferkit camera`` (the commands: ferkit/apps/cli/video.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ferkit.apps.video.options import VideoOptions
from ferkit.apps.video.smoothing import SMOOTHING_METHODS


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    """Add the tracking, smoothing and speed options of :class:`VideoOptions` to a sub-command."""
    d = VideoOptions()
    g = p.add_argument_group("tracking, smoothing and speed")
    g.add_argument("--detect-every", type=int, default=d.detect_every, metavar="K",
                   help=f"run the face detector every K frames, tracking in between (default {d.detect_every})")
    g.add_argument("--no-adaptive", action="store_true", help="detect strictly every K frames (by default also "
                   "sooner on evidence: a new face to confirm, a face lost, drifting, crossing another or leaving "
                   "the picture; at most about twice as often overall)")
    g.add_argument("--confirm-hits", type=int, default=d.confirm_hits, metavar="N",
                   help=f"report a new face only once the detector found it N times in a row, so a false "
                   f"detection never becomes a track (default {d.confirm_hits})")
    g.add_argument("--confirm-score", type=float, default=d.confirm_score, metavar="S",
                   help=f"... and the best of those detections must score at least S (default {d.confirm_score:g})")
    g.add_argument("--track-score", type=float, default=d.track_score, metavar="S",
                   help=f"ignore detections scoring under S: they neither start nor update a track "
                   f"(default {d.track_score:g})")
    g.add_argument("--keep-lost", type=int, default=d.keep_lost, metavar="F",
                   help=f"keep a face the detector lost for F frames, hidden, so it keeps its id when found "
                   f"again (default {d.keep_lost})")
    g.add_argument("--classify-every", type=int, default=d.classify_every, metavar="N",
                   help=f"classify each face every N frames; smoothing carries values between "
                   f"(default {d.classify_every})")
    g.add_argument("--classify-budget", type=float, default=d.classify_budget, metavar="F",
                   help=f"at most F face classifications per frame on average, so many faces cost no more per "
                   f"frame (each is classified less often); 0 = no cap (default {d.classify_budget:g})")
    g.add_argument("--all-views", action="store_true", help="run the model's test-time views on each "
                   "classification as photos do (the mirror where the first view is unsure; by default the "
                   "default model's face and mirror views take turns on consecutive classifications of a face "
                   "and are averaged: half the cost)")
    g.add_argument("--smooth", choices=SMOOTHING_METHODS, default=d.smooth,
                   help=f"temporal smoothing of each face's probabilities (default {d.smooth})")
    g.add_argument("--alpha", type=float, default=d.alpha, help=f"EMA weight of one frame, 0-1; smaller = "
                   f"smoother, memory about 1/alpha frames (default {d.alpha:g})")
    g.add_argument("--window", type=int, default=d.window, help=f"window smoothing length in frames "
                   f"(default {d.window})")


def options_from_args(args: argparse.Namespace, **extra: Any) -> VideoOptions:
    """:class:`VideoOptions` from parsed :func:`add_tracking_arguments` options (plus ``extra`` fields)."""
    return VideoOptions(detect_every=args.detect_every, adaptive=not args.no_adaptive,
                        confirm_hits=args.confirm_hits, confirm_score=args.confirm_score,
                        track_score=args.track_score, keep_lost=args.keep_lost,
                        classify_every=args.classify_every, classify_budget=args.classify_budget,
                        split_views=not args.all_views, smooth=args.smooth, alpha=args.alpha, window=args.window,
                        bars=args.bars, **extra)
