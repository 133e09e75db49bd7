"""Time the network pass of candidate ONNX detectors at given input sizes, the way ferkit runs its own.

For a detector that is not (yet) a ferkit detector: its graph alone, on each ``--runtime`` (both by
default), with ``--threads`` threads that sleep between calls (as ferkit's detectors do), random input of each
size, median of ``--runs`` calls after warm-up. Graphs with a fixed input size are first given free
height and width (needs ``onnx``: ``pip install "ferkit[train]"``).

    python benchmarks/time_onnx.py ferkit/weights/detectors/retinaface-mnet025.onnx CANDIDATE.onnx \\
        --sizes 640x480 1280x720 --threads 1 2 [--runtime openvino onnxruntime] [--openvino-f32]

``--openvino-f32`` adds OpenVINO with float32 arithmetic forced (``INFERENCE_PRECISION_HINT``), which is
what it does on a CPU without native bf16: a guide to such CPUs from one that has it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ferkit.core.machine import describe_cpu
from ferkit.core.runtime import available_runtimes, open_session


def free_size(path: Path, out: Path) -> Path:
    """``path`` with its first input's height and width made symbolic (and initializers dropped from the
    inputs, which old exporters listed there); the file as is when they are already free."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    dims = inputs[0].type.tensor_type.shape.dim
    if all(d.dim_param for d in dims[2:]) and len(inputs) == len(model.graph.input):
        return path
    del model.graph.input[:]
    model.graph.input.extend(inputs)  # copies: the shape to edit is the new first input's
    for d, name in zip(model.graph.input[0].type.tensor_type.shape.dim, ("batch", "channels", "height", "width")):
        if name != "channels":
            d.ClearField("dim_value")
            d.dim_param = name
    for o in model.graph.output:  # their sizes follow the input's
        for d in o.type.tensor_type.shape.dim[2:]:
            d.ClearField("dim_value")
            d.dim_param = f"{o.name}_{id(d)}"
    onnx.save(model, str(out))
    return out


def openvino_f32(path: Path, threads: int):
    """OpenVINO with float32 arithmetic forced, behind the same ``run(x)`` as ferkit's sessions (loaded as
    ferkit loads it: without OpenVINO's usage telemetry)."""
    from ferkit.core.runtime import _openvino_core

    compiled = _openvino_core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS":
                                                           threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    class F32:
        def run(self, x: np.ndarray) -> list[np.ndarray]:
            request.infer({0: x})
            return [request.get_output_tensor(i).data for i in range(len(compiled.outputs))]

    return F32()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--sizes", nargs="+", default=["640x480"], help="WIDTHxHEIGHT")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--runtime", nargs="+", default=available_runtimes(), help="runtimes to time (default: installed)")
    ap.add_argument("--openvino-f32", action="store_true", help="also OpenVINO with float32 arithmetic forced")
    args = ap.parse_args()
    print(f"CPU: {describe_cpu()}")
    print("| model | runtime | threads | " + " | ".join(f"ms {s}" for s in args.sizes) + " |")
    print("|---|---|---|" + "---|" * len(args.sizes))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            runnable = free_size(path, Path(tmp) / path.name)
            runtimes = args.runtime + (["openvino-f32"] if args.openvino_f32 else [])
            for runtime, threads in ((r, t) for r in runtimes for t in args.threads):
                session = (openvino_f32(runnable, threads) if runtime == "openvino-f32"
                           else open_session(runnable, threads, spin=False, runtime=runtime))
                cells = []
                for size in args.sizes:
                    w, h = (int(v) for v in size.lower().split("x"))
                    x = (rng.random((1, 3, h, w), np.float32) * 255 - 117).astype(np.float32)
                    for _ in range(3):
                        session.run(x)
                    times = []
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        session.run(x)
                        times.append(time.perf_counter() - t)
                    cells.append(f"{1e3 * float(np.median(times)):.1f}")
                print(f"| {path.name} | {runtime} | {threads} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
