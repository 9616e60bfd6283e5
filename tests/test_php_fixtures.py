"""The PHP session-file fixtures themselves (tests/phpfix.py): files written by PHP's own file
handler, each serialize handler byte for byte, subfolder levels, PHP's own GC, held locks."""

import os
import stat
import subprocess
import sys
import time

import pytest

from pg import ROOT
from phpfix import (
    HASH_CHARS,
    is_locked,
    php_gc,
    php_read_sessions,
    php_request_holding,
    php_serialize,
    php_session_dir,
    php_write_sessions,
    process_holding_flock,
)


@pytest.mark.parametrize(
    "handler, payload",
    [
        ("php", b'user_id|i:7;name|s:3:"ann";'),
        ("php_binary", b'\x07user_idi:7;\x04names:3:"ann";'),
        ("php_serialize", b'a:2:{s:7:"user_id";i:7;s:4:"name";s:3:"ann";}'),
    ],
)
def test_php_writes_each_serialize_handler(php_cli, tmp_path, handler, payload):
    folder = php_session_dir(tmp_path / "sessions", handler=handler)
    written = php_write_sessions(folder, [{"age": 60, "data": {"user_id": 7, "name": "ann"}}])
    (sid,) = written.ids
    path = folder.path_of(sid)
    assert path == tmp_path / "sessions" / f"sess_{sid}" and path.read_bytes() == payload
    assert len(sid) == 26 and set(sid) <= set(HASH_CHARS[5])
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600  # mod_files.c opens with 0600
    assert abs(info.st_mtime - (time.time() - 60)) < 5
    assert php_read_sessions(folder, [sid]) == {sid: {"user_id": 7, "name": "ann"}}


def test_php_expressions_make_objects_floats_and_references(php_cli, tmp_path):
    folder = php_session_dir(tmp_path)
    written = php_write_sessions(
        folder,
        [
            {
                "php": '(function () { $o = new stdClass; $o->id = 5; return ["o" => $o, "f" => 0.5, "r" => $o]; })()'
            }
        ],
    )
    raw = folder.path_of(written.ids[0]).read_bytes()
    assert raw == b'o|O:8:"stdClass":1:{s:2:"id";i:5;}f|d:0.5;r|r:1;'


def test_php_gc_removes_what_is_older_than_gc_maxlifetime(php_cli, tmp_path):
    folder = php_session_dir(tmp_path)
    written = php_write_sessions(folder, [10, 1400, 1500, 86400], gc_maxlifetime=1440)
    assert written.expired == written.ids[2:] and written.active == written.ids[:2]
    result = php_gc(folder, gc_maxlifetime=1440)
    assert result["returned"] == 2
    assert result["removed"] == sorted(written.expired)
    assert result["after"] == sorted(written.active)  # and the session it started is gone too


def test_save_path_with_levels_has_mod_files_subfolders_and_php_gc_does_nothing(php_cli, tmp_path):
    folder = php_session_dir(tmp_path / "s", depth=2)
    assert folder.save_path == f"2;{tmp_path / 's'}"
    firsts = [p for p in (tmp_path / "s").iterdir()]
    assert sorted(p.name for p in firsts) == sorted(HASH_CHARS[5])
    assert sum(1 for p in (tmp_path / "s").glob("*/*") if p.is_dir()) == 32 * 32
    written = php_write_sessions(folder, [30, 5000, 99999])
    for sid in written.ids:
        assert folder.path_of(sid) == tmp_path / "s" / sid[0] / sid[1] / f"sess_{sid}"
        assert folder.path_of(sid).is_file()
    assert set(folder.files()) == set(written.ids)
    # "N;/dir": PHP's GC is "handled by an external entity" (mod_files.c PS_GC_FUNC): it removes
    # nothing and session_gc() returns false.
    result = php_gc(folder, gc_maxlifetime=1440)
    assert result["returned"] == -1 and result["removed"] == []
    assert len(written.expired) == 2


def test_a_running_php_request_holds_its_files_lock(php_cli, tmp_path):
    folder = php_session_dir(tmp_path)
    written = php_write_sessions(folder, [3000])
    path = folder.path_of(written.ids[0])
    mtime = path.stat().st_mtime
    assert not is_locked(path)
    with php_request_holding(folder, written.ids[0]) as proc:
        assert proc.poll() is None and is_locked(path)
    assert not is_locked(path)
    assert path.stat().st_mtime == mtime  # killed, it wrote nothing back


def test_a_python_process_can_hold_the_lock_too(tmp_path):
    path = tmp_path / "sess_x"
    path.write_bytes(b"")
    with process_holding_flock(path):
        assert is_locked(path)
    assert not is_locked(path)


def test_php_serialize_is_an_oracle(php_cli):
    assert php_serialize([1, "é", [1, 2], {"a": None}, 1.5, True]) == [
        b"i:1;",
        b's:2:"\xc3\xa9";',
        b"a:2:{i:0;i:1;i:1;i:2;}",
        b'a:1:{s:1:"a";N;}',
        b"d:1.5;",
        b"b:1;",
    ]


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_missing_php_skips_with_one_line_or_fails_under_ci(tmp_path, ci, outcome):
    import shutil

    for name in ("pg.py", "phpfix.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / name)
    (tmp_path / "conftest.py").write_text("from phpfix import php_cli  # noqa: F401\n")
    (tmp_path / "test_needs_php.py").write_text("def test_needs(php_cli):\n    pass\n")
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here"), "CI": ci}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[-1].split(" in ")[0].strip("= ") == outcome, done.stdout
    assert done.returncode == (1 if ci else 0), done.stdout
    said = [line for line in lines if "php-cli" in line]
    assert said and all("php is not installed (Debian package php-cli" in line for line in said)
    assert len(said) == (2 if ci else 1), done.stdout
    assert "Traceback" not in done.stdout
