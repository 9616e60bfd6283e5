"""The per-session hook that tears down outside resources before a record is removed (seed 000).

The command is an argument vector, never a shell string: ids and paths are passed through the
environment and stdin, so quotes, `;`, `$( )` and newlines in them cannot run anything.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time

from ..domain.errors import usage_error
from ..domain.redact import scrub, secret_texts
from ..domain.timeparse import format_duration


def parse_hook(text: str, what: str = "--hook") -> list[str]:
    """A hook command line, split as a shell would split it (never run by one)."""
    import shlex

    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise usage_error(
            f"{what}: cannot split {text!r}: {str(exc).lower()}", "check the quotes"
        ) from None
    if not argv:
        raise usage_error(f"{what}: empty command", "give the program to run for each session")
    return argv


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
    argv: list[str],
    session: dict,
    session_id: str | None,
    store_label: str,
    timeout: float,
    payload_fields: tuple[str, ...] = (),
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
    stderr, finished = _exchange(process, payload, timeout)
    if not finished:
        _kill_group(process)
        process.wait()
        return f"hook timed out after {format_duration(timeout)}"
    if process.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        # The hook was given the whole session; what it says goes to results and the audit
        # log, where the session's secrets never go.
        secrets = secret_texts(session.get("record"), payload=payload_fields)
        last = scrub(lines[-1].strip(), secrets) if lines else ""
        detail = f": {last[:200]}" if last else ""
        if process.returncode < 0:
            return f"hook killed by signal {-process.returncode}{detail}"
        return f"hook exited with status {process.returncode}{detail}"
    return None


#: After the hook exits, how long its pipes may take to reach end of file. A background child
#: the hook left behind may hold them open for ever: the hook is judged by its own exit.
EXIT_GRACE = 0.2
#: How often a running hook is checked for having exited while its pipes stay open.
_POLL = 0.05
#: The hook's stderr kept for the error message: its end.
_STDERR_KEPT = 64 * 1024


def _exchange(process: subprocess.Popen, payload: bytes, timeout: float) -> tuple[bytes, bool]:
    """Feed stdin, collect stderr, wait for the exit: (stderr, False when it timed out).

    Unlike `communicate`, this does not wait for end of file on the pipes once the hook has
    exited: a child the hook started in the background inherits them.
    """
    assert process.stdin is not None and process.stderr is not None
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    pending = memoryview(payload)
    stderr = bytearray()
    os.set_blocking(process.stderr.fileno(), False)
    selector.register(process.stderr, selectors.EVENT_READ)
    if pending:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
    else:
        process.stdin.close()
    exited_at = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and process.poll() is not None:
                exited_at = now
            if exited_at is not None:
                if not selector.get_map() or now - exited_at >= EXIT_GRACE:
                    return bytes(stderr), True
                wait = EXIT_GRACE - (now - exited_at)
            elif now >= deadline:
                return bytes(stderr), False
            elif not selector.get_map():
                try:
                    process.wait(deadline - now)
                except subprocess.TimeoutExpired:
                    return bytes(stderr), False
                continue
            else:
                wait = min(_POLL, deadline - now)
            for key, _ in selector.select(wait):
                pipe = key.fileobj
                if pipe is process.stdin:
                    try:
                        written = os.write(pipe.fileno(), pending[:65536])
                    except BlockingIOError:
                        continue
                    except OSError:  # the hook does not read its stdin: that is its business
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(pipe)
                        pipe.close()
                else:
                    try:
                        chunk = os.read(pipe.fileno(), 65536)
                    except BlockingIOError:
                        continue
                    if chunk:
                        stderr += chunk
                        del stderr[:-_STDERR_KEPT]
                    else:
                        selector.unregister(pipe)
                        pipe.close()
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
