"""Training speed on this CPU: seconds per step and minutes per FER2013 epoch, per architecture and precision.

Times the real training step (`ferkit.training.loop._train_step`: batched augmentation,
forward, loss, backward, SGD) on random uint8 faces (speed does not depend on the
pixels) and prints the CPU model and the flags that decide bf16, so every figure
says which machine it holds for. ``--extras`` also measures what else could make a
step cheaper on fernet_m: channels_last, torch.compile, batch size, threads, the
augmentation's own share, and the distillation teacher's pass per view set.

    python benchmarks/bench_training.py                       # every architecture, fp32 and bf16
    python benchmarks/bench_training.py --models fernet_m --extras
    python benchmarks/bench_training.py --teacher            # online distillation: eager vs OpenVINO teacher
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from ferkit.core.machine import NATIVE_BF16_FLAGS, cpu_info
from ferkit.training.architectures import list_architectures
from ferkit.training.config import TrainConfig
from ferkit.training.device import choose_precision
from ferkit.training.loop import _build, _train_step, augment

FER2013_TRAIN = 28_709


def step_seconds(cfg: TrainConfig, bf16: bool, steps: int, channels_last: bool = True,
                 compile_model: bool = False, teacher=None) -> float:
    """Median seconds of one optimiser step after a warm-up (``teacher``: distilling from it online)."""
    model, opt, _ = _build(cfg, torch.device("cpu"))
    if not channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    if compile_model:
        model = torch.compile(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (cfg.batch_size, 1, cfg.input_size, cfg.input_size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 7, (cfg.batch_size,), generator=gen)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        _train_step(model, opt, x, y, cfg, gen, None, bf16, i, teacher=teacher)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[3:]))


def row(label: str, sec: float, batch: int) -> str:
    epoch_min = sec * (FER2013_TRAIN // batch) / 60
    return f"{label:34s} {sec:8.3f} {1 / sec:8.2f} {epoch_min:10.1f}"


def extras(cfg: TrainConfig, bf16: bool, steps: int) -> None:
    print(f"\nfernet_m variations ({'bf16' if bf16 else 'fp32'}, the precision auto picks here)")
    print(f"{'setting':34s} {'s/step':>8s} {'steps/s':>8s} {'min/epoch':>10s}")
    print(row("batch 128, channels_last (default)", step_seconds(cfg, bf16, steps), 128), flush=True)
    print(row("batch 128, contiguous", step_seconds(cfg, bf16, steps, channels_last=False), 128), flush=True)
    for b in (64, 256):
        print(row(f"batch {b}", step_seconds(replace(cfg, batch_size=b), bf16, steps), b), flush=True)
    torch.set_num_threads(1)
    print(row("1 thread", step_seconds(cfg, bf16, steps), 128), flush=True)
    torch.set_num_threads(2)
    try:
        print(row("torch.compile (inductor)", step_seconds(cfg, bf16, steps, compile_model=True), 128), flush=True)
    except Exception as e:  # the inductor CPU backend needs a C++ compiler; report, don't crash
        print(f"{'torch.compile (inductor)':34s} failed: {str(e).splitlines()[0][:80]}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (128, 1, 48, 48), dtype=torch.uint8, generator=gen)
    t0 = time.perf_counter()
    for _ in range(10):
        augment(x, cfg, gen)
    print(row("augmentation alone (batch 128)", (time.perf_counter() - t0) / 10, 128), flush=True)
    teacher_pass(bf16)


def teacher_pass(bf16: bool) -> None:
    """Faces/s of the shipped ensemble as a distillation teacher, per view set (members rebuilt in torch)."""
    from ferkit.core.classification import resolve_model
    from ferkit.core.preprocess import normalize
    from ferkit.training.export import _Ensemble
    from ferkit.training.onnx_weights import members_from_onnx

    info = resolve_model("fernet-e4")
    images = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    members = members_from_onnx(info.path, info.meta["architecture"], images)
    x = normalize(torch.from_numpy(images[:64, None]).float())
    print(f"\nteacher pass, fernet-e4 ({len(members)} members), batch 64")
    for views in ("flip", "tencrop"):
        net = _Ensemble(members, views).eval()
        for use in sorted({False, bf16}):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use):
                net(x[:8])
                t0 = time.perf_counter()
                net(x)
            fps = 64 / (time.perf_counter() - t0)
            print(f"  {views:8s} {'bf16' if use else 'fp32'}: {fps:6.1f} faces/s -> "
                  f"{FER2013_TRAIN / fps / 60:5.1f} min for FER2013 train", flush=True)


def online_teacher_steps(cfg: TrainConfig, bf16: bool, steps: int) -> None:
    """A ``--kd-views online`` step with fernet-e4 teaching fernet_m: the teacher in eager PyTorch against
    the teacher compiled by OpenVINO, in its float form and in static int8 (what ``ferkit train`` uses on a CPU
    where OpenVINO is installed: int8 where the CPU has VNNI or AMX)."""
    from ferkit.core.classification import resolve_model
    from ferkit.training.distill import CompiledTeacher, _augmented_calibration, torch_teacher

    images = np.random.default_rng(0).integers(0, 256, (2048, 48, 48), dtype=np.uint8)
    cfg = replace(cfg, model="fernet_m", teacher="fernet-e4", kd_views="online")
    eager = torch_teacher(resolve_model("fernet-e4"), images, "none").to(memory_format=torch.channels_last)
    print(f"\nonline distillation, fernet-e4 teaching fernet_m ({'bf16' if bf16 else 'fp32'}, batch {cfg.batch_size})")
    print(f"{'teacher':34s} {'s/step':>8s} {'steps/s':>8s} {'min/epoch':>10s}")
    print(row("none (plain step)", step_seconds(cfg, bf16, steps), cfg.batch_size), flush=True)
    print(row("eager PyTorch", step_seconds(cfg, bf16, steps, teacher=eager), cfg.batch_size), flush=True)
    compiled = CompiledTeacher(eager, 48, cfg.threads)
    print(row("OpenVINO (CompiledTeacher)", step_seconds(cfg, bf16, steps, teacher=compiled), cfg.batch_size),
          flush=True)
    # int8 is what ferkit train picks where the CPU has VNNI or AMX: timed everywhere, to show when it pays
    compiled = CompiledTeacher(eager, 48, cfg.threads, calib=_augmented_calibration(images))
    print(row("OpenVINO int8 (CompiledTeacher)", step_seconds(cfg, bf16, steps, teacher=compiled), cfg.batch_size),
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list_architectures())
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (after 3 warm-up steps)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extras", action="store_true", help="also time the fernet_m variations and teacher pass")
    ap.add_argument("--teacher", action="store_true",
                    help="only time online distillation steps: no teacher, eager teacher, OpenVINO teacher "
                         "(float and int8)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name, flags = cpu_info()
    auto, why = choose_precision(torch.device("cpu"), None)
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", *NATIVE_BF16_FLAGS, "amx_tile") if f in flags]
    print(f"CPU: {name}; flags: {' '.join(shown) or 'none of avx2/avx512'}; torch {torch.__version__}; "
          f"{args.threads} threads")
    print(f"auto precision: {why}")
    if args.teacher:
        online_teacher_steps(TrainConfig(batch_size=args.batch, threads=args.threads), auto, args.steps)
        return
    print(f"\n{'model / precision':34s} {'s/step':>8s} {'steps/s':>8s} {'min/epoch':>10s}  "
          f"(batch {args.batch}, {FER2013_TRAIN // args.batch} steps per FER2013 epoch, training steps only)")
    for model in args.models:
        cfg = TrainConfig(model=model, batch_size=args.batch, threads=args.threads)
        for bf16 in (False, True):
            print(row(f"{model} {'bf16' if bf16 else 'fp32'}", step_seconds(cfg, bf16, args.steps), args.batch),
                  flush=True)
    if args.extras:
        extras(TrainConfig(model="fernet_m", threads=args.threads), auto, args.steps)


if __name__ == "__main__":
    main()
