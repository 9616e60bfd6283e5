"""The audit log (one JSON line per run) and archives of removed sessions (gzip'd NDJSON).

Both are private (files 0600, folders 0700): archives hold whole sessions, tokens included.
An archive is flushed and fsync'ed after every batch, before that batch is deleted, so a run
killed at any moment leaves every removed session readable in its archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import gzip
import hashlib
import json
import os
import re
import secrets
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..domain.archive_format import archive_lines
from ..domain.errors import store_error, usage_error
from ..fsutil import PRIVATE_FILE, ensure_private_dir, os_error_text

ARCHIVE_FORMAT = 1
#: An audit line lists at most this many removed ids; the archive has them all.
AUDIT_ID_LIMIT = 10_000


def timestamp_slug(epoch: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def store_slug(label: str) -> str:
    """A folder name for a store: its config name, or its file name and a short hash."""
    if "/" not in label:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "store"
    base = label.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")[:40] or "store"
    return f"{base}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def default_archive_path(archive_dir: Path, label: str) -> Path:
    unique = f"{timestamp_slug()}-{os.getpid()}-{secrets.token_hex(3)}"
    return archive_dir / store_slug(label) / f"{unique}.ndjson.gz"


class ArchiveWriter:
    """Appends removed sessions to one archive; opened on the first write, private from birth."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.count = 0
        self._raw = None
        self._gzip: gzip.GzipFile | None = None

    def _open(self) -> None:
        # Folders made here are 0700; an existing one may be the operator's (--archive
        # /tmp/x.ndjson.gz) and keeps its mode: the archive itself is 0600 from birth.
        ensure_private_dir(self.path.parent, tighten=False)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        except FileExistsError:
            raise usage_error(
                f"archive {self.path} already exists", "choose another --archive"
            ) from None
        except OSError as exc:
            raise store_error(
                f"cannot create archive {self.path}: {os_error_text(exc)}",
                "nothing was removed",
            ) from None
        self._raw = os.fdopen(fd, "wb")
        try:
            self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", filename="", compresslevel=6)
        except OSError as exc:
            self._raw.close()
            raise store_error(
                f"cannot write archive {self.path}: {os_error_text(exc)}", "nothing was removed"
            ) from None
        self._write_lines([{"sessionctl_archive": ARCHIVE_FORMAT, **self.header}])

    def write(self, entries: list[dict]) -> None:
        """Write and make durable; only then may the caller delete these sessions."""
        if not entries:
            return
        if self._gzip is None:
            self._open()
        self._write_lines(entries)
        self.count += len(entries)

    def _write_lines(self, entries: list[dict]) -> None:
        assert self._gzip is not None and self._raw is not None
        data = archive_lines(entries)
        try:
            self._gzip.write(data)
            # A sync flush ends a deflate block: everything so far can be read back even if the
            # process dies before the gzip trailer is written.
            self._gzip.flush(zlib.Z_SYNC_FLUSH)
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except OSError as exc:
            raise store_error(
                f"cannot write archive {self.path}: {os_error_text(exc)}",
                "the sessions of this batch were not removed",
            ) from None

    def close(self) -> None:
        if self._gzip is not None:
            with contextlib.suppress(OSError):
                self._gzip.close()
                self._raw.flush()
                os.fsync(self._raw.fileno())
                self._raw.close()
            self._gzip = None


@dataclass
class ArchiveContents:
    header: dict
    entries: list[dict]
    truncated: bool


def read_archive(path: Path) -> ArchiveContents:
    """Every entry that can be read; a run killed mid-write leaves a readable prefix."""
    try:
        compressed = path.read_bytes()
    except FileNotFoundError:
        raise usage_error(f"archive {path} does not exist") from None
    except OSError as exc:
        raise usage_error(f"cannot read archive {path}: {os_error_text(exc)}") from None
    # zlib rather than gzip.open: it hands over what it decoded even when the stream was cut
    # short, which is exactly the archive a killed run leaves behind.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(compressed)
    except zlib.error as exc:
        raise usage_error(f"{path} is not a sessionctl archive ({exc})") from None
    truncated = not decoder.eof
    *lines, buffer = data.split(b"\n")
    if buffer.strip():
        truncated = True  # a last line without its newline was cut off mid-write
    parsed = []
    for line in lines:
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            truncated = True
    if not parsed and truncated and not any(line.strip() for line in lines):
        # A run killed between creating its archive and writing its first line leaves an
        # empty archive (nothing was removed after that), not a foreign file.
        start = b'{"sessionctl_archive"'
        if start.startswith(buffer.strip()) or buffer.startswith(start):
            return ArchiveContents(header={}, entries=[], truncated=True)
    if not parsed or not isinstance(parsed[0], dict) or "sessionctl_archive" not in parsed[0]:
        raise usage_error(f"{path} is not a sessionctl archive")
    version = parsed[0]["sessionctl_archive"]
    if version != ARCHIVE_FORMAT or type(version) is not int:
        # A newer format may mean its entries differently: never guess at them.
        raise usage_error(
            f"{path} is a sessionctl archive of format {str(version)[:20]!r}; this version "
            f"reads format {ARCHIVE_FORMAT}",
            "restore it with the sessionctl that wrote it",
        )
    return ArchiveContents(header=parsed[0], entries=parsed[1:], truncated=truncated)


# --- audit log -------------------------------------------------------------------------------


def audit_path(state_dir: Path) -> Path:
    return state_dir / "audit.log"


def run_identity() -> dict:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


def append_audit(state_dir: Path, entry: dict) -> Path:
    path = audit_path(state_dir)
    ensure_private_dir(state_dir)
    try:
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
    except UnicodeEncodeError:
        # A path whose bytes are not UTF-8 (an --archive name with \x9b): escaped, as JSON can.
        line = (json.dumps(entry, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    except OSError as exc:
        raise store_error(f"cannot write audit log {path}: {os_error_text(exc)}") from None
    try:
        # Concurrent runs on several stores share the log: one whole line at a time.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    except OSError as exc:
        raise store_error(f"cannot write audit log {path}: {os_error_text(exc)}") from None
    finally:
        os.close(fd)
    return path


def read_audit(state_dir: Path) -> Iterator[dict]:
    path = audit_path(state_dir)
    try:
        with open(path, "rb") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise store_error(f"cannot read audit log {path}: {os_error_text(exc)}") from None
    for line in lines:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by a crash: skip it, keep the rest
        if isinstance(entry, dict):
            yield entry
