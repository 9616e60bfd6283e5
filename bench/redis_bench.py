"""Redis figures of issue 13: sessionctl against redis-cli on N connect-redis sessions.

    .venv/bin/python bench/redis_bench.py 10000 100000

Starts a redis-server of its own on a free loopback port (no persistence), fills it with N
`sess:<sid>` JSON sessions (TTL one day, as connect-redis writes them), and times:
- `sessionctl stats` against `redis-cli --scan --pattern 'sess:*' | wc -l`;
- `sessionctl cleanup --all --yes --no-archive` against
  `redis-cli --scan --pattern 'sess:*' | xargs redis-cli unlink` (each on a fresh fill);
- peak memory (max RSS of the child) of both sessionctl runs;
- Redis's own latency during the cleanup (`redis-cli --latency` in a side process, max ms).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(client, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    now = time.time()
    for i in range(n):
        sess = {
            "cookie": {
                "originalMaxAge": 86400000,
                "expires": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + 86400)),
                "httpOnly": True,
                "path": "/",
            },
            "user": f"user{i % 1000}",
        }
        pipe.set(f"sess:{i:020d}", json.dumps(sess), ex=86400)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def timed(argv, shell=False, env=None) -> tuple[float, float]:
    """Seconds, and peak RSS (MB) of the child processes of this run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(argv, shell=shell, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{argv} failed: {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before) / 1024


def main(sizes: list[int]) -> None:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="sessionctl-redis-bench-"))
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(folder / "state")}
    address = f"redis://127.0.0.1:{port}/0"
    cli = f"redis-cli -p {port}"
    rows = []
    try:
        for n in sizes:
            client.flushdb()
            fill(client, n)
            base, _ = timed(f"{cli} --scan --pattern 'sess:*' | wc -l", shell=True)
            ours, peak_stats = timed([BIN / "sessionctl", "stats", "--store", address], env=env)
            rows.append(("stats", n, ours, base, peak_stats))
            base, _ = timed(
                f"{cli} --scan --pattern 'sess:*' | xargs {cli} unlink > /dev/null", shell=True
            )
            fill(client, n)
            latency = subprocess.Popen(
                ["redis-cli", "-p", str(port), "--latency", "--raw"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            argv = [BIN / "sessionctl", "cleanup", "--store", address, "--all", "--yes",
                    "--no-archive", "-q"]  # fmt: skip
            ours, peak_clean = timed(argv, env=env)
            latency.terminate()
            out = latency.communicate(timeout=10)[0].split()
            max_ms = float(out[1]) if len(out) > 1 else float("nan")
            assert client.dbsize() <= 1, client.dbsize()  # the lock key is gone too
            rows.append(("cleanup --all", n, ours, base, peak_clean, max_ms))
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print("| run | sessions | sessionctl | redis-cli | ratio | peak MB | max latency ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        what, n, ours, base, peak = row[:5]
        extra = f"{row[5]:.0f}" if len(row) > 5 else "-"
        print(
            f"| {what} | {n:,} | {ours:.2f}s | {base:.2f}s | {ours / base:.2f} | {peak:.0f} | {extra} |"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
