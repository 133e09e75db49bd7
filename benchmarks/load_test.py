"""Bounded load test of `ferkit serve` on loopback.

Starts a real server in a subprocess (or uses --url), sends --requests POSTs of one image with at most
--concurrency in flight (httpx AsyncClient), and prints latency percentiles, throughput and status
counts. 503 (saturated, with Retry-After) is counted apart from other 5xx: it is the service refusing
work on purpose when more than workers + queue requests are in flight. The exit status is 1 when any
other 5xx or transport error happened.

    python benchmarks/load_test.py                      # 300 requests, 16 concurrent, default pipeline
    python benchmarks/load_test.py --scene              # a 640×480 photo with 5 real faces (needs ../shared/facedet)
    python benchmarks/load_test.py --workers 1 --queue 0    # a pool too small: shows 503s
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --api-key "$FERKIT_API_KEY"
    python benchmarks/load_test.py --requests 50 --concurrency 50 --warmup 0   # a burst: 200/503/504, Retry-After
    python benchmarks/load_test.py --stalled 50 --half-headers 50 --requests 20 --concurrency 1
        # slow clients: 50 uploads stalled after 1 KB of a declared 150 KB body, each from its own loopback
        # address, and 50 connections stopped half-way through their headers, held during the load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """`python -m ferkit serve` on a free loopback port; returns (process, base URL) once /healthz answers."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "ferkit", "serve", "--port", str(port), "--workers", str(args.workers),
           "--queue", str(args.queue), "--threads", str(args.threads), "--log-level", "warning"]
    if args.detector:
        cmd += ["--detector", args.detector]
    if args.model:
        cmd += ["--model", args.model]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("FERKIT_API_KEY", None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("server did not start within 120 s")
        time.sleep(0.2)


async def run_load(url: str, data: bytes, args: argparse.Namespace) -> dict:
    """Send the requests; returns the summary dict."""
    import httpx

    headers = {"Content-Type": "image/jpeg"}
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    endpoint = f"{url}/v1/{args.endpoint}"
    latencies: list[float] = []
    ok_latencies: list[float] = []
    statuses: Counter = Counter()
    retry_after: list[int] = []
    transport_errors: list[str] = []
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=args.client_timeout) as client:
        for _ in range(args.warmup):
            await client.post(endpoint, content=data, headers=headers)
        todo = iter(range(args.requests))

        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                try:
                    r = await client.post(endpoint, content=data, headers=headers)
                    await r.aread()
                except httpx.TransportError as e:
                    transport_errors.append(type(e).__name__)
                    continue
                dt = time.perf_counter() - t0
                latencies.append(dt)
                statuses[r.status_code] += 1
                if r.status_code == 503 and r.headers.get("retry-after", "").isdigit():
                    retry_after.append(int(r.headers["retry-after"]))
                if r.status_code == 200:
                    ok_latencies.append(dt)

        probes: list[float] = []
        finished = asyncio.Event()

        async def probe() -> None:
            # /healthz while the pool is busy: stays fast only if inference really runs off the event loop.
            async with httpx.AsyncClient(timeout=10) as side:
                while not finished.is_set():
                    t = time.perf_counter()
                    await side.get(f"{url}/healthz")
                    probes.append(time.perf_counter() - t)
                    await asyncio.sleep(0.5)

        host, port = httpx.URL(url).host, httpx.URL(url).port or 80
        slow = await open_slow_clients(host, port, args.stalled, args.half_headers, not args.stalled_one_address)
        t0 = time.perf_counter()
        prober = asyncio.create_task(probe())
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
        finished.set()
        await prober
        slow_summary = await close_slow_clients(slow) if slow else None
    five = sum(n for s, n in statuses.items() if s >= 500 and s != 503)
    lat = ok_latencies or latencies or [float("nan")]
    return {
        "requests": args.requests, "concurrency": args.concurrency, "endpoint": args.endpoint,
        "wall_s": round(wall, 2), "throughput_rps": round(statuses[200] / wall, 2),
        "p50_ms": round(percentile(lat, 50) * 1e3, 1), "p95_ms": round(percentile(lat, 95) * 1e3, 1),
        "p99_ms": round(percentile(lat, 99) * 1e3, 1), "max_ms": round(max(lat) * 1e3, 1),
        "status": dict(sorted(statuses.items())), "http_5xx_excluding_503": five, "http_503": statuses[503],
        "transport_errors": len(transport_errors),
        "retry_after_s": {"min": min(retry_after), "p50": percentile(retry_after, 50), "max": max(retry_after)}
        if retry_after else None,
        "healthz_p50_ms": round(percentile(probes, 50) * 1e3, 1) if probes else None,
        "healthz_max_ms": round(max(probes) * 1e3, 1) if probes else None,
        "slow_clients": slow_summary,
    }


async def open_slow_clients(host: str, port: int, stalled: int, half: int, many: bool) -> list:
    """Connections that stall: uploads after 1 KB of a declared 150 KB body, and half-sent request heads.

    With ``many``, each comes from its own loopback source address (127.0.0.2, 127.0.0.3, ...), as distinct
    clients would; otherwise all from 127.0.0.1 (then the per-client connection cap applies to them).
    Returns (kind, watcher task, writer): the task ends when the server closes the connection, with the
    seconds it was held.
    """
    async def watch(reader: asyncio.StreamReader, t0: float) -> float:
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        return time.perf_counter() - t0

    conns = []
    for i in range(stalled + half):
        source = f"127.0.0.{2 + i % 250}" if many else "127.0.0.1"
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        if i < stalled:
            writer.write(b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 150000\r\n\r\n\xff\xd8\xff" + bytes(1021))
        else:
            writer.write(b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        await writer.drain()
        conns.append(("stalled" if i < stalled else "half", asyncio.create_task(watch(reader, time.perf_counter())),
                      writer))
    return conns


async def close_slow_clients(conns: list) -> dict:
    """How many slow connections the server still held at the end, how many it closed and when; closes ours."""
    summary: dict = {}
    for kind in ("stalled", "half"):
        mine = [(task, writer) for k, task, writer in conns if k == kind]
        if not mine:
            continue
        closed = [task.result() for task, _ in mine if task.done()]
        summary[kind] = {"held_open": len(mine) - len(closed), "closed_by_server": len(closed),
                         "closed_after_s": round(max(closed), 1) if closed else None}
    for _, task, writer in conns:
        task.cancel()
        writer.close()
    return summary


def sharing_benchmark(data: bytes, workers: int, n: int, detector: str | None) -> None:
    """In-process, no HTTP: one shared Recognizer vs one per worker thread vs a lock, onnxruntime 1 thread each.

    This is the measurement behind the service's choice of one shared Recognizer.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(ROOT))
    from ferkit.core.detection import DEFAULT_DETECTOR, create_detector
    from ferkit.core.images import decode_image
    from ferkit.core.recognizer import Recognizer

    name = detector or DEFAULT_DETECTOR

    def load() -> Recognizer:
        return Recognizer(detector=create_detector(name, threads=1), threads=1)

    shared = load()
    local = threading.local()
    lock = threading.Lock()

    def per_thread() -> Recognizer:
        if not hasattr(local, "rec"):
            local.rec = load()
        return local.rec

    def run(label: str, get, use_lock: bool) -> None:
        def job(_: int) -> int:
            img = decode_image(data)
            rec = get()
            if use_lock:
                with lock:
                    return len(rec.analyze(img).faces)
            return len(rec.analyze(img).faces)

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(job, range(2 * workers)))  # warm-up (and per-thread loading)
            t0 = time.perf_counter()
            list(ex.map(job, range(n)))
            dt = time.perf_counter() - t0
        print(f"  {label:34s} {n / dt:6.2f} images/s", flush=True)

    print(f"{n} analyses of the image, {workers} threads, detector {name}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")
    for _ in range(2):  # interleaved twice: background load drifts
        run("one shared Recognizer", lambda: shared, False)
        run("one Recognizer per thread", per_thread, False)
        run("one shared Recognizer + lock", lambda: shared, True)


def scene_jpeg() -> bytes:
    """Frame 0 of the ``slide5`` benchmark clip at 640×480 (5 real faces from FDDB photos) as a JPEG (quality 90)."""
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from clips import CLIPS, _background, _Photos, render_frame

    clip = next(c for c in CLIPS if c.name == "slide5")
    img, *_ = render_frame(clip, 0, (640, 480), _Photos(), _background(640, 480))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="use a running server instead of starting one")
    p.add_argument("--api-key", default=os.environ.get("FERKIT_API_KEY"), help="X-API-Key for --url")
    p.add_argument("--image", default=str(ROOT / "examples" / "astronauts.jpg"))
    p.add_argument("--scene", action="store_true", help="instead of --image: a 640×480 JPEG of 5 real faces "
                   "(22-67 px wide), frame 0 of the slide5 benchmark clip (benchmarks/clips.py, FDDB photos)")
    p.add_argument("--endpoint", choices=("analyze", "annotate"), default="analyze")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=4, help="requests sent first and not counted")
    p.add_argument("--client-timeout", type=float, default=120.0)
    p.add_argument("--workers", type=int, default=0, help="server inference threads (0 = its default)")
    p.add_argument("--queue", type=int, default=16, help="server queue (16 concurrent need workers + queue >= 16 "
                   "to never see 503)")
    p.add_argument("--threads", type=int, default=1, help="server onnxruntime threads per inference")
    p.add_argument("--detector", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--stalled", type=int, default=0, help="uploads held open after 1 KB of a declared 150 KB body "
                   "during the load")
    p.add_argument("--half-headers", type=int, default=0, help="connections held open half-way through their "
                   "request head during the load")
    p.add_argument("--stalled-one-address", action="store_true", help="open the slow connections from 127.0.0.1 "
                   "(default: one loopback address each, like distinct clients)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--sharing", action="store_true", help="instead: compare a shared Recognizer, one per "
                   "thread and a lock in-process (no HTTP), with --workers threads and --requests images")
    args = p.parse_args(argv)

    if args.scene:
        args.image = "slide5_640x480.jpg"
        data = scene_jpeg()
    else:
        data = Path(args.image).read_bytes()
    if args.sharing:
        sharing_benchmark(data, args.workers or 2, args.requests, args.detector)
        return 0
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args)
    try:
        import httpx

        health = httpx.get(f"{url}/healthz", timeout=5).json()
        summary = asyncio.run(run_load(url, data, args))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary.update(server={k: health.get(k) for k in ("model", "detector", "workers", "max_in_flight")},
                   image=Path(args.image).name, cpus=os.cpu_count(),
                   loadavg_1m=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
    if args.json:
        print(json.dumps(summary))
    else:
        s = summary
        print(f"{s['requests']} × POST /v1/{s['endpoint']} ({s['image']}), {s['concurrency']} concurrent; server "
              f"{s['server']['model']} + {s['server']['detector']}, {s['server']['workers']} workers, "
              f"{s['server']['max_in_flight']} slots; {s['cpus']} CPUs, load {s['loadavg_1m']}")
        print(f"  throughput {s['throughput_rps']} req/s over {s['wall_s']} s")
        print(f"  latency (200s) p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, "
              f"max {s['max_ms']} ms")
        print(f"  status {s['status']}; 5xx other than 503: {s['http_5xx_excluding_503']}; 503 (saturated, "
              f"Retry-After): {s['http_503']}; transport errors: {s['transport_errors']}")
        print(f"  /healthz during the load: p50 {s['healthz_p50_ms']} ms, max {s['healthz_max_ms']} ms")
        if s["retry_after_s"]:
            print(f"  Retry-After on 503: {s['retry_after_s']}")
        if s["slow_clients"]:
            print(f"  slow clients at the end of the load: {s['slow_clients']}")
    return 1 if summary["http_5xx_excluding_503"] or summary["transport_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
