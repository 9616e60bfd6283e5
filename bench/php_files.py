"""PHP session files: sessionctl against find on N sess_* files in 2 levels of subfolders.

    .venv/bin/python bench/php_files.py 10000 1000000

Each size: N files as mod_files.c writes them (`sess_<26 chars>`, 0600, `user_id|i:N;...`)
spread over the 32x32 subfolders of save_path "2;DIR", half of them older than 24 minutes
(mtime). Compared on hard-linked copies of one tree (same inodes, same cache):
- `stats` with `find DIR -name 'sess_*' -type f | wc -l`;
- `cleanup --expired` (archiving) with `find DIR -name 'sess_*' -type f -mmin +24 -delete`.
Peak memory is the maximum resident set size (stats with and without the group role: counting
a million distinct users is memory of its own).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSIONCTL = str(Path(sys.executable).with_name("sessionctl"))
CHARS = "0123456789abcdefghijklmnopqrstuv"


def generate(root: Path, count: int) -> None:
    rng = random.Random(1)
    now = time.time()
    for a in CHARS:
        for b in CHARS:
            (root / a / b).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        sid = "".join(rng.choice(CHARS) for _ in range(26))
        path = os.path.join(root, sid[0], sid[1], "sess_" + sid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b'user_id|i:%d;name|s:3:"ann";' % (n % 5000))
        os.close(fd)
        age = 3000 if n % 2 else 100
        os.utime(path, (now - age, now - age))


def timed(argv: list[str], **kwargs) -> tuple[float, float]:
    """(seconds, peak MB) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main(sizes: list[int]) -> None:
    print(
        "| files | stats | find \\| wc -l | ratio | cleanup --expired | find -mmin -delete | "
        "ratio | peak MB stats (no group) | peak MB cleanup |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in sizes:
        work = Path(tempfile.mkdtemp(prefix="sessionctl-php-bench-"))
        try:
            env = {**os.environ, "SESSIONCTL_STATE_DIR": str(work / "state")}
            tree, copy = work / "tree", work / "copy"
            generate(tree, count)
            subprocess.run(["cp", "-al", tree, copy], check=True)
            store = f"php:2;{tree}"
            find_count, _ = timed(["sh", "-c", f"find {copy} -name 'sess_*' -type f | wc -l"])
            stats, _ = timed([SESSIONCTL, "stats", "--store", store, "-f", "json"], env=env)
            # A fresh process per measure: ru_maxrss of children is the largest so far.
            peak_stats = _peak(
                [SESSIONCTL, "stats", "--store", store, "-f", "json", "--field", "group="], env
            )
            find_delete, _ = timed(
                ["find", copy, "-name", "sess_*", "-type", "f", "-mmin", "+24", "-delete"]
            )
            peak_cleanup = None
            start = time.perf_counter()
            peak_cleanup = _peak(
                [SESSIONCTL, "cleanup", "--store", store, "--expired", "--yes", "-f", "json"], env
            )
            cleanup = time.perf_counter() - start
            print(
                f"| {count:,} | {stats:.2f}s | {find_count:.2f}s | {stats / find_count:.1f} "
                f"| {cleanup:.2f}s | {find_delete:.2f}s | {cleanup / find_delete:.1f} "
                f"| {peak_stats:.1f} | {peak_cleanup:.1f} |",
                flush=True,
            )
        finally:
            shutil.rmtree(work)


def _peak(argv: list[str], env: dict) -> float:
    """Peak MB of one command, measured by /usr/bin/time in its own process."""
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *argv],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return int(done.stderr.strip().splitlines()[-1]) / 1024


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
