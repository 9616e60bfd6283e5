"""PHP session files (`session.save_handler = files`): `sess_<id>` in `session.save_path`.

Addresses: `php:DIR`, `php:N;DIR` or `php:N;MODE;DIR` (save_path syntax, quoted or not: N
levels of one-character subfolders named by the id's first characters), optionally
`?handler=php|php_binary|php_serialize`; `php:` alone takes save_path from the php.ini given
(`--php-ini FILE`, `php_ini = ...`), which also gives `session.serialize_handler` and
`session.gc_maxlifetime` (the default idle timeout). A bare folder holding `sess_*` files is a
PHP store. The ini file is read, never php run.

A record: the session id as key; data `$_SESSION` decoded by the safe parser (objects are class
name plus fields, nothing instantiated) plus the file's times, `$mtime` (what PHP's GC and this
store judge by) and `$ctime` (Debian's sessionclean; `--field accessed='$ctime'`). A payload
PHP could not decode is an invalid session, its error with the byte offset.

In use means in use: a file another process holds `flock(LOCK_EX)` on (a request running) is
never removed, nor one whose mtime changed since it was selected, nor (`check_open`) one a
php-fpm or apache2 process has open (`/proc/PID/fd`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ...domain.errors import usage_error
from ...domain.model import Record
from ...domain.phpini import PhpSessionSettings, parse_ini, parse_save_path, session_settings
from ...domain.phpserial import (
    HANDLERS,
    MAX_BYTES,
    PhpFormatError,
    decode_session,
    session_data,
)
from ..base import Address, Candidate, StoreSettings
from .folder import Codec, FolderStore

PREFIX = "sess_"
#: Processes whose open session files `check_open` leaves alone (their /proc/PID/comm).
SERVER_PROCESSES = re.compile(r"^(php-fpm.*|php-cgi.*|apache2|httpd|lsphp.*|frankenphp)$")
#: How many names a bare folder's detection looks at before giving up.
_DETECT_LOOK = 50_000


class PhpCodec(Codec):
    """`session.serialize_handler`'s format, decoded by the safe parser."""

    name = "php"

    def __init__(self, handler: str = "php"):
        if handler not in HANDLERS:
            raise usage_error(
                f"serialize_handler {handler!r} is not supported",
                f"sessionctl reads {', '.join(HANDLERS)}",
            )
        self.handler = handler

    def decode(self, key: str, raw: bytes, info: os.stat_result) -> Record:
        times = {
            "$mtime": info.st_mtime,
            "$ctime": info.st_ctime,
            # Whose the file is: archived with it, so that restore gives it back to its user
            # (a root restore into an empty folder made files PHP's user could not read).
            "$uid": info.st_uid,
            "$gid": info.st_gid,
            "$mode": f"{info.st_mode & 0o7777:04o}",
        }
        try:
            data = session_data(decode_session(raw, self.handler))
        except PhpFormatError as exc:
            error = f"payload is not {self.handler} session data: {exc}"
            record = Record(key=key, data=None, size=len(raw), error=error, raw=raw)
        else:
            record = Record(key=key, data={**data, **times}, size=len(raw), raw=raw)
        record.keep_raw = True
        return record

    def restore_problem(self, entry: dict, source_kind: str | None, own_kind: str) -> str | None:
        raw = _archived_b64(entry)
        if not isinstance(raw, str):
            return (
                "a PHP session file is restored only from its own bytes (archived from a php store)"
            )
        try:
            base64.b64decode(raw, validate=True)
        except (ValueError, TypeError):
            return "its archived bytes are damaged"
        return None

    def restored_bytes(self, entry: dict) -> bytes:
        return base64.b64decode(_archived_b64(entry))

    def restored_owner(self, entry: dict) -> SimpleNamespace | None:
        record = entry.get("record")
        if not isinstance(record, dict):
            return None
        uid, gid, mode = record.get("$uid"), record.get("$gid"), record.get("$mode")
        if not (
            type(uid) is int
            and type(gid) is int
            and 0 <= uid < 1 << 32
            and 0 <= gid < 1 << 32
            and isinstance(mode, str)
            and re.fullmatch(r"0?[0-7]{3}", mode)
        ):
            return None
        # Read and write for its owner at least (PHP's user opens it read-write), nothing
        # set-id or executable.
        bits = (int(mode, 8) & 0o666) | 0o600
        return SimpleNamespace(st_mode=bits, st_uid=uid, st_gid=gid)


def _archived_b64(entry: dict) -> str | None:
    """The file's bytes as archived (base64): `file_b64`, or `raw_b64` for a session that did
    not decode. An empty file (a session with no variables) is "", not missing."""
    raw = entry.get("file_b64")
    if raw is None and entry.get("record") is None:
        raw = entry.get("raw_b64")
    return raw


def read_php_ini(path: str | os.PathLike) -> tuple[PhpSessionSettings, str]:
    """The session settings of a php.ini file and of its SAPI's conf.d/*.ini (PHP reads those
    after it, in name order, as Debian installs them), and the file's name."""
    path = Path(path).expanduser()
    texts = [_read_ini_file(path)]
    scan = path.parent / "conf.d"
    if scan.is_dir():
        # As PHP scans it: only regular files (it skips a dangling link, a folder, a FIFO).
        texts.extend(_read_ini_file(p) for p in sorted(scan.glob("*.ini")) if _regular(p))
    merged: dict[str, str] = {}
    for text in texts:
        try:
            merged.update(parse_ini(text, os.environ))
        except ValueError as exc:
            raise usage_error(f"php.ini {path}: {exc}") from None
    return session_settings(merged, str(path)), str(path)


#: A php.ini is tens of kilobytes; past this it is not one (`--php-ini /dev/zero`).
MAX_INI_BYTES = 4 << 20


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _read_ini_file(path: Path) -> str:
    """The text of an ini file: a regular file, read without blocking (a FIFO named *.ini in
    conf.d hung the run) and bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise usage_error(f"php.ini {path} does not exist") from None
    except OSError as exc:
        raise usage_error(f"cannot read php.ini {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise usage_error(f"cannot read php.ini {path}: not a regular file")
        data = os.read(fd, MAX_INI_BYTES + 1)
        if len(data) > MAX_INI_BYTES:
            raise usage_error(f"php.ini {path} is larger than {MAX_INI_BYTES >> 20} MB")
        while chunk := os.read(fd, MAX_INI_BYTES):  # short reads of a growing file
            data += chunk
            if len(data) > MAX_INI_BYTES:
                raise usage_error(f"php.ini {path} is larger than {MAX_INI_BYTES >> 20} MB")
    except OSError as exc:
        raise usage_error(f"cannot read php.ini {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def detect_depth(folder: Path) -> int | None:
    """0 if `folder` holds sess_* files, N if its N-th level of one-character subfolders does;
    None if it does not look like PHP's. Reads at most `_DETECT_LOOK` entries in all (a folder
    of a million sessions is told by its first ones)."""
    level = [folder]
    looked = 0
    for depth in range(4):
        subfolders = []
        for where in level:
            try:
                with os.scandir(where) as entries:
                    for entry in entries:
                        looked += 1
                        if looked > _DETECT_LOOK:
                            return None
                        if entry.name.startswith(PREFIX) and entry.is_file(follow_symlinks=False):
                            return depth
                        if len(entry.name) == 1 and entry.is_dir(follow_symlinks=False):
                            subfolders.append(Path(entry.path))
            except OSError:
                continue
        if not subfolders:
            return None
        level = subfolders
    return None


def _php_address(folder: str, depth: int, mode: int | None, handler: str | None) -> Address:
    path = Path(folder).expanduser().absolute()
    head = f"{depth};" if depth else ""
    head += f"{mode:o};" if mode is not None else ""
    params = (("handler", handler),) if handler else ()
    query = f"?handler={handler}" if handler else ""
    display = f"php:{head}{path}{query}"
    return Address(
        kind="php",
        display=display,
        identity=f"php:{os.path.realpath(path)}",
        pinned=display,
        path=path,
        params=params + (("depth", str(depth)),),
    )


class PhpStore(FolderStore):
    kind = "php"
    schemes = ("php",)
    prefix = PREFIX
    suffix = ""
    key_is_name = False
    respect_flock = True
    #: Batches: the archive is written, then the files unlinked, batch by batch.
    natural_batch = 500
    #: The parser's bound: a larger file is not a session PHP wrote (a 2 GB one took 2 GB).
    max_file_bytes = MAX_BYTES

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        settings = settings or StoreSettings()
        ini_path = getattr(settings, "php_ini", None)
        self.ini: PhpSessionSettings | None = None
        self.ini_file: str | None = None
        if ini_path:
            self.ini, self.ini_file = read_php_ini(ini_path)
        if address.path is None:
            address = self._address_from_ini(address)
        super().__init__(address, settings)
        self.depth = int(address.param("depth", "0") or 0)
        handler = address.param("handler") or (self.ini.serialize_handler if self.ini else "php")
        self.codec = PhpCodec(handler)
        self.check_open = bool(getattr(settings, "check_open", False))
        self._sizes: tuple[int, int, int] | None = None
        self._open_files: tuple[float, set[int]] | None = None

    def _address_from_ini(self, address: Address) -> Address:
        if self.ini is None:
            raise usage_error(
                "store php: names no folder",
                "give php:DIR, php:N;DIR, or the php.ini to read session.save_path from "
                "(--php-ini FILE)",
            )
        if self.ini.save_handler != "files":
            # save_path is then a server address, often with a password in it: never quoted.
            handler = (
                self.ini.save_handler
                if re.fullmatch(r"[a-z_]{1,30}", self.ini.save_handler)
                else "?"
            )
            raise usage_error(
                f"{self.ini_file} sets session.save_handler = {handler}: its sessions are not "
                "files in a folder",
                "give the store of that server (redis://..., mysql://...) or php:DIR",
            )
        if not self.ini.save_path:
            raise usage_error(
                f"{self.ini_file} sets no session.save_path (PHP would use the system's "
                "temporary folder)",
                "give the folder: php:DIR",
            )
        where = parse_save_path(self.ini.save_path)
        if not os.path.isabs(os.path.expanduser(where.folder)):
            # PHP resolves it against each request's working folder; this run's (cron's: the
            # home folder) would be another one.
            raise usage_error(
                f"{self.ini_file} sets a relative session.save_path ({where.folder})",
                "give the folder: php:DIR",
            )
        handler = address.param("handler")
        out = _php_address(where.folder, where.depth, where.mode, handler)
        return replace(out, name=address.name)

    @classmethod
    def parse_address(cls, text: str) -> Address:
        text = text.strip()
        explicit = text.lower().startswith("php:")
        rest = text[4:].strip() if explicit else text
        handler = None
        base, question, query = rest.rpartition("?")
        if question and query.startswith("handler="):
            rest, handler = base, query[len("handler=") :]
            if handler not in HANDLERS:
                raise usage_error(
                    f"store {text}: handler {handler!r} is not one of {', '.join(HANDLERS)}"
                )
        elif question and explicit and re.fullmatch(r"[A-Za-z_]+=.*", query):
            raise usage_error(
                f"store {text}: unknown parameter {query.partition('=')[0]!r}",
                "a php address takes only ?handler=php|php_binary|php_serialize",
            )
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
            rest = rest[1:-1]
        if not rest:
            # `php:`: the folder comes from the php.ini setting, once the store opens.
            params = (("handler", handler),) if handler else ()
            return Address(
                kind="php", display="php:", identity="php:", pinned="php:", params=params
            )
        where = parse_save_path(rest)
        depth = where.depth
        if not explicit or (";" not in rest and depth == 0):
            found = detect_depth(Path(where.folder).expanduser())
            depth = found if found is not None and ";" not in rest else depth
        address = _php_address(where.folder, depth, where.mode, handler)
        if not explicit:
            # A bare path is pinned bare, so cron detects it as the shell did.
            address = replace(address, pinned=str(address.path))
        return address

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir() and detect_depth(path) is not None

    # -- what the configuration gets from the store ------------------------------------------

    def setting_defaults(self) -> dict[str, tuple[Any, str]]:
        """PHP's own idle timeout: session.gc_maxlifetime (of the php.ini given, else PHP's
        default, 1440 s), below the configuration and the command line."""
        if self.ini is not None:
            source = f"session.gc_maxlifetime in {self.ini_file}"
            return {"idle_timeout": (float(self.ini.gc_maxlifetime), source)}
        return {"idle_timeout": (1440.0, "PHP's default session.gc_maxlifetime")}

    def size_bytes(self) -> int:
        files = size = disk = 0
        for _, entry in self._entries():
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                files += 1
                size += info.st_size
                disk += info.st_blocks * 512
        self._sizes = (files, size, disk)
        return size

    def extra_stats(self) -> dict:
        """Inodes and bytes: what fills a file system with sessions (a small session file
        takes a whole block, and an inode)."""
        if self._sizes is None:
            self.size_bytes()
        files, _, disk = self._sizes or (0, 0, 0)
        out = {"session_files": files, "bytes_on_disk": disk}
        if self.depth:
            out["levels"] = self.depth
            out["deepest_subfolders"] = sum(1 for _ in self._folders())
        with contextlib.suppress(OSError):
            fs = os.statvfs(self.path)
            out["filesystem_inodes_free"] = fs.f_favail
            out["filesystem_inodes_total"] = fs.f_files
        return out

    def describe(self) -> dict:
        out = super().describe()
        out["serialize_handler"] = self.codec.handler
        if self.ini_file:
            out["php_ini"] = self.ini_file
        with contextlib.suppress(OSError):
            fs = os.statvfs(self.path)
            out["inodes_free"] = fs.f_favail
            out["inodes_total"] = fs.f_files
        return out

    # -- in use ------------------------------------------------------------------------------

    def in_use(self, candidates: list[Candidate]) -> dict[Any, str]:
        if not self.check_open:
            return {}
        inodes = self._server_open_inodes()
        kept = {}
        for candidate in candidates:
            version = candidate.fingerprint[0] if candidate.fingerprint else None
            if version and version[0] in inodes:
                kept[candidate.key] = "open in a php-fpm or apache2 process"
        return kept

    def _server_open_inodes(self) -> set[int]:
        """Inodes of files in this folder that php-fpm/apache2 processes have open (read
        from /proc/PID/fd; refreshed at most once a second)."""
        import time

        now = time.monotonic()
        if self._open_files is not None and now - self._open_files[0] < 1.0:
            return self._open_files[1]
        device = os.stat(self.path).st_dev
        found: set[int] = set()
        with contextlib.suppress(OSError), os.scandir("/proc") as processes:
            for process in processes:
                if not process.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{process.name}/comm") as handle:
                        comm = handle.read().strip()
                except OSError:
                    continue
                if not SERVER_PROCESSES.match(comm):
                    continue
                fd_dir = f"/proc/{process.name}/fd"
                try:
                    fds = os.listdir(fd_dir)
                except OSError:
                    continue  # another user's process: only root sees its files
                for fd in fds:
                    try:
                        target = os.stat(os.path.join(fd_dir, fd))
                    except OSError:
                        continue
                    if target.st_dev == device:
                        found.add(target.st_ino)
        self._open_files = (now, found)
        return found
