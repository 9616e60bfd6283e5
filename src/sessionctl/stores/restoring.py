"""What a store needs to decide before it takes an archived session back.

Every store kind has a `prepare_restore(entry, id_path, source_kind)` that maps the entry onto
its own shape by role (the session id goes where the store's mapping keeps ids) and converts
its values, or says in one sentence why it cannot hold it. These are the helpers they share.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from ..domain.errors import store_error
from ..domain.mapping import KEY_PATH
from ..fsutil import fsync_dir, os_error_text, temp_prefix

#: Longest file name most file systems take (NAME_MAX), in bytes.
NAME_MAX = 255
#: What `atomic_write` adds around a name for its temp file: ".NAME.sessionctl-XXXXXXXX.tmp".
TEMP_OVERHEAD = len(".") + len(".sessionctl-") + 8 + len(".tmp")


def text_id(entry: dict) -> str | None:
    """The archived session id as text, or None when the session had none."""
    session_id = entry.get("id")
    if session_id is None or isinstance(session_id, (dict, list)):
        return None
    return session_id if isinstance(session_id, str) else str(session_id)


def place_id(record: dict, id_path: str | None, session_id: str | None) -> None:
    """Put the session id where the target's mapping reads it, when the record lacks it there
    (an id kept as an object key or file name before): a top-level field only."""
    if session_id is None or not id_path or id_path == KEY_PATH or "." in id_path:
        return
    if record.get(id_path) is None:
        record[id_path] = session_id


#: Kinds whose archives hold JSON records as the application wrote them: a {"$b64": ...} there
#: is the application's own object. Other kinds (tables) encode column values that way.
JSON_KINDS = ("json", "jsondir")


def encoded_value_problem(record: dict, source_kind: str | None) -> str | None:
    """Why a JSON store cannot hold a record archived from a table: a blob ({"$b64": ...}),
    text that is not UTF-8 ({"$text_b64": ...}) or an infinity or NaN ({"$float": ...}) would
    go in as an object where the application had bytes or a number. None if it can."""
    if source_kind in JSON_KINDS:
        return None
    for name, value in record.items():
        if isinstance(value, dict) and len(value) == 1:
            marker = next(iter(value))
            what = {"$b64": "bytes", "$text_b64": "text that is not UTF-8", "$float": "an infinity"}
            if marker in what and isinstance(value[marker], str):
                return (
                    f"its field {shown(name, 30)} holds {what[marker]} "
                    f"({shown(value[marker], 20)}), which JSON cannot hold"
                )
    return None


def unsafe_file_name(name: str) -> str | None:
    """Why `name` cannot be a file of a session folder, or None if it can: one plain name that
    stays inside the folder."""
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it holds a NUL character"
    if os.path.isabs(name):
        return "it is an absolute path"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        return "it holds a path separator"
    if name in (".", "..") or name.startswith("."):
        return "it starts with a dot (the folder's hidden and parent entries)"
    try:
        size = len(os.fsencode(name))
    except UnicodeError:
        return "it is not valid Unicode text"
    if size + TEMP_OVERHEAD > NAME_MAX:
        return f"it is too long for a file name ({size} bytes)"
    return None


def shown(value: Any, limit: int = 60) -> str:
    """A value quoted for a one-line message: repr-escaped, long ones shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- tables -----------------------------------------------------------------------------------

#: The integers a SQLite column holds (64-bit signed).
SQLITE_INTEGERS = range(-(2**63), 2**63)


def sqlite_value_problem(value: Any) -> str | None:
    """Why SQLite cannot store `value` as it is, or None."""
    if isinstance(value, float) and value != value:
        return "holds NaN, which SQLite would store as NULL"
    if value is None or isinstance(value, (float, bytes)):
        return None
    if isinstance(value, int):
        if value in SQLITE_INTEGERS:
            return None
        return f"holds the integer {shown(value, 30)}, beyond SQLite's 64-bit range"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds text that is not valid Unicode (a lone surrogate)"
        return None
    if isinstance(value, dict):
        return "holds an object, which a SQLite column cannot hold"
    if isinstance(value, list):
        return "holds a list, which a SQLite column cannot hold"
    return f"holds a {type(value).__name__}, which a SQLite column cannot hold"


def children_problem(children, tables: dict[str, list[str]]) -> str | None:
    """Why the cascade rows archived with a session cannot go back, or None. `tables` maps
    each table the store's ON DELETE CASCADE reaches (its name lower-cased) to its columns:
    an archive edited by hand never writes to any other table (sqlite_master, users...), nor
    drops a field silently."""
    from ..domain.archive_format import decode_column_values

    if children is None:
        return None
    if not isinstance(children, dict):
        return "its cascade rows are not an object of tables"
    for table, rows in children.items():
        columns = tables.get(table.lower()) if isinstance(table, str) else None
        if columns is None:
            return (
                f"it holds rows for table {shown(table, 40)}, which no ON DELETE CASCADE "
                "from the store's table reaches"
            )
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return f"its rows for table {shown(table, 40)} are not a list of objects"
        for row in rows:
            extra = [name for name in row if name not in columns]
            if extra:
                return (
                    f"table {shown(table, 40)} has no column for the field "
                    f"{shown(extra[0], 30)} of its cascade row (it would be lost)"
                )
            for name, value in decode_column_values(row).items():
                if isinstance(value, dict) and isinstance(value.get("$text_b64"), str):
                    continue  # text that is not UTF-8, put back byte for byte
                problem = sqlite_value_problem(value)
                if problem:
                    return f"the field {shown(name, 30)} of its cascade row {problem}"
    return None


def prepare_row(
    entry: dict, table: str, columns_info: list[tuple], id_path: str | None
) -> str | None:
    """Turn an archived session into a row of `table` (`columns_info`: its PRAGMA table_info):
    values decoded as the archive encoded them, the id in the id column. None if the row can
    go in; else why not, and nothing is changed."""
    from ..domain.archive_format import decode_column_values

    record = entry.get("record")
    if not isinstance(record, dict):
        return (
            "the archive holds no readable record for it (it did not parse in its store), "
            "and a table holds rows only"
        )
    row = decode_column_values(record)
    columns = {info[1]: info for info in columns_info}
    place_id(row, id_path if id_path in columns else None, text_id(entry))
    extra = [name for name in row if name not in columns]
    if extra:
        names = ", ".join(shown(name, 30) for name in extra[:3]) + (" ..." if extra[3:] else "")
        return f"table {table} has no column for its field {names} (it would be lost)"
    for name, value in row.items():
        problem = sqlite_value_problem(value)
        if problem:
            return f"its field {shown(name, 30)} {problem}"
    for _cid, name, kind, notnull, default, primary in columns_info:
        rowid_alias = primary and str(kind).upper() == "INTEGER"
        if notnull and default is None and not rowid_alias and row.get(name) is None:
            return f"column {name} of {table} must have a value, and the record has none"
    children = entry.get("children")
    if isinstance(children, dict):
        for child_table, rows in children.items():
            if isinstance(rows, list):
                children[child_table] = [
                    decode_column_values(child) if isinstance(child, dict) else child
                    for child in rows
                ]
    entry["record"] = row
    return None


# --- files ------------------------------------------------------------------------------------


def write_new(path: Path, data: bytes, like) -> bool:
    """Create `path` with `data`, mode and owner of `like`, unless something is there by now
    (the application may write the same session meanwhile): then False, and theirs stays.

    The file is made whole and durable under a temp name first, then linked in place, which
    never replaces; where the file system has no hard links, renamed if still nothing is there.
    """
    try:
        fd, temp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise store_error(f"cannot write {path}: {os_error_text(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, like.st_mode & 0o7777)
        with contextlib.suppress(OSError):
            os.chown(temp_name, like.st_uid, like.st_gid)
        try:
            os.link(temp_name, path, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if os.path.lexists(path):
                return False
            os.replace(temp_name, path)
    except OSError as exc:
        raise store_error(
            f"cannot write {path}: {os_error_text(exc)}", "the sessions restored so far stay"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
    fsync_dir(path.parent)
    return True
