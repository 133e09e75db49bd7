"""Video on real moving faces: tracking quality (MOT metrics) and frames/s end to end, with ground truth.

Runs :func:`ferkit.apps.video.process_video` exactly as ``ferkit video IN -o OUT.mp4`` does (decode → detect on
schedule / predict → track → classify → draw → encode mp4v → table, plots, summary) on the clips of
``benchmarks/clips.py`` (FDDB photos panned, zoomed, sliding in and out, crossing, cut; 640×480 and
1280×720), then scores what ferkit *reported* (the per-frame table: confirmed tracks only) against the exact
ground truth with ``motmetrics`` (``pip install "ferkit[bench]"``): MOTA, IDF1, ID switches, false positives,
misses, and false tracks — reported ids that sit on a real face on fewer than half of their frames.
Real faces FDDB does not annotate (``clips.UNANNOTATED``) are ignore regions, as distractors are in the MOT
Challenge: a report there is neither a hit nor a false positive, and a track mostly there is not a false one.
A reported box matches a true one at IoU ≥ 0.5 (``--iou``).

    python benchmarks/bench_real_video.py                          # every clip, both sizes
    python benchmarks/bench_real_video.py --size 640x480 --clips slide5 pan
    python benchmarks/bench_real_video.py --detect-every 8 --confirm-hits 2   # try settings

Frames/s are wall-clock over the whole ``process_video`` call (file opened to summary written), so they
include decoding and encoding; the machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clips import CLIPS, SIZES, write_clip  # noqa: E402

from ferkit.apps.video import VideoOptions, process_video  # noqa: E402
from ferkit.apps.video.args import add_tracking_arguments, options_from_args  # noqa: E402
from ferkit.core.geometry import iou_xywh  # noqa: E402
from ferkit.core.machine import describe_cpu  # noqa: E402
from ferkit.core.plots import bar_chart_image, save_png  # noqa: E402
from ferkit.core.settings import Settings  # noqa: E402


def read_reported(table: Path) -> dict[int, list[tuple[int, list[float]]]]:
    """The per-frame table → ``{frame: [(track id, [x, y, w, h]), ...]}``."""
    out: dict[int, list[tuple[int, list[float]]]] = {}
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(int(row["frame"]), []).append(
                (int(row["track_id"]), [float(row[k]) for k in ("x", "y", "w", "h")]))
    return out


def score(gt: dict, reported: dict[int, list], iou: float = 0.5) -> dict:
    """MOT metrics of the reported tracks against the ground truth (motmetrics), plus false tracks."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    number = {name: i + 1 for i, name in enumerate(gt["faces"])}  # motmetrics wants numeric ids
    on_ignored: Counter = Counter()  # per reported id: frames spent on an unannotated real face
    ignore = gt.get("ignore") or [[]] * len(gt["frames"])
    for f, truth in enumerate(gt["frames"]):
        all_hyp = reported.get(f, [])
        hyp = _drop_ignored(all_hyp, truth, ignore[f], iou)
        on_ignored.update(h[0] for h in all_hyp if h not in hyp)
        g_ids, g_boxes = [number[t[0]] for t in truth], np.array([t[1] for t in truth], float).reshape(-1, 4)
        h_ids, h_boxes = [h[0] for h in hyp], np.array([h[1] for h in hyp], float).reshape(-1, 4)
        # motmetrics' own iou_matrix uses np.asfarray (gone in NumPy 2): the same distances from ferkit's.
        d = 1.0 - iou_xywh(g_boxes, h_boxes)
        d[d > 1.0 - iou] = np.nan
        acc.update(g_ids, h_ids, d)
    names = ["num_frames", "mota", "idf1", "num_switches", "num_false_positives", "num_misses",
             "num_unique_objects", "mostly_tracked"]
    s = mm.metrics.create().compute(acc, metrics=names, name=gt["clip"]).iloc[0].to_dict()
    ev = acc.mot_events
    hyp_rows = ev[ev["HId"].notna()]
    false_tracks = 0
    for hid, rows in hyp_rows.groupby("HId"):
        hits, ignored = int((rows["Type"] != "FP").sum()), on_ignored[hid]
        if hits < 0.5 * (len(rows) + ignored) and ignored < 0.5 * (len(rows) + ignored):
            false_tracks += 1  # neither mostly on a true face nor mostly on an unannotated one
    s.update(tracks=int(hyp_rows["HId"].nunique()), false_tracks=false_tracks)
    return s


def _drop_ignored(hyp: list, truth: list, ignore: list, iou: float) -> list:
    """The reported faces minus those on an ignore region (a real face FDDB does not annotate) and on no true face.

    As in the MOT Challenge's protocol for distractors: such a report is neither a hit nor a false positive.
    """
    if not ignore or not hyp:
        return hyp
    h_boxes = np.array([h[1] for h in hyp], float).reshape(-1, 4)
    on_truth = (iou_xywh(h_boxes, np.array([t[1] for t in truth], float).reshape(-1, 4)) >= iou).any(1)
    on_ignored = (iou_xywh(h_boxes, np.array(ignore, float).reshape(-1, 4)) >= iou).any(1)
    return [h for h, t, i in zip(hyp, on_truth, on_ignored) if t or not i]


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_clip(video: Path, gt_path: Path, rec, options: VideoOptions, work: Path, iou: float) -> dict:
    """``process_video`` on one clip (timed), then its scores."""
    out = work / video.stem
    cpu0, main0, t0 = _cpu_seconds(), time.thread_time(), time.perf_counter()
    report = process_video(video, out / f"{video.stem}.annotated.mp4", out, recognizer=rec, options=options,
                           progress=False)
    wall, cpu, main_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0, time.thread_time() - main0
    gt = json.loads(gt_path.read_text())
    s = score(gt, read_reported(out / f"{video.stem}.tracks.csv"), iou)
    n = max(report.frames, 1)
    # CPU per frame: the analysis thread (detect, track, classify) and the others (decode, draw, encode, and the
    # onnxruntime workers that share its inference)
    # overlap on two cores, so with two free cores frames/s is bounded by the busier side.
    main_ms, aux_ms = main_cpu / n * 1e3, (cpu - main_cpu) / n * 1e3
    s.update(clip=gt["clip"], size=gt["size"], frames=report.frames, wall_s=wall, fps=report.frames / wall,
             cpu_ms=cpu / n * 1e3, main_ms=main_ms, aux_ms=aux_ms, cores=cpu / wall,
             cpu_fps=1e3 / max(main_ms, aux_ms),
             detector_runs=report.detector_runs, classified=report.classified_faces,
             faces=len(gt["faces"]), max_faces=max(len(fr) for fr in gt["frames"]))
    return s


def table(rows: list[dict]) -> list[str]:
    """Markdown table of the per-clip results and the totals per size."""
    lines = ["| clip | size | faces (max at once) | frames/s | CPU ms/frame (analysis thread + others) | "
             "detector runs | MOTA | IDF1 | ID sw. | FP | misses | tracks | false tracks |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['size']} | {r['faces']} ({r['max_faces']}) | {r['fps']:.1f} | "
                     f"{r['main_ms']:.1f} + {r['aux_ms']:.1f} | "
                     f"{r['detector_runs']}/{r['frames']} | {r['mota']:.3f} | {r['idf1']:.3f} | "
                     f"{int(r['num_switches'])} | {int(r['num_false_positives'])} | {int(r['num_misses'])} | "
                     f"{r['tracks']} | {r['false_tracks']} |")
    for size in sorted({r["size"] for r in rows}):
        rs = [r for r in rows if r["size"] == size]
        frames, wall = sum(r["frames"] for r in rs), sum(r["wall_s"] for r in rs)
        main = sum(r["main_ms"] * r["frames"] for r in rs) / frames
        aux = sum(r["aux_ms"] * r["frames"] for r in rs) / frames
        lines.append(f"| **all** | {size} | | **{frames / wall:.1f}** | {main:.1f} + {aux:.1f} | "
                     f"{sum(r['detector_runs'] for r in rs)}/{frames} | | "
                     f"min {min(r['idf1'] for r in rs):.3f} | {sum(int(r['num_switches']) for r in rs)} | | | | "
                     f"max {max(r['false_tracks'] for r in rs)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="*", default=[c.name for c in CLIPS], choices=[c.name for c in CLIPS])
    ap.add_argument("--size", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--clip-dir", default="/tmp/ferkit_clips", help="where the clips are (made if missing)")
    add_tracking_arguments(ap)  # the same flags, defaults and meaning as `ferkit video`
    ap.set_defaults(bars=False)
    ap.add_argument("--detector", default=None, help="face detector (default: ferkit video's)")
    ap.add_argument("--detect-size", type=int, default=None, help="detector input size (default: ferkit video's)")
    ap.add_argument("--model", default=None, help="emotion model (default: ferkit video's)")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: ferkit video's)")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU at which a reported box matches a true one")
    ap.add_argument("--json", default=None, help="also write the per-clip results to this JSON file")
    ap.add_argument("--plot", default=None, help="also draw frames/s per clip against the bars, 60 at 640x480 and "
                    "30 at 1280x720 (PNG)")
    args = ap.parse_args()

    def recognizer(size: str):
        """What `ferkit video` uses on frames of this size: its settings profile, with these flags on top."""
        return Settings.profile("video", frame_size=SIZES[size], model=args.model, detector=args.detector,
                                detect_size=args.detect_size, threads=args.threads).build()

    opts = options_from_args(args)
    cpu = describe_cpu()
    print(f"detect every {opts.detect_every} ({'adaptive' if opts.adaptive else 'fixed'}), confirm "
          f"{opts.confirm_hits} (score {opts.confirm_score:g}), keep lost {opts.keep_lost}, "
          f"classify every {opts.classify_every} (budget {opts.classify_budget:g}/frame, "
          f"{'views in turn' if opts.split_views else 'all views'}); CPU: {cpu}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.size:
            rec = recognizer(size)
            print(f"{size}: model {rec.model_name}, detector {rec.detector_name} at {rec.detector.max_side} px",
                  flush=True)
            for clip in [c for c in CLIPS if c.name in args.clips]:
                video, gt_path = write_clip(clip, size, Path(args.clip_dir))
                rows.append(run_clip(video, gt_path, rec, opts, Path(tmp), args.iou))
                r = rows[-1]
                print(f"  {r['clip']:12s} {size}: {r['fps']:6.1f} frames/s ({r['cores']:.2f} cores; CPU "
                      f"{r['main_ms']:.1f} ms analysis thread + {r['aux_ms']:.1f} ms other threads per frame), "
                      f"IDF1 {r['idf1']:.3f}, "
                      f"{r['tracks']} tracks ({r['false_tracks']} false), {int(r['num_switches'])} ID switches",
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    print("\n".join(table(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))
    if args.plot:
        groups: dict[str, dict[str, float]] = {}
        for r in rows:
            groups.setdefault(r["size"], {})[r["clip"]] = r["fps"]
        title = f"frames/s end to end, real-footage clips\n{cpu}"
        bars = {"640x480": 60.0, "1280x720": 30.0}  # issue 12's
        save_png(args.plot, bar_chart_image(groups, title, "frames/s", targets=bars, size=(900, 60 + 26 * len(rows))))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
