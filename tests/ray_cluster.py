"""A small real Ray cluster on this machine, on loopback: a head and further nodes, each its own raylet.

Used by tests/test_ray.py (when ``FERKIT_RAY_ADDRESS`` is not set), benchmarks/bench_ray.py and
.ci/run::

    python -m tests.ray_cluster start --nodes 2 --temp-dir /tmp/ferkit-ray   # prints the address
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/ferkit-ray/auth_token  # for clients (auth_env)
    python -m tests.ray_cluster stop --temp-dir /tmp/ferkit-ray

Stopping ends only this cluster's processes, found by PID: every process whose command line names
the cluster's own ``--temp-dir`` (GCS, raylets, monitors) and their descendants (the workers) —
never other Ray clusters on the machine, as a plain ``ray stop`` would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ENV_ADDRESS = "FERKIT_RAY_ADDRESS"


def auth_env(temp_dir: str) -> dict[str, str]:
    """Environment a client needs to join the cluster: token authentication with the cluster's own token.

    Explicit on purpose: Ray 2.60 turns token auth on for a head when ``~/.ray/auth_token`` exists
    (any local ``ray.init()`` writes one) but not for a joining node, which then cannot connect.
    """
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(Path(temp_dir) / "auth_token")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _common(cpus: int, object_store_mb: int) -> list[str]:
    return ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0",
            "--object-store-memory", str(object_store_mb * 1024 * 1024), "--disable-usage-stats"]


def start(nodes: int = 2, cpus: int = 1, temp_dir: str | None = None, object_store_mb: int = 100,
          timeout: float = 90.0) -> tuple[str, str]:
    """Start a head and ``nodes - 1`` more nodes; returns (GCS address, temp dir). Waits until all are alive."""
    created = temp_dir is None
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="ferkit-ray-", dir="/tmp")  # short: socket paths <= 107 bytes
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    token = Path(temp_dir) / "auth_token"
    token.touch(mode=0o600)
    token.write_text(uuid.uuid4().hex)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth_env(temp_dir)}
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([_ray_cli(), "start", "--head", "--port", str(port), "--include-dashboard=false",
                        "--temp-dir", temp_dir, *_common(cpus, object_store_mb)],
                       check=True, env=env, capture_output=True, text=True, timeout=timeout)
        for _ in range(nodes - 1):
            subprocess.run([_ray_cli(), "start", "--address", address, *_common(cpus, object_store_mb)],
                           check=True, env=env, capture_output=True, text=True, timeout=timeout)
        _wait_for_nodes(address, nodes, timeout, env)
    except BaseException as e:
        stop(temp_dir)
        if created:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if isinstance(e, subprocess.CalledProcessError):
            raise RuntimeError(f"ray start failed: {e.stderr[-2000:]}") from None
        raise
    (Path(temp_dir) / "address").write_text(address)
    return address, temp_dir


def _wait_for_nodes(address: str, nodes: int, timeout: float, env: dict[str, str]) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes())); ray.shutdown()")
    deadline = time.time() + timeout
    while True:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=timeout,
                             env=env)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(nodes)]:
            return
        if time.time() > deadline:
            raise RuntimeError(f"Ray cluster at {address} did not reach {nodes} nodes: {out.stdout} {out.stderr}")
        time.sleep(1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(Path(d, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def cluster_pids(temp_dir: str) -> list[int]:
    """PIDs of the cluster started with ``temp_dir``: its daemons and all their descendants."""
    marker = os.path.realpath(temp_dir) + "/"  # the daemons name files inside it (session_*/logs, sockets)
    kids = _children()
    me, parent = set(), {c: p for p, cs in kids.items() for c in cs}
    pid = os.getpid()
    while pid > 1:  # never this process or the shell that started it
        me.add(pid)
        pid = parent.get(pid, 1)
    roots = [int(d.name) for d in Path("/proc").iterdir()
             if d.name.isdigit() and int(d.name) not in me and marker in _cmdline(int(d.name))]
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += kids.get(pid, [])
    return sorted(found)


def worker_pids(temp_dir: str, name: str) -> list[int]:
    """PIDs of this cluster's worker processes whose title names ``name`` (e.g. an actor class)."""
    return [p for p in cluster_pids(temp_dir) if _cmdline(p).startswith("ray::") and name in _cmdline(p)]


def stop(temp_dir: str, grace: float = 5.0) -> int:
    """SIGTERM this cluster's processes, SIGKILL what is left after ``grace`` seconds; returns how many."""
    pids = cluster_pids(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() and _cmdline(p) for p in pids):
            time.sleep(0.2)
    return len(pids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.ray_cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=1, help="CPUs per node")
    ap.add_argument("--temp-dir", default=None, help="the cluster's Ray temp dir (its identity for stop)")
    args = ap.parse_args(argv)
    if args.action == "start":
        address, temp_dir = start(args.nodes, args.cpus, args.temp_dir)
        print(address)
        print(f"started {args.nodes} node(s) at {address}, temp dir {temp_dir}", file=sys.stderr)
    else:
        if not args.temp_dir:
            ap.error("stop needs --temp-dir")
        print(f"stopped {stop(args.temp_dir)} process(es)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
