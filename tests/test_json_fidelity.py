"""JSON stores are rewritten as splices of their own text: what a cleanup leaves keeps its bytes.

Survivors are never serialised again (`1e400` stays `1e400`, not `Infinity`; `1E5` stays `1E5`;
CRLF, duplicate keys and spacing stay), archives hold valid JSON, and a lone surrogate
(`"\\ud800"`) makes one invalid session instead of a crash; restore puts it back byte for byte.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from sessionctl.app.audit import read_archive

PAST = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
SOON = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))


def _expired(sid: str, extra: str = "") -> str:
    return f'{{"session_id":"{sid}","expires_at":"{PAST}"{extra}}}'


def _active(sid: str, extra: str = "") -> str:
    return f'{{"session_id":"{sid}", "expires_at": "{SOON}"{extra}}}'


#: Survivors spelled the ways a re-serialisation would change.
ODD = [
    _active("big", ', "big": 1e400, "small": -1e400'),
    _active("exp", ',"n":1E5,"m":1.0e-7,"z":-0,"f":1.10'),
    _active("dup", ', "x": 1, "x": 2,   "x"  :  3'),
    _active("esc", ', "u": "\\u00e9\\/", "emoji": "\\ud83d\\ude00"'),
]


def _strict_lines(path: Path) -> list[dict]:
    """Every archive line parsed as strict JSON (no NaN, no Infinity, valid UTF-8)."""

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    with gzip.open(path, "rb") as handle:
        return [json.loads(line.decode("utf-8"), parse_constant=refuse) for line in handle]


def _cleanup(cli, store: str, *args) -> dict:
    return json.loads(cli("cleanup", "-s", store, *args, "-f", "json").stdout)


def test_survivors_of_an_array_keep_their_bytes(cli, tmp_path):
    elements = [_expired("gone0"), ODD[0], _expired("gone1"), ODD[1], ODD[2], ODD[3]]
    elements.append(_expired("gone2", ', "big": 1E400'))
    text = "[\r\n  " + ",\r\n  ".join(elements) + "\r\n]\r\n"
    path = tmp_path / "sessions.json"
    path.write_bytes(text.encode())
    result = _cleanup(cli, f"json:{path}", "--expired")
    assert result["deleted"] == 3
    expected = "[\r\n  " + ",\r\n  ".join(ODD) + "\r\n]\r\n"
    assert path.read_bytes() == expected.encode()
    lines = _strict_lines(Path(result["archive"]))
    assert [e["id"] for e in lines[1:]] == ["gone0", "gone1", "gone2"]
    # 1E400 is kept exactly, so that restore puts back what was removed.
    assert lines[-1]["raw_json"] == elements[-1]


def test_survivors_of_a_keyed_and_of_a_wrapped_store_keep_their_bytes(cli, tmp_path):
    keyed = tmp_path / "keyed.json"
    members = {"a": _expired("a"), "b": ODD[0], "c": ODD[2], "d": _expired("d"), "e": ODD[1]}
    keyed.write_bytes(("{" + ",  ".join(f'"{k}" :{v}' for k, v in members.items()) + "}").encode())
    assert _cleanup(cli, f"json:{keyed}", "--expired")["deleted"] == 2
    kept = {k: v for k, v in members.items() if k in "bce"}
    assert (
        keyed.read_bytes()
        == ("{" + ",  ".join(f'"{k}" :{v}' for k, v in kept.items()) + "}").encode()
    )

    wrapped = tmp_path / "wrapped.json"
    head = '{"version": 1e400, "note": "x", "n": 1E5,\n "sessions": [\n'
    items = [ODD[1], _expired("w1"), ODD[0], _expired("w2")]
    wrapped.write_bytes((head + ",\n".join(items) + '\n], "tail": -0}\n').encode())
    assert _cleanup(cli, f"json:{wrapped}", "--expired")["deleted"] == 2
    after = head + ",\n".join([ODD[1], ODD[0]]) + '\n], "tail": -0}\n'
    assert wrapped.read_bytes() == after.encode()


def test_a_session_key_written_twice_loses_only_the_member_that_was_judged(cli, tmp_path):
    """Parsers read the last of two members with one key: that one is judged, archived and
    removed; the earlier one is another session's text and stays, byte for byte."""
    path = tmp_path / "sessions.json"
    first = '"a": ' + _active("a", ', "n": 1E5')
    path.write_text("{" + first + ', "b": ' + _active("b") + ', "a": ' + _expired("a2") + "}")
    result = _cleanup(cli, f"json:{path}", "--expired")
    assert result["deleted"] == 1
    assert path.read_text() == "{" + first + ', "b": ' + _active("b") + "}"
    listed = json.loads(cli("list", "-s", f"json:{path}", "-f", "json").stdout)
    assert sorted(s["id"] for s in listed) == ["a", "b"]


def test_removing_every_session_leaves_the_rest_of_the_file(cli, tmp_path):
    path = tmp_path / "sessions.json"
    path.write_bytes(
        f'\ufeff{{"sessions": [ {_expired("a")} , {_expired("b")} ], "v": 1E5}}\n'.encode()
    )
    assert _cleanup(cli, f"json:{path}", "--expired")["deleted"] == 2
    assert path.read_bytes() == '\ufeff{"sessions": [], "v": 1E5}\n'.encode()


def test_restore_puts_back_the_original_text_in_the_files_own_style(cli, tmp_path):
    path = tmp_path / "sessions.json"
    gone = _expired("gone", ', "n": 1e400, "x": 1, "x": 2')
    text = "[\r\n\t" + ",\r\n\t".join([ODD[1], gone, ODD[0]]) + "\r\n]"
    path.write_bytes(text.encode())
    result = _cleanup(cli, f"json:{path}", "--expired")
    survivors = "[\r\n\t" + ",\r\n\t".join([ODD[1], ODD[0]]) + "\r\n]"
    assert path.read_bytes() == survivors.encode()
    cli("restore", "-s", f"json:{path}", result["archive"])
    # Appended after the last session, with the file's own separator; the rest untouched.
    assert path.read_bytes() == (survivors[:-3] + ",\r\n\t" + gone + "\r\n]").encode()


def test_restore_into_an_empty_indented_array_uses_its_indentation(cli, tmp_path):
    path = tmp_path / "sessions.json"
    path.write_text('{\n  "sessions": [\n    ' + _expired("a") + "\n  ]\n}\n")
    archive = _cleanup(cli, f"json:{path}", "--expired")["archive"]
    assert path.read_text() == '{\n  "sessions": []\n}\n'
    cli("restore", "-s", f"json:{path}", archive)
    record = f'{{\n      "session_id": "a",\n      "expires_at": "{PAST}"\n    }}'
    assert path.read_text() == '{\n  "sessions": [\n    ' + record + "\n  ]\n}\n"


LONE = '{"session_id":"lone\\ud800","expires_at":"' + SOON + '","u":"\\udc00x"}'


@pytest.mark.parametrize("kind", ["json", "jsondir"])
def test_a_lone_surrogate_is_one_invalid_session_archived_exactly(cli, tmp_path, kind):
    if kind == "json":
        store = tmp_path / "sessions.json"
        store.write_bytes(f"[{_active('ok')}, {LONE},\n{_expired('old')}]".encode())
        address = f"json:{store}"
    else:
        store = tmp_path / "sessions"
        store.mkdir()
        (store / "ok.json").write_text(_active("ok"))
        (store / "lone.json").write_bytes(LONE.encode())
        (store / "old.json").write_text(_expired("old"))
        address = f"jsondir:{store}"
    listed = json.loads(cli("list", "-s", address, "-f", "json").stdout)
    status = {s["status"] for s in listed}
    assert len(listed) == 3 and status == {"active", "invalid", "expired"}
    invalid = next(s for s in listed if s["status"] == "invalid")
    assert [r["code"] for r in invalid["reasons"]] == ["corrupt"]
    assert "surrogate" in invalid["reasons"][0]["message"]
    cli("list", "-s", address)
    cli("validate", "-s", address, code=1)
    stats = json.loads(cli("stats", "-s", address, "-f", "json").stdout)
    assert stats["invalid"] == 1

    result = _cleanup(cli, address, "--invalid")
    assert result["deleted"] == 1 and result["outcome"] == "ok"
    entries = _strict_lines(Path(result["archive"]))[1:]
    assert len(entries) == 1 and entries[0]["raw_json"] == LONE
    assert read_archive(Path(result["archive"])).entries[0]["record"]["session_id"] == "lone\ud800"
    if kind == "json":
        assert store.read_bytes() == f"[{_active('ok')},\n{_expired('old')}]".encode()
    else:
        assert not (store / "lone.json").exists()

    cli("restore", "-s", address, result["archive"])
    if kind == "json":
        # After the last session, with the separator that stood before it.
        assert store.read_bytes() == f"[{_active('ok')},\n{_expired('old')},\n{LONE}]".encode()
    else:
        assert (store / "lone.json").read_bytes() == LONE.encode()


def test_a_lone_surrogate_in_an_object_key_is_shown_escaped(cli, tmp_path):
    path = tmp_path / "sessions.json"
    path.write_bytes(('{"k\\ud800": ' + _active("x") + ', "ok": ' + _active("ok") + "}").encode())
    listed = json.loads(cli("list", "-s", f"json:{path}", "-f", "json").stdout)
    assert sorted(s["status"] for s in listed) == ["active", "invalid"]
    result = _cleanup(cli, f"json:{path}", "--invalid")
    assert result["deleted"] == 1
    assert path.read_bytes() == ('{"ok": ' + _active("ok") + "}").encode()


def test_a_folder_file_with_an_infinity_is_archived_as_json_and_restored_exactly(cli, tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    original = _expired("inf", ', "n": 1e400,\r\n "x": 1, "x": 2').encode()
    (folder / "inf.json").write_bytes(original)
    (folder / "ok.json").write_text(_active("ok"))
    result = _cleanup(cli, f"jsondir:{folder}", "--expired")
    assert result["deleted"] == 1
    entry = _strict_lines(Path(result["archive"]))[1]
    assert entry["record"]["n"] == {"$float": "Infinity"}
    cli("restore", "-s", f"jsondir:{folder}", result["archive"])
    assert (folder / "inf.json").read_bytes() == original


def test_an_application_change_between_selection_and_rewrite_is_kept(cli, tmp_path, monkeypatch):
    """Records are matched by their text when the file changed meanwhile: a session the
    application rewrote (even by one byte of spelling) is left alone."""
    from sessionctl.stores import jsonfile

    path = tmp_path / "sessions.json"
    upper, lower = _expired("a", ',"n":1E5'), _expired("a", ',"n":1e5')
    path.write_text(f"[{upper}, {_expired('b')}]")
    real_latest = jsonfile.JsonFileStore._latest
    calls = []

    def meddle(self):
        if not calls:
            calls.append(1)
            path.write_text(f"[{_active('new')}, {lower}, {_expired('b')}]")
        return real_latest(self)

    monkeypatch.setattr(jsonfile.JsonFileStore, "_latest", meddle)
    result = _cleanup(cli, f"json:{path}", "--expired")
    assert result["deleted"] == 1 and result["changed"] == 1
    assert path.read_text() == f"[{_active('new')}, {lower}]"


# --- the lock beside the store (lock = "store") ---------------------------------------------------


def _config(tmp_path: Path, address: str, lock: str, where: str = "stores.app") -> Path:
    config = tmp_path / "config.toml"
    if where == "defaults":
        config.write_text(
            f'store = "app"\n[defaults]\nlock = "{lock}"\n[stores.app]\naddress = "{address}"\n'
        )
    else:
        config.write_text(f'[stores.app]\naddress = "{address}"\nlock = "{lock}"\n')
    return config


def _cleanup_with(cli, config: Path) -> dict:
    args = ["--config", config, "cleanup", "-s", "app", "--expired", "-f", "json"]
    return json.loads(cli(*args).stdout)


def _other_host_holds(lock_file: Path, tmp_path: Path):
    """Another host's cleanup of the same store: its own state folder, the same lock file."""
    from sessionctl.app.locking import StoreLock

    return StoreLock(tmp_path / "other-host-state", "elsewhere", "app", beside=lock_file).acquire()


@pytest.mark.parametrize("where", ["stores.app", "defaults"])
def test_a_lock_beside_a_json_file_keeps_a_second_host_out(cli, tmp_path, where):
    from helpers import one_line_error

    path = tmp_path / "shared" / "sessions.json"
    path.parent.mkdir()
    path.write_text(f"[{_expired('a')}, {_active('b')}, {_expired('c')}]")
    config = _config(tmp_path, f"json:{path}", "store", where)
    lock_file = tmp_path / "shared" / "sessions.json.sessionctl.lock"
    archive = _cleanup_with(cli, config)["archive"]
    assert lock_file.exists()  # left in place: removing it would race a waiting run
    text = path.read_text()
    held = _other_host_holds(lock_file, tmp_path)
    try:
        result = cli("--config", config, "cleanup", "-s", "app", "--all", "--yes", code=4)
        line = one_line_error(result)
        assert "another cleanup of app is running" in line and "pid" in line
        one_line_error(cli("--config", config, "restore", "-s", "app", archive, code=4))
        assert path.read_text() == text
    finally:
        held.release()
    cli("--config", config, "restore", "-s", "app", archive)
    # Without lock = "store", a run does not look beside the store (the default).
    held = _other_host_holds(lock_file, tmp_path)
    try:
        assert _cleanup(cli, f"json:{path}", "--expired")["deleted"] == 2
    finally:
        held.release()


def test_a_lock_inside_a_folder_store_is_not_a_session(cli, tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "a.json").write_text(_expired("a"))
    (folder / "b.json").write_text(_active("b"))
    config = _config(tmp_path, f"jsondir:{folder}", "store")
    held = _other_host_holds(folder / ".sessionctl.lock", tmp_path)
    try:
        cli("--config", config, "cleanup", "-s", "app", "--expired", code=4)
        assert sorted(p.name for p in folder.iterdir()) == [".sessionctl.lock", "a.json", "b.json"]
    finally:
        held.release()
    assert _cleanup_with(cli, config)["deleted"] == 1
    listed = json.loads(cli("--config", config, "list", "-s", "app", "-f", "json").stdout)
    assert [s["id"] for s in listed] == ["b"]
    assert (folder / ".sessionctl.lock").exists()


def test_cleanup_lock_store_on_the_command_line(cli, tmp_path):
    from helpers import one_line_error

    path = tmp_path / "sessions.json"
    path.write_text(f"[{_expired('a')}, {_active('b')}]")
    held = _other_host_holds(tmp_path / "sessions.json.sessionctl.lock", tmp_path)
    try:
        result = cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "store", code=4)
        assert "another cleanup" in one_line_error(result)
        bad = cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "nfs", code=2)
        assert "--lock: invalid value 'nfs'" in one_line_error(bad)
    finally:
        held.release()
    assert _cleanup(cli, f"json:{path}", "--expired", "--lock", "store")["deleted"] == 1


def test_a_lock_setting_other_than_state_or_store_is_a_usage_error(cli, tmp_path):
    path = tmp_path / "sessions.json"
    path.write_text(f"[{_active('a')}]")
    result = cli("--config", _config(tmp_path, f"json:{path}", "nfs"), "list", "-s", "app", code=2)
    assert "lock: invalid value 'nfs'" in result.stderr


def test_inspecting_an_id_with_a_nul_in_a_folder_store_finds_nothing(cli, tmp_path):
    from helpers import one_line_error

    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "a.json").write_text(_active("a"))
    result = cli("inspect", "-s", f"jsondir:{folder}", "--", "a\x00", code=None)
    assert result.exit_code in (1, 2), result.stderr
    assert "no session" in one_line_error(result)


def test_an_infinite_sqlite_value_is_archived_as_json_and_restored_as_a_float(cli, tmp_path):
    import sqlite3

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE django_session (session_key TEXT PRIMARY KEY, session_data TEXT, "
        "expire_date TEXT, score REAL)"
    )
    rows = [("gone", "d", "2020-01-01 00:00:00", float("inf")), ("kept", "d", SOON, -1.5)]
    conn.executemany("INSERT INTO django_session VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    result = _cleanup(cli, f"sqlite:{path}?table=django_session", "--expired")
    assert result["deleted"] == 1
    entry = _strict_lines(Path(result["archive"]))[1]
    assert entry["record"]["score"] == {"$float": "Infinity"}
    cli("restore", result["archive"])
    conn = sqlite3.connect(path)
    restored = conn.execute(
        "SELECT score, typeof(score) FROM django_session WHERE session_key = 'gone'"
    )
    assert restored.fetchall() == [(float("inf"), "real")]
    conn.close()


def _nested(sid: str, when: str, spacing: int) -> str:
    """An express-session shaped session (its expiry at sess.cookie.expires), indented."""
    value = {
        "sid": sid,
        "sess": {"cookie": {"expires": when, "path": "/"}, "passport": {"user": sid[-3:]}},
    }
    return json.dumps(value, indent=spacing).replace("\n", "\n  ")


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_thousands_of_survivors_keep_their_bytes_whatever_the_separators(cli, tmp_path, shape):
    """Survivors of a cleanup are the original text with the removed elements (and the
    separator before each) cut out: compact, spaced, tabbed and CRLF separators alike, key
    names shared between sessions, every other session expired."""
    separators = [",", " , ", ",\r\n  ", "\t,\t", ",\n  ", "  ,"]
    elements = []
    for i in range(3000):
        when = PAST if i % 2 else SOON
        if shape == "flat":
            text = f'{{"session_id":"s{i:05d}","expires_at":"{when}","n":{i}.0{"0" * (i % 3)}}}'
        else:
            text = _nested(f"sid{i:05d}", when, 1 + i % 3)
        elements.append(text)
    seps = [separators[i % len(separators)] for i in range(len(elements) - 1)]
    head, tail = "[ \r\n  ", "\n]\n"
    text = head + elements[0] + "".join(s + e for s, e in zip(seps, elements[1:])) + tail
    path = tmp_path / "sessions.json"
    path.write_bytes(text.encode())
    args = ["--expired", "--no-archive"]
    if shape == "nested":
        args += ["--field", "id=sid", "--field", "expires=sess.cookie.expires"]
    result = _cleanup(cli, f"json:{path}", *args)
    assert result["deleted"] == 1500 and result["total"] == 3000
    kept = [i for i in range(len(elements)) if i % 2 == 0]
    expected = head + elements[kept[0]]
    expected += "".join(seps[i - 1] + elements[i] for i in kept[1:]) + tail
    assert path.read_bytes() == expected.encode()
    assert path.with_name("sessions.json.bak").read_bytes() == text.encode()


def test_a_store_read_again_before_its_rewrite_is_compared_not_copied(tmp_path):
    """The rewrite reads the file again: the same bytes give back the copy already held (one
    copy in memory, not two); any difference, longer or shorter, gives the file's own bytes."""
    import os

    from sessionctl.stores.jsonfile import _CHUNK, _holds, _read_all

    known = (b"[" + b'{"a":1},' * (_CHUNK // 4) + b"{}]")[: 2 * _CHUNK + 17]
    path = tmp_path / "s.json"
    for content, same in [
        (known, True),
        (known[:-1] + b"x", False),
        (known[:_CHUNK] + b"y" + known[_CHUNK + 1 :], False),
        (known + b"\n", False),
        (known[:-5], False),
        (b"", False),
    ]:
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            read = _read_all(fd, known)
            assert read == content
            assert (read is known) == same
            assert _holds(fd, known) == same
            assert _holds(fd, content)
        finally:
            os.close(fd)


def test_sessions_of_an_array_share_their_key_names_and_keep_their_own_values(tmp_path):
    """Each element is scanned alone; its key names are shared with the elements before it
    (memory: a third of small sessions), never its values."""
    from sessionctl.stores.jsonfile import Document

    raw = b'[{"session_id": "a", "tags": [1]}, {"session_id": "b", "tags": [2]}, 7]'
    document = Document(raw, tmp_path / "s.json")
    first, second, third = document.container
    assert [list(first), list(second)] == [["session_id", "tags"], ["session_id", "tags"]]
    assert all(a is b for a, b in zip(first, second))
    assert first == {"session_id": "a", "tags": [1]} and second == {"session_id": "b", "tags": [2]}
    assert first["tags"] is not second["tags"] and third == 7
