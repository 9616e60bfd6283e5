"""How big should a cleanup's delete batch be? Time against how long the application waits.

    .venv/bin/python bench/batch_size.py [--sessions 100000] [--sizes 200ms,2000,all]

Each entry of --sizes is a count (`--batch-size N`), `all` (`--batch-size all`, one
transaction) or a duration (`--max-lock`, batches sized by time; `default`: no option).

For each batch size, a fresh copy of a Django-shaped store (half expired) is cleaned while a
second process plays the application: it writes one session per transaction as fast as it can
and records how long each write took (mostly: waiting for cleanup's batch to commit). Reported:
the cleanup's wall time, and the application's median and worst write latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402

APP = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
stop = sys.argv[2]
waits = []
i = 0
import os
while not os.path.exists(stop):
    i += 1
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR REPLACE INTO django_session VALUES (?, 'x', '2099-01-01 00:00:00')",
                 (f"app-{i % 500}",))
    conn.execute("COMMIT")
    waits.append(time.perf_counter() - started)
    time.sleep(0.002)
print(" ".join(f"{w:.6f}" for w in waits))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--sizes", default="default,50ms,500ms,2000,10000,all")
    args = parser.parse_args()
    run.DATA.mkdir(parents=True, exist_ok=True)
    original = run.source("django", args.sessions)
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(run.DATA / "state")}
    print("| batches | cleanup wall time | application write: median | worst |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        if size == "default":
            option = []
        elif size == "all" or size.isdigit():
            option = ["--batch-size", size]
        else:
            option = ["--max-lock", size]
        store = run.fresh_copy(original)
        stop = run.DATA / "stop"
        stop.unlink(missing_ok=True)
        app = subprocess.Popen(
            [sys.executable, "-c", APP, str(store), str(stop)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.3)
        started = time.perf_counter()
        subprocess.run(
            [
                run.SESSIONCTL,
                "cleanup",
                "--store",
                str(store),
                "--expired",
                "-q",
                "--no-archive",
                *option,
            ],
            check=True,
            env=env,
        )
        elapsed = time.perf_counter() - started
        stop.touch()
        waits = [float(w) for w in app.communicate()[0].split()]
        print(
            f"| {size} | {elapsed:.2f}s | {statistics.median(waits) * 1000:.1f} ms |"
            f" {max(waits) * 1000:.0f} ms |"
        )
        shutil.rmtree(run.DATA / "state", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
