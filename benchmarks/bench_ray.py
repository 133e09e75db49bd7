"""Images/s of ``ferkit analyze``: the local engine vs ``--engine ray`` with 1 and 2 workers, same photos.

Starts a real 2-node Ray cluster on loopback (head + second node, one CPU each; tests/ray_cluster.py)
unless ``--address`` is given, runs the CLI as a user would (``--no-images``), back to back and
interleaved (local, ray ×2, ray ×1, then again) so a busy machine disturbs every engine alike, and
checks that every Ray run found the same faces and labels as the local one. Three rates per run:
end to end (process start, model load and Ray start-up included), steady (first to last record,
from the results file's / the committed parts' growth sampled every 0.1 s), and images per
CPU-second: the CPU time of the CLI process plus, for Ray, of every process of the cluster
(GCS, raylets, monitors, workers) — the figure least disturbed by other load on the machine.

    python benchmarks/bench_ray.py ../shared/facedet/images --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import ray_cluster  # noqa: E402


def _count(out: Path, ray: bool) -> int:
    """Records written so far: lines of results.jsonl (local) or of the committed parts (ray)."""
    try:
        if not ray:
            return sum(1 for _ in open(out / "results.jsonl"))
        return sum(len(json.loads(open(p).readline())["keys"]) for p in (out / ".ferkit/photos/parts").glob("part-*"))
    except (OSError, ValueError):
        return 0


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(photos: str, out: Path, model: str, workers: int | None, address: str | None, batch: int,
             temp_dir: str | None) -> dict:
    """One CLI run: wall-clock rates, and the CPU seconds it cost (the CLI + every Ray process of the cluster)."""
    import resource

    cmd = [sys.executable, "-m", "ferkit", "analyze", photos, "--no-images", "-o", str(out), "--model", model]
    if workers:
        cmd += ["--engine", "ray", "--address", address, "--workers", str(workers), "--batch-size", str(batch)]
    samples: list[tuple[float, int]] = []
    base = {p: _cpu_s(p) or 0.0 for p in ray_cluster.cluster_pids(temp_dir)} if temp_dir else {}
    seen: dict[int, float] = dict(base)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, _count(out, bool(workers))))
            for pid in ray_cluster.cluster_pids(temp_dir) if temp_dir and workers else ():
                cpu = _cpu_s(pid)
                if cpu is not None:
                    seen[pid] = cpu  # workers exit with the driver: their last sample is ≤ 0.1 s old
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    cluster_cpu = sum(cpu - base.get(pid, 0.0) for pid, cpu in seen.items())
    if proc.returncode not in (0, 1) or not (out / "results.jsonl").exists():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    n = sum(1 for _ in open(out / "results.jsonl"))
    growing = [(t, c) for t, c in samples if c > 0]
    (t_a, c_a), (t_b, c_b) = growing[0], max(growing, key=lambda s: (s[1], -s[0]))
    steady = (c_b - c_a) / (t_b - t_a) if t_b > t_a else float("nan")
    cpu = cli_cpu + cluster_cpu
    return {"engine": f"ray, {workers} worker(s)" if workers else "local", "images": n, "wall_s": round(wall, 2),
            "per_s": round(n / wall, 3), "steady_per_s": round(steady, 3), "cpu_s": round(cpu, 1),
            "cli_cpu_s": round(cli_cpu, 1), "per_cpu_s": round(n / cpu, 3)}


def compare(local: Path, ray: Path) -> dict:
    """Photos whose faces (boxes, readability, reason, label) match, and the largest probability difference."""
    def load(p: Path) -> dict:
        return {r["source"]: r for r in map(json.loads, (p / "results.jsonl").read_text().splitlines())}

    a, b = load(local), load(ray)
    same, worst = 0, 0.0
    for src, ra in a.items():
        rb = b.get(src, {})
        fa, fb = ra.get("faces", []), rb.get("faces")
        if fb is not None and [(f["box"], f["readable"], f["reason"], f["emotion"]) for f in fa] == \
                [(f["box"], f["readable"], f["reason"], f["emotion"]) for f in fb]:
            same += 1
            for x, y in zip(fa, fb):
                px, py = x["probabilities"] or {}, y["probabilities"] or {}
                worst = max([worst, *(abs(px[e] - py[e]) for e in px)])
    return {"photos": len(a), "same_faces_and_labels": same, "max_probability_diff": worst,
            "faces": sum(len(r.get("faces", [])) for r in a.values())}


def micro(photos: str, sample: Path | None, n_records: int = 100_000, batch: int = 16) -> dict:
    """The per-core figures docs/scale.md rests on: decoding, record size, driver commit and merge rates."""
    import cv2
    import numpy as np

    from ferkit.apps.batch import ResultStore, batch_id, chunked, part_line
    from ferkit.core.images import find_images, read_image
    from ferkit.errors import FerkitError

    cv2.setNumThreads(1)
    files = []
    for f in find_images([photos])[0]:
        try:
            read_image(f)
            files.append(f)
        except FerkitError:
            continue
        if len(files) == 100:
            break
    t = time.perf_counter()
    pixels = sum(read_image(f).shape[0] * read_image(f).shape[1] for f in files) / 2
    decode_ms = (time.perf_counter() - t) / (2 * len(files)) * 1e3
    sizes = [f.stat().st_size for f in files]
    lines = (sample / "results.jsonl").read_text().splitlines() if sample else ['{"source": "x", "faces": []}']
    record_bytes = float(np.mean([len(x) + 1 for x in lines]))
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = ResultStore(tmp, "photos", {})
        keys = [f"/data/photos/{i:09d}.jpg" for i in range(n_records)]
        t = time.perf_counter()
        for b in chunked(keys, batch):
            store.commit(batch_id(b), b, [part_line(k, lines[i % len(lines)]) for i, k in enumerate(b)])
        commit_s = time.perf_counter() - t
        t = time.perf_counter()
        store.merge(keys)
        merge_s = time.perf_counter() - t
    return {"decode_ms_per_photo_1_thread": round(decode_ms, 2), "mean_megapixels": round(pixels / len(files) / 1e6, 3),
            "mean_file_kb": round(float(np.mean(sizes)) / 1024, 1), "record_bytes": round(record_bytes),
            "store_commit_records_per_s": round(n_records / commit_s), "store_commit_batches_per_s":
            round(n_records / batch / commit_s), "merge_records_per_s": round(n_records / merge_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="?", default=str(ROOT.parent / "shared" / "facedet" / "images"))
    ap.add_argument("--model", default="fernet-e4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="Ray batch (small: finer progress samples)")
    ap.add_argument("--address", default=None, help="existing Ray cluster with >= 2 CPUs (default: start one)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--micro-only", action="store_true", help="only the per-core figures (no cluster)")
    args = ap.parse_args()
    if args.micro_only:
        print(json.dumps(micro(args.photos, None), indent=2))
        return 0
    temp_dir = None
    address = args.address
    if address is None:
        t = time.perf_counter()
        address, temp_dir = ray_cluster.start(nodes=2, cpus=1)
        cluster_dir = temp_dir
        os.environ.update(ray_cluster.auth_env(temp_dir))  # the CLI runs below join with the cluster's token
        print(f"2-node Ray cluster up in {time.perf_counter() - t:.1f} s at {address}", file=sys.stderr)
    rows, checks = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            for r in range(args.repeats):
                outs = {}
                for workers in (None, 2, 1):
                    out = Path(tmp) / f"r{r}-w{workers or 0}"
                    row = run_once(args.photos, out, args.model, workers, address, args.batch_size, temp_dir)
                    rows.append({"repeat": r, **row})
                    outs[workers] = out
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                for workers in (2, 1):
                    checks.append({"repeat": r, "workers": workers, **compare(outs[None], outs[workers])})
                    print(json.dumps(checks[-1]), file=sys.stderr, flush=True)
            if temp_dir:
                ray_cluster.stop(temp_dir)  # before the single-core figures, so nothing else runs
                temp_dir = None
            figures = micro(args.photos, Path(tmp) / "r0-w0")
    finally:
        if temp_dir:
            ray_cluster.stop(temp_dir)
        if args.address is None:
            shutil.rmtree(cluster_dir, ignore_errors=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {_cores()} cores", "model": args.model,
              "photos": args.photos, "runs": rows, "checks": checks, "ratios": _ratios(rows), "per_core": figures}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _cores() -> int:
    return os.cpu_count() or 0


def _ratios(rows: list[dict]) -> dict:
    """Per repeat, each Ray configuration's rates over the local run's (same conditions, back to back)."""
    out: dict[str, list[float]] = {}
    for r in {row["repeat"] for row in rows}:
        runs = {row["engine"]: row for row in rows if row["repeat"] == r}
        base = runs["local"]
        for name, row in runs.items():
            if name != "local":
                out.setdefault(f"{name} / local, end to end", []).append(round(row["per_s"] / base["per_s"], 3))
                out.setdefault(f"{name} / local, steady", []).append(
                    round(row["steady_per_s"] / base["steady_per_s"], 3))
                out.setdefault(f"{name} / local, images per CPU-second", []).append(
                    round(row["per_cpu_s"] / base["per_cpu_s"], 3))
    return out


if __name__ == "__main__":
    sys.exit(main())
