"""The benchmark suite: sessionctl against the tool an operator would otherwise reach for.

    make bench                      # everything, writes bench/RESULTS.md (about 25 minutes)
    make bench-quick                # 100k cases (folder 10k), start-up; printed (< 3 minutes)
    .venv/bin/python bench/run.py --only json   # the comparisons whose name holds "json"

Stores are generated relative to now, half of their sessions expired, under bench/data/
(git-ignored). Every measured run works on a fresh copy of the store, so each run reads, and
for cleanups empties, a real store: nothing is cached or precomputed. sessionctl and its
baseline alternate, run after run; the report gives medians, their ratio, and peak memory
(maximum resident set size of the process, from wait4).

Comparisons (the task for both sides is the same):
- SQLite cleanup of expired sessions vs `sqlite3 DB "DELETE FROM ... WHERE <expiry> <= <now>"`,
  without and with sessionctl's default archive; Django-shaped table (expiry column indexed)
  and connect-sqlite3-shaped table (no index).
- SQLite stats vs one `sqlite3` query computing total, expired, oldest and newest expiry.
- JSON file cleanup vs `jq` keeping the sessions that stay, its output renamed over the file:
  a flat compact array (seed 003's bash sessions) and a nested indented one (express-session
  sessions, the expiry at sess.cookie.expires).
- Start-up: `sessionctl stats` on an empty store vs `python -c "import typer"`.
- Folder cleanup vs `find DIR -name '*.json' -mmin +N -delete` (file times set to the
  sessions' last access) and vs a plain Python loop that reads each file's timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where stores are generated and copied; SESSIONCTL_BENCH_DATA gives two runs at once (on a
#: shared machine) folders of their own.
DATA = Path(os.environ.get("SESSIONCTL_BENCH_DATA") or ROOT / "bench" / "data")
BIN = Path(sys.executable).parent
SESSIONCTL = str(BIN / "sessionctl")
DAY = 86400.0
NOW = time.time()
LOAD_AT_START = os.getloadavg()[0]


def sql_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


# --- store generators ------------------------------------------------------------------------


def make_django(path: Path, n: int) -> None:
    """django_session with its index on expire_date; half the sessions expired."""
    rng = random.Random(n)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute(
        "CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY,"
        " session_data text NOT NULL, expire_date datetime NOT NULL)"
    )
    conn.execute("CREATE INDEX django_session_expire_date ON django_session (expire_date)")
    payload = "eyJfYXV0aF91c2VyX2lkIjoiNDIifQ:1sessionctl:signature-of-forty-odd-characters"
    rows = (
        (
            f"{rng.getrandbits(128):032x}",
            payload,
            sql_time(NOW + (rng.uniform(60, 14 * DAY) if i % 2 else -rng.uniform(60, 14 * DAY))),
        )
        for i in range(n)
    )
    conn.executemany("INSERT INTO django_session VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()


def make_express(path: Path, n: int) -> None:
    """connect-sqlite3's sessions table: expired in epoch ms, no index on it."""
    rng = random.Random(n + 1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE sessions (sid PRIMARY KEY, expired, sess)")

    def row(i):
        expires = NOW + (rng.uniform(60, 7 * DAY) if i % 2 else -rng.uniform(60, 7 * DAY))
        cookie = {
            "originalMaxAge": 86400000,
            "expires": iso(expires),
            "httpOnly": True,
            "path": "/",
        }
        sess = json.dumps(
            {"cookie": cookie, "passport": {"user": f"u{i % 97}"}}, separators=(",", ":")
        )
        return f"{rng.getrandbits(96):024x}", int(expires * 1000), sess

    conn.executemany("INSERT INTO sessions VALUES (?, ?, ?)", (row(i) for i in range(n)))
    conn.commit()
    conn.close()


def make_json(path: Path, n: int) -> None:
    """A bash-sessions style array (seed 003): idle timeout 1h on last_used, half idle."""
    rng = random.Random(n + 2)
    records = []
    for i in range(n):
        used = NOW - (rng.uniform(10, 50 * 60) if i % 2 else rng.uniform(2 * 3600, 3 * DAY))
        records.append(
            {
                "session_id": f"bash_ws{i % 50}_{i:08x}",
                "workspace_name": f"workspace{i % 50}",
                "created_at": used - rng.uniform(0, 3600),
                "last_used": used,
            }
        )
    path.write_text(json.dumps(records, separators=(",", ":")))


def make_folder(path: Path, n: int) -> None:
    """One file per browser session (seed 001); file times match last access for `find`."""
    rng = random.Random(n + 3)
    path.mkdir(parents=True)
    for i in range(n):
        accessed = NOW - (rng.uniform(60, 6 * DAY) if i % 2 else rng.uniform(8 * DAY, 40 * DAY))
        name = f"browser-{i:07d}"
        record = {
            "session_id": name,
            "cdp_url": f"ws://127.0.0.1:9222/devtools/browser/{i:08x}",
            "browser_type": "chromium",
            "created_at": iso(accessed - 3600),
            "last_accessed": iso(accessed),
        }
        file = path / f"{name}.json"
        file.write_text(json.dumps(record))
        os.utime(file, (accessed, accessed))


def make_json_nested(path: Path, n: int) -> None:
    """express-session sessions kept in one indented array: the expiry at sess.cookie.expires
    (ISO text), as connect-redis or a file store keeps them; half expired."""
    rng = random.Random(n + 4)
    records = []
    for i in range(n):
        expires = NOW + (rng.uniform(60, 7 * DAY) if i % 2 else -rng.uniform(60, 7 * DAY))
        cookie = {
            "originalMaxAge": 86400000,
            "expires": iso(expires),
            "httpOnly": True,
            "path": "/",
        }
        sess = {"cookie": cookie, "passport": {"user": f"u{i % 97}"}, "flash": {}}
        records.append({"sid": f"{rng.getrandbits(128):032x}", "sess": sess})
    path.write_text(json.dumps(records, indent=2))


def make_empty(path: Path, n: int) -> None:
    path.write_text("[]\n")


GENERATORS = {
    "django": make_django,
    "express": make_express,
    "json": make_json,
    "json-nested": make_json_nested,
    "folder": make_folder,
    "empty": make_empty,
}
SUFFIX = {
    "django": ".db",
    "express": ".db",
    "json": ".json",
    "json-nested": ".json",
    "folder": "",
    "empty": ".json",
}


def source(kind: str, n: int) -> Path:
    path = DATA / f"{kind}-{n}{SUFFIX[kind]}"
    if not path.exists():
        started = time.monotonic()
        GENERATORS[kind](path, n)
        print(f"  generated {path.name} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return path


def fresh_copy(original: Path) -> Path:
    target = DATA / "work" / original.name
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    for suffix in ("-wal", "-shm", "-journal", ".bak"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if original.is_dir():
        subprocess.run(["cp", "-r", str(original), str(target)], check=True)
        for file in original.iterdir():  # cp -r does not keep the times `find` selects on
            info = file.stat()
            os.utime(target / file.name, ns=(info.st_atime_ns, info.st_mtime_ns))
    else:
        shutil.copyfile(original, target)
    return target


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    peak_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_mb(self) -> float:
        return max(self.peak_kb) / 1024


def measure(argv: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command.

    The peak comes from GNU time: a child forked straight from this (large) Python process
    would count the parent's pages it inherited before exec. time's own start-up (about a
    millisecond) lands on both sides of every comparison alike.
    """
    report = DATA / "time.out"
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(report), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed, int(report.read_text().split()[-1])


@dataclass
class Case:
    name: str
    kind: str
    size: int
    ours: list[str]  # {store} is replaced by the fresh copy's path
    theirs: list[str]
    destructive: bool = True
    #: Runs of each side, when not the suite's (a short command needs more to settle).
    runs: int | None = None
    ours_sample: Sample = field(default_factory=Sample)
    theirs_sample: Sample = field(default_factory=Sample)


def run_case(case: Case, runs: int, env: dict) -> None:
    original = source(case.kind, case.size)
    for _ in range(case.runs or runs):
        for argv, sample in ((case.ours, case.ours_sample), (case.theirs, case.theirs_sample)):
            store = (
                fresh_copy(original)
                if case.destructive or not sample.seconds
                else DATA / "work" / original.name
            )
            state = DATA / "state"
            shutil.rmtree(state, ignore_errors=True)
            concrete = [part.replace("{store}", str(store)) for part in argv]
            if concrete[0] == "sh":
                concrete = ["sh", "-c", " ".join(concrete[2:])]
            seconds, peak = measure(concrete, env)
            sample.seconds.append(seconds)
            sample.peak_kb.append(peak)
    ratio = case.ours_sample.median / case.theirs_sample.median
    print(
        f"{case.name:<44} {case.size:>8}  ours {case.ours_sample.median:7.3f}s"
        f"  baseline {case.theirs_sample.median:7.3f}s  ratio {ratio:5.2f}"
        f"  peak {case.ours_sample.peak_mb:6.1f} / {case.theirs_sample.peak_mb:6.1f} MB"
        f"  load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )


def cases(sizes: dict[str, list[int]]) -> list[Case]:
    now_text = sql_time(NOW + 120)  # a whisker after the run starts, like sessionctl's now
    now_ms = int((NOW + 120) * 1000)
    out: list[Case] = []
    cleanup = [SESSIONCTL, "cleanup", "--store", "{store}", "--expired", "--quiet"]
    for kind, table, condition in (
        ("django", "django_session", f"expire_date <= '{now_text}'"),
        ("express", "sessions", f"expired <= {now_ms}"),
    ):
        delete = ["sqlite3", "{store}", f"DELETE FROM {table} WHERE {condition}"]
        for n in sizes["sqlite"]:
            out.append(
                Case(
                    f"sqlite {kind} cleanup, no archive",
                    kind,
                    n,
                    cleanup + ["--no-archive"],
                    delete,
                )
            )
            out.append(Case(f"sqlite {kind} cleanup, archive", kind, n, cleanup, delete))
            expiry = "expire_date" if kind == "django" else "expired"
            query = f"SELECT COUNT(*), SUM({condition}), MIN({expiry}), MAX({expiry}) FROM {table}"
            out.append(
                Case(
                    f"sqlite {kind} stats",
                    kind,
                    n,
                    [SESSIONCTL, "stats", "--store", "{store}", "--format", "json"],
                    ["sqlite3", "{store}", query],
                    destructive=False,
                )
            )
    cutoff = NOW - 3600
    now_iso = iso(NOW + 120)
    for n in sizes["json"]:
        jq = f"jq -c '[.[] | select(.last_used >= {cutoff})]' {{store}} > {{store}}.tmp && mv {{store}}.tmp {{store}}"
        out.append(
            Case("json flat cleanup vs jq", "json", n, cleanup + ["--no-archive"], ["sh", "-c", jq])
        )
        # jq's default output is the file's own style here (two-space indent).
        jq = f"""jq '[.[] | select(.sess.cookie.expires > "{now_iso}")]' {{store}} > {{store}}.tmp && mv {{store}}.tmp {{store}}"""
        out.append(
            Case(
                "json nested cleanup vs jq",
                "json-nested",
                n,
                cleanup + ["--no-archive"],
                ["sh", "-c", jq],
            )
        )
    out.append(
        Case(
            "start-up: stats on an empty store vs import typer",
            "empty",
            0,
            [SESSIONCTL, "stats", "--store", "{store}", "--format", "json"],
            [sys.executable, "-c", "import typer"],
            destructive=False,
            runs=11,
        )
    )
    minutes = int(7 * 24 * 60)
    loop = str(ROOT / "bench" / "python_loop.py")
    for n in sizes["folder"]:
        find = ["find", "{store}", "-name", "*.json", "-mmin", f"+{minutes}", "-delete"]
        out.append(Case("folder cleanup vs find", "folder", n, cleanup + ["--no-archive"], find))
        out.append(
            Case(
                "folder cleanup vs python loop",
                "folder",
                n,
                cleanup + ["--no-archive"],
                [sys.executable, loop, "{store}"],
            )
        )
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    jq = subprocess.run(["jq", "--version"], capture_output=True, text=True).stdout.strip()
    sqlite_cli = subprocess.run(
        ["sqlite3", "--version"], capture_output=True, text=True
    ).stdout.split()[0]
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; "
        f"Python {platform.python_version()} (SQLite {sqlite3.sqlite_version}), sqlite3 CLI {sqlite_cli}, {jq}"
    )


def report(all_cases: list[Case], runs: int, elapsed: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"in {elapsed / 60:.1f} minutes; {runs} runs of each side, alternating, medians shown.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Load (1-minute average, the machine is shared): {LOAD_AT_START:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end.",
        "",
        "Every run works on a fresh copy of a store generated relative to now with half of its",
        "sessions expired. Peak memory is the maximum resident set size of the process.",
        "",
        "| comparison | sessions | sessionctl | baseline | ratio | peak MB sessionctl | peak MB baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in all_cases:
        ours, theirs = case.ours_sample, case.theirs_sample
        lines.append(
            f"| {case.name} | {case.size:,} | {ours.median:.3f}s | {theirs.median:.3f}s | "
            f"{ours.median / theirs.median:.2f} | {ours.peak_mb:.1f} | {theirs.peak_mb:.1f} |"
        )
    lines += [
        "",
        "## Growth",
        "",
        "| comparison | time 10k → 100k | time 100k → 1M | peak MB at smallest → largest |",
        "|---|---:|---:|---:|",
    ]
    by_name: dict[str, dict[int, Case]] = {}
    for case in all_cases:
        by_name.setdefault(case.name, {})[case.size] = case
    for name, sized in by_name.items():
        sizes = sorted(sized)
        if len(sizes) < 2:
            continue
        steps = []
        for small, large in zip(sizes, sizes[1:]):
            steps.append(
                f"×{sized[large].ours_sample.median / sized[small].ours_sample.median:.1f} ({small:,}→{large:,})"
            )
        first, last = sized[sizes[0]].ours_sample.peak_mb, sized[sizes[-1]].ours_sample.peak_mb
        lines.append(
            f"| {name} | {steps[0]} | {steps[1] if len(steps) > 1 else '-'} | {first:.1f} → {last:.1f} (×{last / first:.2f}) |"
        )
    lines += ["", "## Targets", ""]
    lines += targets(by_name)
    return "\n".join(lines) + "\n"


def targets(by_name: dict[str, dict[int, Case]]) -> list[str]:
    rows = ["| target | measured | verdict |", "|---|---|---|"]

    def ratio(case: Case) -> float:
        return case.ours_sample.median / case.theirs_sample.median

    def check(label: str, value: float, limit: float, fmt: str = "{:.2f}") -> None:
        rows.append(
            f"| {label} ≤ {limit:g} | {fmt.format(value)} | {'met' if value <= limit else 'MISSED'} |"
        )

    for name, sized in by_name.items():
        largest = sized[max(sized)]
        if "no archive" in name:
            check(f"{name} ratio at {max(sized):,}", ratio(largest), 1.5)
        elif name.endswith("cleanup, archive") or name.endswith("stats"):
            check(f"{name} ratio at {max(sized):,}", ratio(largest), 3)
        elif name.startswith("json"):
            # Issue 15: at most half jq's time and at most its memory, at 100k and 500k.
            for size in sorted(n for n in sized if n >= 100_000):
                case = sized[size]
                check(f"{name} ratio at {size:,}", ratio(case), 0.5)
                ours, theirs = case.ours_sample.peak_mb, case.theirs_sample.peak_mb
                rows.append(
                    f"| {name} peak memory ≤ jq's at {size:,} | {ours:.0f} MB vs {theirs:.0f} MB | "
                    f"{'met' if ours <= theirs else 'MISSED'} |"
                )
        elif name.startswith("start-up"):
            check(name, ratio(largest), 2)
        elif name == "folder cleanup vs find":
            check(f"{name} ratio at {max(sized):,}", ratio(largest), 3)
        if name.startswith("sqlite") and len(sized) >= 2:
            small, large = min(sized), max(sized)
            check(
                f"{name} peak memory {large:,} / {small:,}",
                sized[large].ours_sample.peak_mb / sized[small].ours_sample.peak_mb,
                1.3,
            )
        if 100_000 in sized and 1_000_000 in sized:
            check(
                f"{name} time 1M / 100k",
                sized[1_000_000].ours_sample.median / sized[100_000].ours_sample.median,
                12,
                "{:.1f}",
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the 100k cases (folder: 10k) and start-up, printed, not written (under 3 minutes)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="run comparisons whose name contains this")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    for tool in ("sqlite3", "jq", "find", "/usr/bin/time"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian packages sqlite3, jq, findutils, time)")
    DATA.mkdir(parents=True, exist_ok=True)
    sizes = (
        # The folder store at 10k: copying 100k files afresh for each of its six runs takes
        # minutes on its own.
        {"sqlite": [100_000], "json": [100_000], "folder": [10_000]}
        if args.quick
        else {
            "sqlite": [10_000, 100_000, 1_000_000],
            "json": [10_000, 100_000, 500_000],
            "folder": [10_000, 100_000],
        }
    )
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(DATA / "state"), "NO_COLOR": "1"}
    for name in (
        "SESSIONCTL_CONFIG",
        "SESSIONCTL_STORE",
        "SESSIONCTL_FORMAT",
        "SESSIONCTL_PUSHDOWN",
    ):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(DATA / "no-config")
    started = time.monotonic()
    chosen = [case for case in cases(sizes) if args.only in case.name]
    if args.quick:  # the slowest pair, and no target rests on it
        chosen = [case for case in chosen if "python loop" not in case.name]
    for case in chosen:
        run_case(case, args.runs, env)
    text = report(chosen, args.runs, time.monotonic() - started)
    if args.quick or args.only:
        print(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    shutil.rmtree(DATA / "work", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
