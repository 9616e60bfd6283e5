"""Flask-Session's SQLAlchemy backend, in a process of its own, on a PostgreSQL or MySQL/MariaDB
database (tests/pg.py and tests/mysql.py run this).

Reads one JSON request on stdin, prints one JSON answer on stdout.

Request: {"dsn": "postgresql://..." or "mysql://..." / "mariadb://...", "action": ..., ...}
SQLAlchemy drives PostgreSQL through psycopg 3 and MySQL/MariaDB through PyMySQL.
- "write": Flask-Session creates its own "sessions" table (SqlAlchemySessionInterface creates it
  when missing), then each of "sessions" ([{"expires_in": seconds, "data": {...}}]) is written by
  a real request through Flask's test client, with PERMANENT_SESSION_LIFETIME set to the given
  seconds first: Flask-Session writes expiry = datetime.utcnow() + lifetime (naive UTC; a
  negative lifetime writes a session already expired, as one written that long ago).
  Answers {"sids": [...], "store_ids": [...]}: the cookie's id and the table's session_id
  ("session:" + sid).
- "cleanup": Flask-Session's own `flask session_cleanup` command (DELETE ... WHERE expiry <=
  utcnow()); answers {"before": n, "after": n, "removed": n}.
- "load": {"sids": [...]} -> {"loaded": {sid: data or null}}, each read by a request carrying
  the cookie. Careful: Flask-Session deletes an expired session when it reads it.
"""

import json
import sys
from datetime import timedelta


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy URL of a postgresql://, mysql:// or mariadb:// URL, with its driver."""
    scheme, rest = dsn.split("://", 1)
    if scheme in ("mysql", "mariadb"):
        # utf8mb4: PyMySQL's own default charset is utf8mb4 too, said here so it stays that way.
        return f"mysql+pymysql://{rest}{'&' if '?' in rest else '?'}charset=utf8mb4"
    return f"postgresql+psycopg://{rest}"


def make_app(dsn: str):
    from flask import Flask, jsonify, request, session
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("sessionctl_tests")
    app.config.update(
        SECRET_KEY="sessionctl-tests-not-a-secret",
        SESSION_TYPE="sqlalchemy",
        SQLALCHEMY_DATABASE_URI=sqlalchemy_url(dsn),
        SESSION_PERMANENT=True,
        # Otherwise every read writes the session back with a fresh expiry ("load" would move it).
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    db = SQLAlchemy(app)
    app.config["SESSION_SQLALCHEMY"] = db

    @app.post("/write")
    def write_view():
        session.update(request.get_json())
        return "ok"

    @app.get("/read")
    def read_view():
        return jsonify(dict(session) or None)

    Session(app)
    return app, db


def make_redis_app(url: str, key_prefix: str):
    """Flask-Session's redis backend (tests/redisfix.py): keys key_prefix + sid, msgpack values,
    SET EX the permanent lifetime. Same views as make_app; no table, so no "cleanup"."""
    import redis
    from flask import Flask, jsonify, request, session
    from flask_session import Session

    app = Flask("sessionctl_tests")
    app.config.update(
        SECRET_KEY="sessionctl-tests-not-a-secret",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX=key_prefix,
        SESSION_PERMANENT=True,
        SESSION_REFRESH_EACH_REQUEST=False,
    )

    @app.post("/write")
    def write_view():
        session.update(request.get_json())
        return "ok"

    @app.get("/read")
    def read_view():
        return jsonify(dict(session) or None)

    Session(app)
    return app, None


def cookie_value(client, app) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None, "Flask-Session set no cookie"
    return cookie.value


def count(app, db) -> int:
    from sqlalchemy import text

    with app.app_context():
        return db.session.execute(text("SELECT count(*) FROM sessions")).scalar_one()


def main() -> None:
    request = json.load(sys.stdin)
    if request.get("backend") == "redis":
        app, db = make_redis_app(request["redis_url"], request["key_prefix"])
    else:
        app, db = make_app(request["dsn"])
    action = request["action"]
    if action == "write":
        sids = []
        for n, spec in enumerate(request.get("sessions", []), start=1):
            app.permanent_session_lifetime = timedelta(seconds=int(spec["expires_in"]))
            client = app.test_client()
            answer = client.post("/write", json=spec.get("data") or {"user_id": n})
            assert answer.status_code == 200, answer.status_code
            sids.append(cookie_value(client, app))
        prefix = app.session_interface.key_prefix
        out = {"sids": sids, "store_ids": [prefix + sid for sid in sids]}
    elif action == "cleanup":
        before = count(app, db)
        result = app.test_cli_runner().invoke(args=["session_cleanup"])
        assert result.exit_code == 0, result.output
        after = count(app, db)
        out = {"before": before, "after": after, "removed": before - after}
    elif action == "load":
        loaded = {}
        for sid in request["sids"]:
            client = app.test_client()
            client.set_cookie(app.config["SESSION_COOKIE_NAME"], sid)
            loaded[sid] = client.get("/read").get_json()
        out = {"loaded": loaded}
    else:
        raise SystemExit(f"unknown action {action!r}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
