"""PostgreSQL figures: sessionctl against psql on a Django session table.

    .venv/bin/python bench/postgres.py                 # 1,000,000 rows (and 10,000 for memory)
    .venv/bin/python bench/postgres.py --rows 100000   # a shorter run

The server: $SESSIONCTL_BENCH_PG (a postgresql:// URL that may create databases), by default
postgresql://postgres@127.0.0.1:5432/postgres. A template database holds Django's table
(session_key varchar(40) primary key of random 32-character keys, session_data text,
expire_date timestamptz with its index), half of the sessions expired; every measured run works
on a fresh copy of it (CREATE DATABASE ... TEMPLATE), so each cleanup empties a real table.

Measured:
- cleanup at default settings (archive included) vs
  `psql -c "DELETE FROM django_session WHERE expire_date < now()"`; while each runs, an
  application thread keeps updating random sessions (expired ones too) and the worst wait of one
  of its statements is reported;
- stats vs the equivalent aggregate query in psql;
- peak memory (maximum resident set size) of the cleanup at the full size and at 10,000 rows.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
SESSIONCTL = str(Path(sys.executable).parent / "sessionctl")
SERVER = os.environ.get("SESSIONCTL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEMPLATE = "sessionctl_bench_template_{n}"
WORK = "sessionctl_bench_work"


def url(db: str) -> str:
    return SERVER.rsplit("/", 1)[0] + "/" + db


def admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql)


def make_template(n: int) -> str:
    name = TEMPLATE.format(n=n)
    with psycopg.connect(SERVER, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        conn.execute(f'CREATE DATABASE "{name}"')
    started = time.monotonic()
    with psycopg.connect(url(name), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY,"
            " session_data text NOT NULL, expire_date timestamptz NOT NULL)"
        )
        conn.execute(
            "CREATE INDEX django_session_expire_date_a5c62663 ON django_session (expire_date)"
        )
        # Random 32-character keys; half expired (up to 14 days ago), half not (up to 14 ahead).
        conn.execute(
            "INSERT INTO django_session SELECT"
            " substr(md5(random()::text) || md5(random()::text), 1, 32),"
            " 'eyJ1c2VyX2lkIjo0Mn0:1tq5cE:' || md5(g::text),"
            " now() + (CASE WHEN g %% 2 = 0 THEN 1 ELSE -1 END) * random() * interval '14 days'"
            " FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
            (n,),
        )
        conn.execute("VACUUM ANALYZE django_session")
    print(f"  made {name} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return name


def fresh_copy(template: str) -> str:
    admin(f'DROP DATABASE IF EXISTS "{WORK}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{WORK}" TEMPLATE "{template}"')
    return url(WORK)


class Application(threading.Thread):
    """Updates random sessions as an application would, timing each statement."""

    def __init__(self, dsn: str, keys: list[str]):
        super().__init__(daemon=True)
        self.dsn, self.keys = dsn, keys
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                started = time.monotonic()
                conn.execute(
                    "UPDATE django_session SET expire_date = expire_date WHERE session_key = %s",
                    (key,),
                )
                self.waits.append(time.monotonic() - started)
                time.sleep(0.002)


def timed(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak MB, exit status) of one run."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if status:
        print(process.stderr.read().decode(), file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def with_application(template: str, argv_for, env: dict):
    dsn = fresh_copy(template)
    with psycopg.connect(dsn) as conn:
        keys = [r[0] for r in conn.execute("SELECT session_key FROM django_session LIMIT 20000")]
    app = Application(dsn, keys)
    app.start()
    time.sleep(0.3)
    try:
        seconds, peak, status = timed(argv_for(dsn), env)
    finally:
        app.stop.set()
        app.join()
    return seconds, peak, status, max(app.waits), statistics.median(app.waits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(DATA / "pg-state"), "NO_COLOR": "1"}
    for name in ("SESSIONCTL_CONFIG", "SESSIONCTL_STORE", "SESSIONCTL_PUSHDOWN"):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(DATA / "no-config")
    big, small = make_template(args.rows), make_template(10_000)

    def ours_cleanup(dsn):
        return [SESSIONCTL, "cleanup", "--store", dsn, "--expired", "--quiet"]

    def psql_delete(dsn):
        return ["psql", "-q", dsn, "-c", "DELETE FROM django_session WHERE expire_date < now()"]

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    for label, argv_for in (("sessionctl cleanup", ours_cleanup), ("psql DELETE", psql_delete)):
        for _ in range(args.runs):
            seconds, peak, status, worst, median = with_application(big, argv_for, env)
            say(
                f"{label:20s} {args.rows:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}"
                f"  app worst wait {worst * 1000:7.1f} ms (median {median * 1000:.2f} ms)"
            )
    dsn = fresh_copy(big)
    query = (
        "SELECT count(*), count(*) FILTER (WHERE expire_date < now()),"
        " min(expire_date), max(expire_date) FROM django_session"
    )
    for _ in range(args.runs):
        for label, argv in (
            ("sessionctl stats", [SESSIONCTL, "stats", "--store", dsn, "--format", "json"]),
            ("psql aggregate", ["psql", "-q", dsn, "-c", query]),
        ):
            seconds, peak, status = timed(argv, env)
            say(f"{label:20s} {args.rows:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}")
    seconds, peak, status = timed(ours_cleanup(fresh_copy(small)), env)
    say(
        f"{'sessionctl cleanup':20s} {10_000:>9,} {seconds:7.2f}s peak {peak:6.1f} MB exit {status}"
    )
    admin(f'DROP DATABASE IF EXISTS "{WORK}" WITH (FORCE)')
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (ROOT / "bench" / "RESULTS-postgres.md").write_text(
        f"# PostgreSQL figures\n\nWritten by bench/postgres.py on {stamp} ({args.runs} run(s) "
        "each, the server on the same machine).\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
