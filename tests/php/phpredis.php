<?php
// phpredis's session handler (redis_session.c, Debian's php-redis), run by tests/redisfix.py
// with `php -d session.save_handler=redis -d session.save_path=tcp://HOST:PORT?database=N&prefix=P`
// (prefix defaults to "PHPREDIS_SESSION:") and -d redis.session.locking_enabled=0|1.
//
// Reads one JSON request on stdin, prints one JSON answer on stdout.
// - "write": for each of "sessions" ([{"sid": id or null, "lifetime": s, "data": {...}}]):
//   session.gc_maxlifetime = lifetime, session_id(sid) (a new id from session_create_id() when
//   null), session_start(), $_SESSION = data, session_write_close(): phpredis writes
//   SETEX prefix+sid lifetime payload. Answers {"sids": [...]}.
// - "hold": session_start() on "sid" with locking enabled (phpredis SETs prefix+sid+"_LOCK" to
//   "host|pid", NX, with an expiry only when redis.session.lock_expire or max_execution_time is
//   set: never in the CLI), prints "ready\n" and sleeps until killed: killed with SIGKILL, the
//   request leaves its lock key behind, as a crashed PHP-FPM worker does.
// - "read": {"sids": [...]} -> {"loaded": {sid: $_SESSION}}.
$request = json_decode(stream_get_contents(STDIN), true);
$action = $request['action'];
if ($action === 'write') {
    $sids = [];
    foreach ($request['sessions'] as $spec) {
        ini_set('session.gc_maxlifetime', (string)$spec['lifetime']);
        $sid = $spec['sid'] ?? session_create_id();
        session_id($sid);
        if (!session_start()) {
            fwrite(STDERR, "session_start failed\n");
            exit(1);
        }
        $_SESSION = $spec['data'];
        if (!session_write_close()) {
            fwrite(STDERR, "session_write_close failed\n");
            exit(1);
        }
        $sids[] = $sid;
    }
    echo json_encode(['sids' => $sids]);
} elseif ($action === 'hold') {
    session_id($request['sid']);
    if (!session_start()) {
        exit(1);
    }
    echo "ready\n";
    flush();
    sleep((int)($request['seconds'] ?? 600));
} elseif ($action === 'read') {
    $loaded = [];
    foreach ($request['sids'] as $sid) {
        session_id($sid);
        session_start(['read_and_close' => true]);
        $loaded[$sid] = $_SESSION;
        $_SESSION = [];
    }
    echo json_encode(['loaded' => $loaded]);
} else {
    fwrite(STDERR, "unknown action $action\n");
    exit(1);
}
