"""The PHP session-file store (stores/files/php.py) on files PHP itself wrote (php-cli):
cleanup agrees with PHP's own GC and leaves nothing it would remove, survivors still load in
PHP, N-level save paths, a request holding its lock, the three serialize handlers, malformed
payloads invalid with their offsets, objects never instantiated, php.ini settings."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import one_line_error
from phpfix import (
    is_locked,
    php_gc,
    php_read_sessions,
    php_request_holding,
    php_session_dir,
    php_write_sessions,
    process_holding_flock,
)


def _ids(result) -> set[str]:
    return {row["id"] for row in json.loads(result.stdout)}


def _listed(cli, store, *args) -> dict[str, dict]:
    rows = json.loads(cli("list", "--store", store, "--format", "json", *args).stdout)
    return {row["id"]: row for row in rows}


@pytest.mark.parametrize("handler", ["php", "php_binary", "php_serialize"])
def test_cleanup_expired_leaves_nothing_for_php_gc_and_survivors_load_in_php(
    php_cli, tmp_path, cli, handler
):
    folder = php_session_dir(tmp_path / "sessions", handler=handler)
    written = php_write_sessions(folder, [10, 600, 1400, 1500, 7200, 86400 * 3])
    store = f"php:{folder.root}?handler={handler}"
    rows = _listed(cli, store)
    assert set(rows) == set(written.ids)
    assert {sid for sid, row in rows.items() if row["status"] == "expired"} == set(written.expired)
    cli("cleanup", "--store", store, "--expired", "--yes")
    assert set(folder.files()) == set(written.active)
    # PHP's own GC finds nothing more to remove, and PHP still reads every survivor.
    assert php_gc(folder, 1440)["removed"] == []
    loaded = php_read_sessions(folder, written.active)
    assert all(
        loaded[sid] == {"user_id": n} for n, sid in enumerate(written.ids, 1) if sid in loaded
    )
    assert set(loaded) == set(written.active)


def test_a_bare_folder_of_sess_files_is_php_and_gc_maxlifetime_is_the_idle_timeout(
    php_cli, tmp_path, cli
):
    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(folder, [100, 2000])
    result = cli("list", "--store", folder.root, "--format", "json", "--explain")
    assert f"store php:{folder.root} (php)" in result.stderr
    assert "idle_timeout=24m" in result.stderr  # PHP's default gc_maxlifetime, 1440 s
    rows = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert rows == {written.ids[0]: "active", written.ids[1]: "expired"}


def test_php_ini_gives_save_path_with_levels_handler_and_gc_maxlifetime(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "deep", depth=2, handler="php_serialize")
    written = php_write_sessions(folder, [30, 500, 5000, 99999], gc_maxlifetime=400)
    ini = tmp_path / "php.ini"
    ini.write_text(
        "[Session]\n"
        "session.save_handler = files\n"
        f'session.save_path = "{folder.save_path}"  ; two levels\n'
        "session.serialize_handler = php_serialize\n"
        "session.gc_maxlifetime = 400\n"
    )
    rows = _listed(cli, "php:", "--php-ini", ini)
    assert set(rows) == set(written.ids)
    assert {s for s, r in rows.items() if r["status"] == "expired"} == set(written.ids[1:])
    # PHP's own GC does nothing with "2;DIR": sessionctl does the work.
    assert php_gc(folder, 400)["returned"] == -1 and set(folder.files()) == set(written.ids)
    cli("cleanup", "--store", "php:", "--php-ini", ini, "--expired", "--yes")
    assert set(folder.files()) == {written.ids[0]}
    assert php_read_sessions(folder, [written.ids[0]]) == {written.ids[0]: {"user_id": 1}}
    # The same folder named with save_path syntax.
    assert set(_listed(cli, f'php:"2;{folder.root}"?handler=php_serialize')) == {written.ids[0]}


def test_a_request_holding_its_lock_is_never_removed(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(folder, [5000, 6000])
    busy, idle = written.ids
    path = folder.path_of(busy)
    before = path.stat().st_mtime
    with php_request_holding(folder, busy):
        assert is_locked(path)
        result = cli("cleanup", "--store", f"php:{folder.root}", "--expired", "--yes", code=None)
        assert path.exists() and path.stat().st_mtime == before
        assert not folder.path_of(idle).exists()
    assert result.exit_code in (0, 1)
    # Once the request is gone, its session goes too.
    cli("cleanup", "--store", f"php:{folder.root}", "--expired", "--yes")
    assert not path.exists()


def test_a_lock_held_by_any_process_keeps_the_file(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", depth=1)
    written = php_write_sessions(folder, [5000])
    path = folder.path_of(written.ids[0])
    with process_holding_flock(path):
        cli("cleanup", "--store", f"php:1;{folder.root}", "--expired", "--yes", code=None)
        assert path.exists()
    assert not list(folder.root.rglob(".sessionctl-removing.*"))


def test_a_file_whose_mtime_changed_after_selection_is_kept(php_cli, tmp_path):
    from sessionctl.stores import open_store, parse_address
    from sessionctl.stores.base import Candidate

    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(folder, [5000, 5000])
    store = open_store(parse_address(f"php:{folder.root}"))
    records = {r.key: r for r in store.iter_records()}
    candidates = [Candidate(k, store.fingerprint(r), k) for k, r in records.items()]
    touched = folder.path_of(written.ids[0])
    os.utime(touched)  # the application used it: PHP refreshes mtime
    archived = []
    outcome = store.remove(candidates, archived.extend)
    assert [r.key for r in outcome.removed] == [written.ids[1]]
    assert outcome.changed == [written.ids[0]] and touched.exists()


def test_malformed_payloads_are_invalid_with_their_offsets_and_objects_stay_data(
    php_cli, tmp_path, cli
):
    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(
        folder,
        [
            {
                "age": 60,
                "php": "(function () { $o = new ArrayObject([1]); $s = new SplStack; "
                'return ["user_id" => 3, "o" => $o, "s" => $s, "e" => new Exception("x")]; })()',
            },
            {"age": 60},
        ],
    )
    good, broken = written.ids
    folder.path_of(broken).write_bytes(b'user_id|i:4;name|s:10:"short";')
    rows = _listed(cli, f"php:{folder.root}")
    assert rows[good]["status"] == "active"
    assert rows[broken]["status"] == "invalid"
    text = json.dumps(rows[broken])
    assert "at byte 23" in text
    shown = json.loads(
        cli("inspect", "--store", f"php:{folder.root}", good, "-f", "json", "--show-secrets").stdout
    )["record"]
    # Objects are their class name and fields: PHP's own __PHP_Incomplete_Class_Name form.
    assert shown["user_id"] == 3
    assert shown["o"]["__PHP_Incomplete_Class_Name"] == "ArrayObject"
    assert shown["s"]["__PHP_Incomplete_Class_Name"] == "SplStack"
    exception = shown["e"]
    assert exception["__PHP_Incomplete_Class_Name"] == "Exception" and exception["message"] == "x"
    cli("cleanup", "--store", f"php:{folder.root}", "--invalid", "--yes")
    assert set(folder.files()) == {good}


def test_group_role_from_a_user_id_inside_the_session(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", handler="php_binary")
    sessions = [{"age": age, "data": {"user_id": 7}} for age in (10, 20, 30, 40)]
    sessions += [{"age": 15, "data": {"user_id": 8}}]
    written = php_write_sessions(folder, sessions)
    store = f"php:{folder.root}?handler=php_binary"
    cli("cleanup", "--store", store, "--field", "group=user_id", "--max-per-group", "2", "--yes")
    assert set(folder.files()) == {written.ids[0], written.ids[1], written.ids[4]}
    rows = _listed(cli, store, "--where", "user_id=8")
    assert set(rows) == {written.ids[4]}


def test_ctime_as_sessionclean_judges(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(folder, [5000])
    # mtime is 5000 s back; ctime is now (utime changes it): by ctime it is not expired.
    rows = _listed(cli, f"php:{folder.root}", "--field", "accessed=$ctime")
    assert rows[written.ids[0]]["status"] == "active"


def test_php_addresses_refused_in_one_line(tmp_path, cli):
    result = cli("list", "--store", "php:", code=2)
    assert "php.ini" in one_line_error(result)
    result = cli("list", "--store", f"php:x;{tmp_path}", code=2)
    assert "not a number of levels" in one_line_error(result)
    result = cli("list", "--store", f"php:{tmp_path}?handler=igbinary", code=2)
    assert "igbinary" in one_line_error(result)


_OPEN_ONLY = """
$f = fopen($argv[1], "r");
echo "ready\\n";
sleep(600);
"""


def test_check_open_spares_files_a_php_fpm_process_has_open(php_cli, tmp_path, cli):
    import shutil
    import subprocess

    folder = php_session_dir(tmp_path / "s")
    written = php_write_sessions(folder, [5000, 5000])
    held, free = (folder.path_of(sid) for sid in written.ids)
    # A process whose name (/proc/PID/comm) is php-fpm8.2: PHP's binary under that name,
    # holding the session file open without a lock.
    fpm = tmp_path / "bin" / "php-fpm8.2"
    fpm.parent.mkdir()
    shutil.copy(php_cli, fpm)
    proc = subprocess.Popen([fpm, "-r", _OPEN_ONLY, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "php-fpm8.2"
        store = f"php:{folder.root}"
        cli("cleanup", "--store", store, "--expired", "--yes", "--check-open", code=None)
        assert held.exists() and not free.exists()
        # Without --check-open, an open file without a lock is not in use for PHP: it goes.
        cli("cleanup", "--store", store, "--expired", "--yes")
        assert not held.exists()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_restore_puts_back_php_files_byte_for_byte_with_owner_and_mode(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", depth=1, handler="php")
    written = php_write_sessions(
        folder,
        [{"age": 5000, "php": '["user_id" => 9, "o" => new ArrayObject([1, 2]), "f" => 0.1]'}],
    )
    (sid,) = written.ids
    path = folder.path_of(sid)
    original = path.read_bytes()
    path.chmod(0o640)
    archive = tmp_path / "a.ndjson.gz"
    store = f"php:1;{folder.root}"
    cli("cleanup", "--store", store, "--expired", "--yes", "--archive", archive)
    assert not path.exists()
    cli("restore", archive, "--store", store)
    assert path.read_bytes() == original
    assert php_read_sessions(folder, [sid])[sid]["user_id"] == 9
    # Restored into the folder layout, with the mode and owner it had (archived with it).
    assert path.stat().st_mode & 0o777 == 0o640


def test_stats_counts_files_bytes_and_inodes(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", depth=2)
    written = php_write_sessions(folder, [10, 20, 5000])
    result = json.loads(cli("stats", "--store", f"php:{folder.root}", "--format", "json").stdout)
    assert result["total"] == 3 and result["expired"] == 1
    files = folder.files().values()
    assert result["size_bytes"] == sum(p.stat().st_size for p in files)
    figures = result["store_figures"]
    assert figures["session_files"] == 3 and figures["levels"] == 2
    assert figures["bytes_on_disk"] == sum(p.stat().st_blocks * 512 for p in files)
    assert figures["deepest_subfolders"] == 32 * 32
    assert 0 < figures["filesystem_inodes_free"] <= figures["filesystem_inodes_total"]
    text = cli("stats", "--store", f"php:{folder.root}").stdout
    assert "inodes" in text and written.ids


def test_schedule_install_for_the_web_server_user_pins_the_php_ini(
    php_cli, tmp_path, cli, monkeypatch
):
    folder = php_session_dir(tmp_path / "s", depth=2)
    php_write_sessions(folder, [10])
    ini = tmp_path / "etc" / "php.ini"
    ini.parent.mkdir()
    ini.write_text(f'session.save_path = "{folder.save_path}"\nsession.gc_maxlifetime = 900\n')
    monkeypatch.chdir(ini.parent)
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(cron_d))
    cli(
        "schedule",
        "install",
        "php-expired",
        "--every",
        "30m",
        "--system",
        "--user",
        "www-data",
        "--",
        "cleanup",
        "--expired",
        "--store",
        "php:",
        "--php-ini",
        "php.ini",
    )
    (line,) = [
        text
        for text in (cron_d / "sessionctl-php-expired").read_text().splitlines()
        if text and not text.startswith("#") and "=" not in text.split()[0]
    ]
    assert " www-data " in line and f"--php-ini {ini}" in line and "--store php:" in line


def test_symlinks_are_never_followed_or_removed_and_leftovers_are_put_back(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", depth=1)
    written = php_write_sessions(folder, [5000, 5000])
    victim = tmp_path / "victim"
    victim.write_bytes(b"user_id|i:1;")
    os.utime(victim, (time.time() - 9000,) * 2)
    sid = written.ids[0]
    link = folder.root / sid[0] / f"sess_{sid[0]}link"
    link.symlink_to(victim)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sess_zzz").write_bytes(b"user_id|i:2;")
    os.utime(elsewhere / "sess_zzz", (time.time() - 9000,) * 2)
    (folder.root / "w").symlink_to(elsewhere)  # a one-character "subfolder" elsewhere
    # A killed run left one file renamed aside: the next run puts it back first.
    other = folder.path_of(written.ids[1])
    trash = other.with_name(".sessionctl-removing." + other.name)
    other.rename(trash)
    os.utime(trash, (time.time() - 60,) * 2)
    rows = _listed(cli, f"php:1;{folder.root}")
    assert set(rows) == {sid}
    cli("cleanup", "--store", f"php:1;{folder.root}", "--expired", "--yes")
    assert link.is_symlink() and victim.read_bytes() == b"user_id|i:1;"
    assert (elsewhere / "sess_zzz").exists()
    assert other.exists() and not trash.exists()  # put back, and recent: kept
    assert not folder.path_of(sid).exists()


def test_cleanup_run_as_the_web_server_user_removes_its_sessions(php_cli, tmp_path, cli):
    """Sessions belong to www-data (0600, in its folder): a cleanup run as www-data removes
    them (the documented set-up: schedule install --system --user www-data)."""
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to become www-data")
    web = pwd.getpwnam("www-data")
    base = Path(tempfile.mkdtemp(prefix="sessionctl-www-", dir="/tmp"))
    try:
        base.chmod(0o755)
        folder = php_session_dir(base / "sessions", depth=1)
        written = php_write_sessions(folder, [10, 5000, 6000])
        state = base / "state"
        state.mkdir()
        for path in [folder.root, state, *folder.root.rglob("*")]:
            os.chown(path, web.pw_uid, web.pw_gid, follow_symlinks=False)
        folder.root.chmod(0o700)  # as Debian's /var/lib/php/sessions is 1733 root: ours stricter
        store = f"php:1;{folder.root}"
        # Everything the run needs is imported now, before the child gives up root.
        cli(
            "cleanup",
            "--store",
            store,
            "--expired",
            "--dry-run",
            env={"SESSIONCTL_STATE_DIR": str(state)},
        )
        pid = os.fork()
        if pid == 0:  # the child: www-data from here on
            code = 99
            try:
                os.setgroups([])
                os.setgid(web.pw_gid)
                os.setuid(web.pw_uid)
                result = cli.runner.invoke(
                    __import__("sessionctl.cli.app", fromlist=["app"]).app,
                    ["cleanup", "--store", store, "--expired", "--yes"],
                    env={"SESSIONCTL_STATE_DIR": str(state)},
                )
                code = result.exit_code
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert set(folder.files()) == {written.ids[0]}
        assert any(state.rglob("*.ndjson.gz"))  # archived, by www-data, in its state folder
    finally:
        shutil.rmtree(base)


def test_php_ini_in_the_config_and_its_conf_d(php_cli, tmp_path, cli):
    folder = php_session_dir(tmp_path / "s", handler="php_binary")
    written = php_write_sessions(folder, [100, 700, 5000])
    etc = tmp_path / "etc" / "php" / "8.2" / "fpm"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "php.ini").write_text(
        f"[Session]\nsession.save_path = {folder.root}\nsession.gc_maxlifetime = 1440\n"
    )
    # conf.d/*.ini come after php.ini, in name order, as PHP reads them.
    (etc / "conf.d" / "10-session.ini").write_text("session.serialize_handler = php_binary\n")
    (etc / "conf.d" / "20-short.ini").write_text("session.gc_maxlifetime = 600 ; ten minutes\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[stores.web]\naddress = "php:"\nphp_ini = "{etc / "php.ini"}"\n')
    result = cli("--config", config, "list", "--store", "web", "-f", "json", "--explain")
    rows = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert rows == dict(zip(written.ids, ["active", "expired", "expired"]))
    assert "idle_timeout=10m" in result.stderr
    # The command line still wins over php.ini.
    result = cli("--config", config, "list", "-s", "web", "-f", "json", "--idle-timeout", "1h")
    rows = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert [rows[sid] for sid in written.ids] == ["active", "active", "expired"]
    missing = cli("list", "--store", "php:", "--php-ini", tmp_path / "nope.ini", code=2)
    assert "nope.ini does not exist" in one_line_error(missing)
