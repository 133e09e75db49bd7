"""Video pipeline speed and memory: frames/s end to end and peak RSS.

Synthetic: the real-footage benchmark with ground truth and MOT scores is ``benchmarks/bench_real_video.py``.
Generates a synthetic 640×480 test video — up to four face crops from scikit-image's
public-domain NASA astronaut portrait (mirrored, rescaled, re-lit) drifting over a
textured background — then runs :func:`ferkit.apps.video.process_video` on it exactly as
``ferkit video`` does (decode → track/detect → classify → draw → write mp4v + table).

Reported: frames/s over the whole run (including decoding and encoding), peak RSS
(``resource.getrusage``), and for the long run frames/s and current RSS per segment,
to show there is no slowdown and no growth.

    python benchmarks/bench_video.py                      # 600 frames, 4 faces, + 3000-frame long run
    python benchmarks/bench_video.py --long 0 --faces 2   # short run only
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ferkit.apps.video import VideoOptions, process_video  # noqa: E402
from ferkit.core.settings import Settings  # noqa: E402


def face_sprites(n: int) -> list[np.ndarray]:
    """``n`` distinct-looking face crops (BGR) from the astronaut portrait."""
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    head = img[25:235, 130:310]  # head and some hair/shoulder context
    sprites = []
    for i in range(n):
        s = head if i % 2 == 0 else head[:, ::-1]  # mirrored
        scale = (0.62, 0.55, 0.7, 0.5)[i % 4]
        s = cv2.resize(s, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gain = (1.0, 0.85, 1.1, 0.95)[i % 4]
        sprites.append(np.clip(s.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return sprites


def background(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([80 + 60 * np.sin(xx / 37), 90 + 50 * np.cos(yy / 23), 110 + 40 * np.sin((xx + yy) / 51)], 2)
    rng = np.random.default_rng(0)
    return np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8)


def render(index: int, bg: np.ndarray, sprites: list[np.ndarray]) -> np.ndarray:
    """Frame ``index``: each face drifts on its own smooth path inside its quadrant (no crossings)."""
    frame = bg.copy()
    h, w = frame.shape[:2]
    for i, s in enumerate(sprites):
        sh, sw = s.shape[:2]
        qx, qy = (i % 2) * w // 2, (i // 2) * h // 2
        span_x, span_y = max(1, w // 2 - sw), max(1, h // 2 - sh)
        t = index / 30.0
        x = qx + int(span_x * (0.5 + 0.45 * np.sin(0.9 * t + i)))
        y = qy + int(span_y * (0.5 + 0.45 * np.sin(0.7 * t + 2 * i)))
        if len(sprites) == 1:  # a single face may roam the whole picture
            x = int((w - sw) * (0.5 + 0.45 * np.sin(0.9 * t)))
            y = int((h - sh) * (0.5 + 0.45 * np.sin(0.7 * t)))
        frame[y:y + sh, x:x + sw] = s
    return frame


def make_video(path: Path, frames: int, faces: int, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """Write the synthetic test video (mp4v) and return its path."""
    w, h = size
    bg = background(w, h)
    sprites = face_sprites(faces)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path}")
    for i in range(frames):
        writer.write(render(i, bg, sprites))
    writer.release()
    return path


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10  # bytes on macOS, KiB on Linux


def run(path: Path, out: Path, options: VideoOptions, detector: str, threads: int, detect_size: int,
        segment: int = 0, model: str | None = None) -> dict:
    # The same set-up as `ferkit video`: its settings profile with these flags.
    rec = Settings.profile("video", model=model, detector=detector, threads=threads, detect_size=detect_size).build()
    segs: list[tuple[int, float, float]] = []
    mark = [time.perf_counter()]

    def on_frame(index, frame, result):
        if segment and (index + 1) % segment == 0:
            now = time.perf_counter()
            segs.append((index + 1, segment / (now - mark[0]), current_rss_mb()))
            mark[0] = now

    cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
    report = process_video(path, out / f"{path.stem}.annotated.mp4", out, recognizer=rec, options=options,
                           progress=False, on_frame=on_frame)
    wall, cpu, main_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0, time.thread_time() - main0
    return {"frames": report.frames, "fps": report.frames / wall, "loop_fps": report.processing_fps,
            "cpu_ms": cpu / max(report.frames, 1) * 1e3, "cpu_share": cpu / wall,
            "main_ms": main_cpu / max(report.frames, 1) * 1e3,
            "tracks": len(report.tracks), "detector_runs": report.detector_runs,
            "classified": report.classified_faces, "segments": segs, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--faces", type=int, default=4, choices=(1, 2, 3, 4))
    ap.add_argument("--long", type=int, default=3000, help="frames of the long run (0 = skip)")
    ap.add_argument("--detector", default=None, help="face detector (default: ferkit video's)")
    ap.add_argument("--detect-every", type=int, default=VideoOptions.detect_every)
    ap.add_argument("--classify-every", type=int, default=VideoOptions.classify_every)
    ap.add_argument("--threads", type=int, default=None, help="classifier threads (ferkit video --threads)")
    ap.add_argument("--detect-size", type=int, default=None, help="detector input size (ferkit video --detect-size)")
    ap.add_argument("--model", default=None, help="classifier (default: ferkit video's)")
    ap.add_argument("--keep", default=None, help="folder to keep the generated video and outputs in")
    args = ap.parse_args()
    opts = VideoOptions(detect_every=args.detect_every, classify_every=args.classify_every)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = make_video(work / f"bench_{args.faces}faces.mp4", args.frames, args.faces)
        print(f"cv2 {cv2.__version__}, {args.frames} frames 640x480, {args.faces} faces, detector {args.detector}, "
              f"at {args.detect_size} px, detect every {opts.detect_every} (adaptive), classify every "
              f"{opts.classify_every}, {args.threads} classifier thread(s), model {args.model or 'default'}")
        r = run(clip, work / "out", opts, args.detector, args.threads, args.detect_size, model=args.model)
        print(f"short run: {r['frames']} frames, {r['fps']:.1f} frames/s end to end "
              f"(loop {r['loop_fps']:.1f}); {r['tracks']} tracks, {r['detector_runs']} detector runs, "
              f"{r['classified']} face classifications; peak RSS {r['peak_rss_mb']:.0f} MB")
        # CPU time per frame is what the pipeline costs; frames/s also depends on what else the machine runs
        # (cpu share = CPU seconds this process got per wall second, all threads).
        # The analysis thread (detect + classify, 1 onnxruntime thread) and the decode/encode threads overlap,
        # so with two free cores frames/s is bounded by the busier side.
        aux = r["cpu_ms"] - r["main_ms"]
        print(f"  CPU {r['cpu_ms']:.1f} ms/frame (analysis thread {r['main_ms']:.1f}, decode/encode threads "
              f"{aux:.1f}) -> about {1e3 / max(r['main_ms'], aux):.0f} frames/s with two free cores; this run got "
              f"{r['cpu_share']:.2f} cores (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if args.long:
            clip = make_video(work / f"bench_long_{args.faces}faces.mp4", args.long, args.faces)
            seg = max(1, args.long // 5)
            r = run(clip, work / "out_long", opts, args.detector, args.threads, args.detect_size, segment=seg,
                    model=args.model)
            print(f"long run: {r['frames']} frames, {r['fps']:.1f} frames/s end to end, CPU {r['cpu_ms']:.1f} "
                  f"ms/frame; peak RSS {r['peak_rss_mb']:.0f} MB")
            for end, fps, rss in r["segments"]:
                print(f"  frames {end - seg:5d}-{end - 1:5d}: {fps:6.1f} frames/s, RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
