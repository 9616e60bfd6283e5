"""Django itself, in a process of its own, on a PostgreSQL or MySQL/MariaDB database (tests/pg.py
and tests/mysql.py run this).

Reads one JSON request on stdin, prints one JSON answer on stdout. Django's global settings live
and die in this process, never in the test process.

Request: {"dsn": "postgresql://..." or "mysql://..." / "mariadb://...", "action": ..., ...}
A mysql:// or mariadb:// URL takes Django's own MySQL backend (django.db.backends.mysql) with
PyMySQL standing in for mysqlclient (pymysql.install_as_MySQLdb(): mysqlclient needs a compiler
and headers). Django 5.2 asks for mysqlclient >= 1.4.3 through MySQLdb.version_info, and PyMySQL
2.2 reports its own (2, 2, x), so no version patch is needed. Django makes expire_date a
datetime(6) there and, with USE_TZ=True, writes it as naive UTC (MySQL has no zone-aware type).
- "write": migrate (Django's own migrations make django_session), then write each of
  "sessions" ([{"expires_in": seconds, "data": {...}, "set_expiry": true}]) through
  django.contrib.sessions.backends.db.SessionStore. With set_expiry (the default) the session
  calls set_expiry(seconds) before it is saved: Django then writes expire_date = now + seconds,
  also when that is in the past (a negative number: save() does not refuse it), and keeps the
  age in the payload as "_session_expiry". Without it, the session is saved with Django's default
  age (SESSION_COOKIE_AGE) and expire_date is moved afterwards through the ORM, as an application
  that never calls set_expiry leaves it: no "_session_expiry" in the payload.
  Answers {"keys": [...]} in the order given.
- "load": {"keys": [...]} -> {"loaded": {key: data or {}}}: SessionStore(session_key=k).load(),
  which is {} for a session that is missing, expired or whose signature does not verify (and for
  one whose data is empty: so "write" never writes one with no data, {"user_id": n} by default).
- "clearsessions": Django's own `manage.py clearsessions`; answers {"before": n, "after": n,
  "removed": n, "survivors": [...], "not_loading": [...]}: every survivor is loaded through
  SessionStore, and those that come back empty are listed in not_loading.
"""

import json
import sys
from datetime import timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

#: Fixed, so that a later process (sessionctl's test, then this script again) verifies the
#: signatures the first one wrote.
SECRET_KEY = "sessionctl-tests-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def is_mysql(dsn: str) -> bool:
    return urlsplit(dsn).scheme in ("mysql", "mariadb")


def database_settings(dsn: str) -> dict:
    url = urlsplit(dsn)
    settings = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "",
        "PORT": str(url.port or ""),
    }
    if is_mysql(dsn):
        settings["ENGINE"] = "django.db.backends.mysql"
        settings["OPTIONS"] = {"charset": "utf8mb4"}
        socket = dict(parse_qsl(url.query)).get("unix_socket")
        if socket:  # Django's MySQL backend takes a socket path as HOST
            settings["HOST"] = socket
    return settings


def setup(dsn: str) -> None:
    import django
    from django.conf import settings

    if is_mysql(dsn):
        import pymysql

        pymysql.install_as_MySQLdb()
    settings.configure(
        DATABASES={"default": database_settings(dsn)},
        INSTALLED_APPS=["django.contrib.sessions"],
        USE_TZ=True,
        SECRET_KEY=SECRET_KEY,
        SESSION_ENGINE="django.contrib.sessions.backends.db",
    )
    django.setup()


def write(request: dict) -> dict:
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0, interactive=False)
    keys = []
    for spec in request.get("sessions", []):
        seconds = int(spec["expires_in"])
        store = SessionStore()
        # A session with no data loads as {} like a missing one: give each one something.
        for name, value in (spec.get("data") or {"user_id": len(keys) + 1}).items():
            store[name] = value
        if spec.get("set_expiry", True):
            # set_expiry(0) would mean "until the browser closes" (the default age in the table).
            store.set_expiry(seconds if seconds else timedelta(0))
            store.create()
        else:
            store.create()
            Session.objects.filter(session_key=store.session_key).update(
                expire_date=timezone.now() + timedelta(seconds=seconds)
            )
        keys.append(store.session_key)
    return {"keys": keys}


def load(request: dict) -> dict:
    from django.contrib.sessions.backends.db import SessionStore

    return {"loaded": {key: SessionStore(session_key=key).load() for key in request["keys"]}}


def clearsessions(request: dict) -> dict:
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command

    before = Session.objects.count()
    call_command("clearsessions", verbosity=0)
    survivors = sorted(Session.objects.values_list("session_key", flat=True))
    not_loading = [k for k in survivors if not SessionStore(session_key=k).load()]
    return {
        "before": before,
        "after": len(survivors),
        "removed": before - len(survivors),
        "survivors": survivors,
        "not_loading": not_loading,
    }


def setup_redis_cache(request: dict) -> None:
    """Cache sessions (tests/redisfix.py): SESSION_ENGINE ...backends.cache on Django's own
    RedisCache, KEY_PREFIX request["key_prefix"]: keys KEY_PREFIX + ":1:" +
    "django.contrib.sessions.cache" + session key, pickled values, SET EX the session's age."""
    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": request["redis_url"],
                "KEY_PREFIX": request["key_prefix"],
            }
        },
        INSTALLED_APPS=["django.contrib.sessions"],
        USE_TZ=True,
        SECRET_KEY=SECRET_KEY,
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
    )
    django.setup()


def write_cache(request: dict) -> dict:
    """Each of "sessions" through the cache SessionStore, set_expiry(expires_in) (> 0) first."""
    from django.contrib.sessions.backends.cache import SessionStore

    keys = []
    for spec in request.get("sessions", []):
        store = SessionStore()
        for name, value in (spec.get("data") or {"user_id": len(keys) + 1}).items():
            store[name] = value
        store.set_expiry(int(spec["expires_in"]))
        store.create()
        keys.append(store.session_key)
    return {"keys": keys}


def load_cache(request: dict) -> dict:
    from django.contrib.sessions.backends.cache import SessionStore

    return {"loaded": {key: SessionStore(session_key=key).load() for key in request["keys"]}}


def main() -> None:
    request = json.load(sys.stdin)
    if request.get("backend") == "redis_cache":
        setup_redis_cache(request)
        action = {"write": write_cache, "load": load_cache}[request["action"]]
        json.dump(action(request), sys.stdout)
        return
    setup(request["dsn"])
    action = {"write": write, "load": load, "clearsessions": clearsessions}[request["action"]]
    json.dump(action(request), sys.stdout)


if __name__ == "__main__":
    main()
