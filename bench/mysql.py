"""MySQL/MariaDB figures: sessionctl against the mysql client on a Django session table.

    .venv/bin/python bench/mysql.py                 # 1,000,000 rows (and 10,000 for memory)
    .venv/bin/python bench/mysql.py --rows 100000   # a shorter run

The server: $SESSIONCTL_TEST_MYSQL (as for the tests; by default mysql://root@127.0.0.1:3306),
MariaDB (the table is made with its sequence engine). Each measured run works on a fresh
django_session made by Django's migrations and filled by tests/mysql.py's django_mysql_bulk
(keys "bulk" + 28 digits, half expired, spread through the key order).

Measured:
- cleanup at default settings (archive included) vs
  `mysql -e "DELETE FROM django_session WHERE expire_date < UTC_TIMESTAMP(6)"`; while each
  runs, an application (tests/mysql.py's busy Django application: Django's own UPDATE on random
  sessions, expired ones too) saves sessions, and its worst wait for a statement is reported:
  the longest any lock of the tool kept it waiting;
- stats vs the equivalent aggregate query in the mysql client;
- peak memory (maximum resident set size) of the cleanup at the full size and at 10,000 rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mysql import (  # noqa: E402
    connect_args,
    create_database,
    django_busy_application,
    django_mysql_bulk,
    drop_database,
    server_url,
)

DATA = ROOT / "bench" / "data"
SESSIONCTL = str(Path(sys.executable).parent / "sessionctl")


def timed(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak MB, exit status) of one run. The peak is GNU time's: the resident set a
    child inherits from this (large) process until it execs would count in ru_maxrss."""
    peak_file = DATA / "mysql-peak.txt"
    started = time.monotonic()
    process = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds = time.monotonic() - started
    if process.returncode:
        print(process.stderr.decode(), file=sys.stderr)
    peak_kb = int(peak_file.read_text().split()[-1])
    return seconds, peak_kb / 1024, process.returncode


def fresh(n: int):
    db = create_database(server_url())
    started = time.monotonic()
    made = django_mysql_bulk(db, n)
    print(f"  made {n:,} rows ({made['expired']:,} expired) in {time.monotonic() - started:.1f}s")
    return db


def mysql_client(db, sql: str) -> list[str]:
    args = connect_args(db.url)
    argv = ["mysql", "-u", args["user"], db.name, "-e", sql]
    if "unix_socket" in args:
        return [*argv[:1], "-S", args["unix_socket"], *argv[1:]]
    return [*argv[:1], "-h", args["host"], "-P", str(args["port"]), *argv[1:]]


def with_application(n: int, argv_for, env: dict):
    db = fresh(n)
    try:
        keys = [r[0] for r in db.query("SELECT session_key FROM django_session LIMIT 20000")]
        app = django_busy_application(db, keys, threads=2, lock_wait_timeout=50)
        with app:
            app.wait_for_writes(20)
            seconds, peak, status = timed(argv_for(db), env)
        return seconds, peak, status, app, len(app.lost())
    finally:
        drop_database(db)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(DATA / "mysql-state"), "NO_COLOR": "1"}
    for name in ("SESSIONCTL_CONFIG", "SESSIONCTL_STORE", "SESSIONCTL_PUSHDOWN"):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(DATA / "no-config")

    def ours_cleanup(db):
        return [SESSIONCTL, "cleanup", "--store", db.address(), "--expired", "--quiet"]

    def client_delete(db):
        return mysql_client(db, "DELETE FROM django_session WHERE expire_date < UTC_TIMESTAMP(6)")

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    small = fresh(10_000)
    try:
        seconds, peak, status = timed(ours_cleanup(small), env)
    finally:
        drop_database(small)
    say(
        f"{'sessionctl cleanup':20s} {10_000:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}"
    )
    db = fresh(args.rows)
    try:
        query = (
            "SELECT COUNT(*), SUM(expire_date < UTC_TIMESTAMP(6)), MIN(expire_date),"
            " MAX(expire_date) FROM django_session"
        )
        for _ in range(args.runs):
            for label, argv in (
                ("sessionctl stats", [SESSIONCTL, "stats", "--store", db.address(), "-f", "json"]),
                ("mysql aggregate", mysql_client(db, query)),
            ):
                seconds, peak, status = timed(argv, env)
                say(
                    f"{label:20s} {args.rows:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}"
                )
    finally:
        drop_database(db)
    for label, argv_for in (("sessionctl cleanup", ours_cleanup), ("mysql DELETE", client_delete)):
        for _ in range(args.runs):
            seconds, peak, status, app, lost = with_application(args.rows, argv_for, env)
            say(
                f"{label:20s} {args.rows:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}"
                f"  app: {app.writes} writes, worst wait {app.slowest * 1000:7.1f} ms,"
                f" deadlocks/timeouts {app.errors or 0}, lost {lost}"
            )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (ROOT / "bench" / "RESULTS-mysql.md").write_text(
        f"# MySQL/MariaDB figures\n\nWritten by bench/mysql.py on {stamp} ({args.runs} run(s) "
        "each, MariaDB on the same machine).\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
