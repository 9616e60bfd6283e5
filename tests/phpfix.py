"""Real PHP session files, written by PHP's own file handler (php-cli), for the tests.

PHP: Debian's php-cli (`php` on PATH). When it is missing, a test that needs it is skipped
with a one-line reason, and fails with that line under CI (the CI variable set: .ci/run
installs php-cli).

Fixtures (registered in conftest.py):
- `php_cli`: the path of the php binary, checked once per test session.

Helpers (see tests/php/session_files.php, which they run):
- `php_session_dir(path, depth=0, bits=5, handler="php")`: a `PhpSessionDir`, the folder a
  `session.save_path` names: "DIR", or "N;DIR" with N levels of one-character subfolders,
  created beforehand as PHP's ext/session/mod_files.sh creates them (PHP itself refuses to
  write into a subfolder that does not exist).
- `php_write_sessions(folder, sessions, gc_maxlifetime=1440)`: PHP writes `sess_<id>` files
  (session_start(); $_SESSION = ...; session_write_close()) with the folder's
  serialize_handler (php, php_binary or php_serialize); then each file's mtime (and atime) is
  set to `age` seconds ago: a session is expired for PHP's GC when age > gc_maxlifetime.
  `sessions`: numbers (ages in seconds) or {"age": s, "data": {...} | "php": "PHP expression",
  "sid": optional}. ctime cannot be set: it stays "now" (sessionclean judges by ctime).
- `php_gc(folder, gc_maxlifetime)`: PHP's own session_gc(); which files it removed.
- `php_read_sessions(folder, sids)`: $_SESSION as PHP reads each file back.
- `php_request_holding(folder, sid)`: a running PHP request (session_start(), then sleep) that
  holds flock(LOCK_EX) on the session's file until the block ends.
  `process_holding_flock(path)`: the same lock held by a plain Python process.
- `php_serialize(values)`: PHP's serialize() of each JSON value (bytes), an oracle for parsers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pg import TESTS, Written, unavailable

PHP_DIR = TESTS / "php"
HANDLERS = ("php", "php_binary", "php_serialize")
#: The characters of session ids, by session.sid_bits_per_character (mod_files.sh's hash_chars).
HASH_CHARS = {
    4: "0123456789abcdef",
    5: "0123456789abcdefghijklmnopqrstuv",
    6: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-,",
}
SID_LENGTH = 26  # Debian's php.ini (php.ini-production): session.sid_length = 26


def php_binary() -> str:
    php = shutil.which("php")
    if not php:
        unavailable("php is not installed (Debian package php-cli; .ci/run installs it)")
    return php


@pytest.fixture(scope="session")
def php_cli() -> str:
    return php_binary()


@dataclass
class PhpSessionDir:
    """A session.save_path folder: root, N levels of subfolders, its serialize_handler."""

    root: Path
    depth: int = 0
    bits: int = 5
    handler: str = "php"

    @property
    def save_path(self) -> str:
        """What php.ini's session.save_path says: "DIR" or "N;DIR"."""
        return f"{self.depth};{self.root}" if self.depth else str(self.root)

    def path_of(self, sid: str) -> Path:
        return self.root.joinpath(*sid[: self.depth], f"sess_{sid}")

    def files(self) -> dict[str, Path]:
        """{sid: path} of every sess_* file under the folder (all levels)."""
        return {p.name[5:]: p for p in self.root.rglob("sess_*") if p.is_file()}

    def new_sid(self) -> str:
        alphabet = HASH_CHARS[self.bits]
        return "".join(secrets.choice(alphabet) for _ in range(SID_LENGTH))

    def argv(self, gc_maxlifetime: int = 1440) -> list[str]:
        """php with this folder's session settings (and nothing left to chance in php.ini)."""
        return [
            php_binary(),
            "-d",
            "session.save_handler=files",
            "-d",
            f'session.save_path="{self.save_path}"',
            "-d",
            f"session.serialize_handler={self.handler}",
            "-d",
            f"session.gc_maxlifetime={int(gc_maxlifetime)}",
            "-d",
            "session.gc_probability=0",
            "-d",
            "session.use_cookies=0",
            "-d",
            "session.use_strict_mode=0",
            "-d",
            f"session.sid_bits_per_character={self.bits}",
            "-d",
            f"session.sid_length={SID_LENGTH}",
            PHP_DIR / "session_files.php",
        ]


def php_session_dir(
    path: Path, *, depth: int = 0, bits: int = 5, handler: str = "php"
) -> PhpSessionDir:
    """The folder, with its `depth` levels of subfolders made as mod_files.sh makes them."""
    if handler not in HANDLERS:
        raise ValueError(f"serialize_handler {handler!r}: one of {HANDLERS}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    level = [root]
    for _ in range(depth):
        level = [parent / c for parent in level for c in HASH_CHARS[bits]]
        for folder in level:
            folder.mkdir(exist_ok=True)
    return PhpSessionDir(root=root, depth=depth, bits=bits, handler=handler)


def _run_php(argv: list, request: dict, timeout: float = 120) -> dict:
    done = subprocess.run(
        [str(a) for a in argv],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=TESTS,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(
            f"php {request.get('action')} exited {done.returncode}:\n"
            f"{(done.stderr or done.stdout)[-4000:]}"
        )
    # PHP prints warnings on stdout in the CLI: the answer is the last line.
    return json.loads(done.stdout.strip().splitlines()[-1])


def _age_specs(sessions) -> list[dict]:
    out = []
    for item in sessions or ():
        spec = {"age": item} if isinstance(item, int | float) else dict(item)
        spec["age"] = float(spec.get("age", 0))
        out.append(spec)
    return out


def php_write_sessions(
    folder: PhpSessionDir, sessions=(), *, gc_maxlifetime: int = 1440
) -> Written:
    """sess_<id> files written by PHP, their mtimes set `age` seconds back.

    Written.ids in the order given; .expired: age > gc_maxlifetime (what PHP's GC removes when
    the folder has no subfolder levels); .active the rest; extra["paths"] {sid: Path}.
    """
    specs = _age_specs(sessions)
    request = {"action": "write", "sessions": []}
    for n, spec in enumerate(specs, start=1):
        item = {"sid": spec.get("sid") or folder.new_sid()}
        if "php" in spec:
            item["php"] = spec["php"]
        else:
            item["data"] = spec.get("data") or {"user_id": n}
        request["sessions"].append(item)
    sids = _run_php(folder.argv(gc_maxlifetime), request)["sids"]
    now = time.time()
    paths = {}
    for sid, spec in zip(sids, specs):
        path = folder.path_of(sid)
        when = now - spec["age"]
        os.utime(path, (when, when))
        paths[sid] = path
    expired = [s for s, spec in zip(sids, specs) if spec["age"] > gc_maxlifetime]
    active = [s for s in sids if s not in expired]
    return Written(ids=sids, expired=expired, active=active, extra={"paths": paths})


def php_gc(folder: PhpSessionDir, gc_maxlifetime: int = 1440) -> dict:
    """PHP's own GC (session_gc() with gc_maxlifetime): {"returned": what session_gc() said
    (files deleted; -1 for false, which is what it says for "N;DIR", where it removes nothing),
    "before", "after", "removed": sorted sids}."""
    before = set(folder.files())
    answer = _run_php(folder.argv(gc_maxlifetime), {"action": "gc"})
    after = set(folder.files())
    return {
        "returned": answer["gc"],
        "before": sorted(before),
        "after": sorted(after),
        "removed": sorted(before - after),
    }


def php_read_sessions(folder: PhpSessionDir, sids: list[str]) -> dict:
    """{sid: $_SESSION as PHP decodes the file} ([] for a missing or empty one)."""
    return _run_php(folder.argv(), {"action": "read", "sids": sids})["loaded"]


def php_serialize(values: list) -> list[bytes]:
    """PHP's own serialize() of each value (JSON in, objects as PHP arrays)."""
    code = (
        "foreach (json_decode(stream_get_contents(STDIN), true) as $v) "
        'echo base64_encode(serialize($v)), "\\n";'
    )
    done = subprocess.run(
        [php_binary(), "-r", code],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [base64.b64decode(line) for line in done.stdout.split()]


def _wait_ready(proc: subprocess.Popen, what: str) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError(f"{what} did not start: {line!r} {proc.stderr.read()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    # SIGKILL: the request ends without writing its session back (no mtime change).
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


@contextlib.contextmanager
def php_request_holding(folder: PhpSessionDir, sid: str):
    """A PHP request in progress on `sid`: session_start() took flock(LOCK_EX) on its file (and
    created the file if it was missing); it sleeps until the block ends, then is killed.
    Yields the process."""
    proc = subprocess.Popen(
        [str(a) for a in folder.argv()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    try:
        proc.stdin.write(json.dumps({"action": "hold", "sid": sid}))
        proc.stdin.close()
        proc.stdin = None
        _wait_ready(proc, "the PHP request")
        yield proc
    finally:
        _stop(proc)


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def process_holding_flock(path: Path):
    """Another (Python) process holding flock(LOCK_EX) on `path` until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(proc, "the flock holder")
        yield proc
    finally:
        _stop(proc)


def is_locked(path: Path) -> bool:
    """Whether another process holds a flock on `path` (tried without waiting)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
