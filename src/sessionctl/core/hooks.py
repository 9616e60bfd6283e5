"""The per-session hook that tears down outside resources before a record is removed (seed 000).

The command is an argument vector, never a shell string: ids and paths are passed through the
environment and stdin, so quotes, `;`, `$( )` and newlines in them cannot run anything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

from .errors import usage_error
from .redact import scrub, secret_texts
from .timeparse import format_duration


def check_hook(argv: list[str]) -> None:
    if not argv:
        raise usage_error("empty hook command")
    program = argv[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise usage_error(f"hook {program} is not an executable file")
    elif shutil.which(program) is None:
        raise usage_error(f"hook command {program!r} not found on PATH")


def run_hook(
    argv: list[str], session: dict, session_id: str | None, store_label: str, timeout: float
) -> str | None:
    """Run the hook for one session. None on success, else the error to report."""
    env = dict(os.environ)
    env["SESSIONCTL_STORE"] = store_label
    env["SESSIONCTL_SESSION_ID"] = session_id or ""
    if "\0" in env["SESSIONCTL_SESSION_ID"]:
        return "session id contains a NUL byte: cannot pass it to the hook"
    payload = json.dumps(session, ensure_ascii=False, default=str).encode()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # so a timeout can stop the hook's children too
        )
    except OSError as exc:
        return f"hook could not start: {exc.strerror or exc}"
    try:
        _, stderr = process.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        return f"hook timed out after {format_duration(timeout)}"
    if process.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        # The hook was given the whole session; what it says goes to results and the audit
        # log, where the session's secrets never go.
        last = scrub(lines[-1].strip(), secret_texts(session.get("record"))) if lines else ""
        detail = f": {last[:200]}" if last else ""
        if process.returncode < 0:
            return f"hook killed by signal {-process.returncode}{detail}"
        return f"hook exited with status {process.returncode}{detail}"
    return None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
