"""Train several classifiers at once on one GPU inside a fixed wall-clock budget.

How the shipped ensemble was trained (see ferkit/weights/*.md). Two halves:

``python scripts/gpu_zoo.py pack DATA DIR`` (on the machine that has FER2013)
    writes DATA's train/val splits as xz-compressed uint8 arrays to DIR
    (~58 MB), small enough to carry to a GPU box that cannot see the data.

``python scripts/gpu_zoo.py run DIR OUT --budget SECONDS`` (on the GPU box)
    rebuilds ``fer2013.csv`` from DIR (the original Kaggle layout, which
    ``ferkit train`` reads), starts every run in ``ZOO`` as its own
    ``ferkit train --time-budget`` process (small nets are launch-bound, so
    several share a GPU well), and writes each run's best EMA weights as a
    half-precision checkpoint plus all logs to OUT.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

# name -> extra `ferkit train` flags; every run also gets --data, --out, --time-budget
ZOO: dict[str, list[str]] = {
    "fernet_m_s0": ["--model", "fernet_m", "--seed", "0", "--epochs", "200"],
    "fernet_m_s1": ["--model", "fernet_m", "--seed", "1", "--epochs", "200"],
    "fernet_l_s0": ["--model", "fernet_l", "--seed", "0", "--epochs", "200"],
    "fernet_l_s1": ["--model", "fernet_l", "--seed", "1", "--epochs", "200"],
    "fernet_m_s2": ["--model", "fernet_m", "--seed", "2", "--epochs", "200"],
    "fernet_m_s3": ["--model", "fernet_m", "--seed", "3", "--epochs", "200"],
    "fernet_l_s2": ["--model", "fernet_l", "--seed", "2", "--epochs", "200"],
    "fernet_l_s3": ["--model", "fernet_l", "--seed", "3", "--epochs", "200"],
    # second session: the whole budget to four runs, so each gets about twice the epochs
    "fernet_m_s4": ["--model", "fernet_m", "--seed", "4", "--epochs", "300"],
    "fernet_m_s5": ["--model", "fernet_m", "--seed", "5", "--epochs", "300"],
    "fernet_l_s4": ["--model", "fernet_l", "--seed", "4", "--epochs", "300"],
    "fernet_l_s5": ["--model", "fernet_l", "--seed", "5", "--epochs", "300"],
    "fernet_m_s6": ["--model", "fernet_m", "--seed", "6", "--epochs", "300"],
    "fernet_m_s7": ["--model", "fernet_m", "--seed", "7", "--epochs", "300"],
    "fernet_l_s6": ["--model", "fernet_l", "--seed", "6", "--epochs", "300"],
    "fernet_l_s7": ["--model", "fernet_l", "--seed", "7", "--epochs", "300"],
    # issue 10, for the next lent GPU: students distilled from scratch with fernet-e4 on every augmented
    # batch (the CPU run of session 11 does one such run in ~4 h), and teacher members made diverse by recipe
    "fernet_m_kd_s31": ["--model", "fernet_m", "--seed", "31", "--epochs", "300", "--teacher", "fernet-e4",
                        "--kd-views", "online"],
    "fernet_m_kd_s32": ["--model", "fernet_m", "--seed", "32", "--epochs", "300", "--teacher", "fernet-e4",
                        "--kd-views", "online", "--mixup", "0.2"],
    "fernet_m_mixup_s8": ["--model", "fernet_m", "--seed", "8", "--epochs", "300", "--mixup", "0.2"],
    "fernet_l_balanced_s8": ["--model", "fernet_l", "--seed", "8", "--epochs", "300", "--class-balance", "0.5"],
    "vgg16": ["--model", "vgg16", "--seed", "0", "--epochs", "30", "--lr", "0.05"],
    "resnet34": ["--model", "resnet34", "--seed", "0", "--epochs", "30"],
}
SHIP = tuple(n for n in ZOO if n.startswith("fernet"))  # weights small enough to bring back


def pack(data: Path, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ferkit.training.data import load_faces

    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        fs = load_faces(data, split)
        (out / f"{split}_x.u8.xz").write_bytes(lzma.compress(np.ascontiguousarray(fs.images).tobytes(), preset=9))
        np.save(out / f"{split}_y.npy", fs.labels)
        print(split, fs.images.shape, flush=True)


def write_csv(src: Path, csv_path: Path) -> None:
    """Arrays → ``fer2013.csv`` (Training + PublicTest rows, original emotion ids)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ferkit.core.labels import CSV_IDS, EMOTIONS

    to_csv_id = {EMOTIONS.index(name): i for i, name in CSV_IDS.items()}
    with open(csv_path, "w") as fh:
        fh.write("emotion,pixels,Usage\n")
        for split, usage in (("train", "Training"), ("val", "PublicTest")):
            y = np.load(src / f"{split}_y.npy")
            x = np.frombuffer(lzma.decompress((src / f"{split}_x.u8.xz").read_bytes()), np.uint8).reshape(len(y), -1)
            for img, lab in zip(x, y):
                fh.write(f"{to_csv_id[int(lab)]},{' '.join(map(str, img.tolist()))},{usage}\n")


def run(src: Path, out: Path, budget: float, work: Path, only: list[str] | None = None) -> None:
    import torch

    from ferkit.training.checkpoint import read_checkpoint

    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "fer2013.csv"
    write_csv(src, csv_path)
    print(f"csv ready in {time.time() - t0:.0f}s", flush=True)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    names = [n for n in ZOO if not only or n in only]
    procs = {}
    for name in names:
        flags = ZOO[name]
        # a warm machine keeps /tmp between calls: never ship (or resume) a previous call's run
        shutil.rmtree(work / name, ignore_errors=True)
        cmd = [sys.executable, "-m", "ferkit", "train", "--data", str(csv_path), "--out", str(work / name),
               "--time-budget", str(budget - (time.time() - t0)), *flags]
        log = open(work / f"{name}.log", "w")
        log.write(" ".join(cmd) + "\n")
        log.flush()
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo)
    deadline = t0 + budget + 60
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(5)
    for name, p in procs.items():
        if p.poll() is None:
            print(f"{name}: still running at the deadline, stopped", flush=True)
            p.terminate()
            p.wait(10)
        print(f"{name}: exit {p.returncode}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in (n for n in names if n in SHIP):
        best = work / name / "best.pt"
        if best.exists():
            ck = read_checkpoint(best)
            ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
            ck["device"] = f"one {ck.get('device', 'GPU')} shared by {len(procs)} concurrent runs (scripts/gpu_zoo.py)"
            torch.save(ck, out / f"{name}.pt")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for name in names:
            for f in (work / f"{name}.log", work / name / "log.csv", work / name / "config.json"):
                if f.exists():
                    tar.add(f, arcname=f"{name}/{f.name}")
    print(f"done in {time.time() - t0:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("dir", type=Path)
    p = sub.add_parser("run")
    p.add_argument("dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--budget", type=float, default=450.0, help="seconds of training wall time (default 450)")
    p.add_argument("--work", type=Path, default=Path("/tmp/zoo"))
    p.add_argument("--only", nargs="*", help="run just these ZOO entries")
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.data, a.dir)
    else:
        run(a.dir, a.out, a.budget, a.work, a.only)


if __name__ == "__main__":
    main()
