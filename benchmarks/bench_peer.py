"""ferkit beside the `fer` library on the same photos, in one run: median ms per photo and the ratio.

The photo is a 640×480 scene of real FDDB news photos holding ≥ 15 faces
(`scenes.crowd_scene`), plus the bundled example. Each side runs in its own
virtual environment through `../shared/peers/time_photo.py` (fer needs
TensorFlow; install it offline with `bash ../shared/peers/setup-fer.sh .venv-fer`),
alternating sides for ``--rounds`` rounds so machine load hits both alike.

    OMP_NUM_THREADS=2 python benchmarks/bench_peer.py [--fer-python .venv-fer/bin/python] [--models fernet-m] \
        [--runtimes onnxruntime]

The default ferkit side runs exactly as the peers' script does (``Recognizer()``, runtime ``auto``);
``--runtimes`` adds sides with ``Recognizer(runtime=NAME)``, timed by the same script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).parent))
from scenes import crowd_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIME_PHOTO = ROOT / ".." / "shared" / "peers" / "time_photo.py"


# The peers' script with ferkit's Recognizer built with the given runtime (its only other difference).
WITH_RUNTIME = ("import sys, runpy, ferkit; runtime = sys.argv.pop(1); base = ferkit.Recognizer; "
                "ferkit.Recognizer = lambda **kw: base(runtime=runtime, **kw); "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def time_photo(python: str, which: str, photo: Path, runs: int) -> tuple[float, int]:
    """(median ms, faces found) of one side, from the peers' timing script (``which`` ``ferkit@RUNTIME``:
    ferkit on that runtime)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [python, str(TIME_PHOTO), which, str(photo), str(runs)]
    if "@" in which:
        which, runtime = which.split("@")
        cmd = [python, "-c", WITH_RUNTIME, runtime, str(TIME_PHOTO), which, str(photo), str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    ms, faces = out.stdout.strip().splitlines()[-1].split()
    return float(ms), int(faces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer-python", default=str(ROOT / ".venv-fer" / "bin" / "python"))
    ap.add_argument("--models", nargs="*", default=[], help="other ferkit classifiers to time beside the default")
    ap.add_argument("--runtimes", nargs="*", default=[], help="ferkit's default on these runtimes too (onnxruntime, "
                    "openvino)")
    ap.add_argument("--runs", type=int, default=20, help="timed analyses per side and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ferkit.core.machine import describe_cpu
    from ferkit.core.runtime import resolve_runtime

    print(f"CPU: {describe_cpu()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}; "
          f"ferkit's runtime: {resolve_runtime()}")
    with tempfile.TemporaryDirectory() as tmp:
        scene, truth = crowd_scene()
        photos = {"640×480 FDDB scene": Path(tmp) / "scene.jpg", "examples/astronauts.jpg": ROOT / "examples"
                  / "astronauts.jpg"}
        cv2.imwrite(str(photos["640×480 FDDB scene"]), scene, [cv2.IMWRITE_JPEG_QUALITY, 92])
        sides = [("fer", args.fer_python, "fer"), ("ferkit (default)", sys.executable, "ferkit")]
        sides += [(f"ferkit --model {m}", sys.executable, f"ferkit:{m}") for m in args.models]
        sides += [(f"ferkit --runtime {r}", sys.executable, f"ferkit@{r}") for r in args.runtimes]
        for title, photo in photos.items():
            extra = f", {len(truth)} true faces" if photo.name == "scene.jpg" else ""
            print(f"\n{title}{extra}: median ms over {args.rounds} rounds × {args.runs} runs")
            res: dict[str, list[float]] = {s[0]: [] for s in sides}
            faces: dict[str, int] = {}
            for _ in range(args.rounds):
                for name, python, which in sides:
                    ms, faces[name] = time_photo(python, which, photo, args.runs)
                    res[name].append(ms)
            fer_ms = statistics.median(res["fer"])
            for name in res:
                ms = statistics.median(res[name])
                print(f"  {name:28s} {ms:8.1f} ms  {faces[name]:3d} faces  {fer_ms / ms:5.2f}× fer's speed")


if __name__ == "__main__":
    main()
