<?php
// PHP's own file session handler (ext/session mod_files.c), run by tests/phpfix.py with
// `php -d session.save_path=... -d session.serialize_handler=...` (and gc settings).
//
// Reads one JSON request on stdin, prints one JSON answer on stdout.
// - "write": for each of "sessions" ([{"sid": id, "data": {...}} or {"sid": id, "php": expr}]):
//   session_id(sid); session_start(); $_SESSION = data; session_write_close(). "php" is a PHP
//   expression evaluated here to build $_SESSION (objects, references, floats...), so the file
//   holds exactly what PHP serializes for it. Answers {"sids": [...]}.
// - "gc": PHP's own garbage collection with the gc_maxlifetime given on the command line:
//   session_gc() needs an active session, so one is started with a fresh id and destroyed
//   afterwards. Answers {"gc": number session_gc() returned (false: -1)}.
// - "hold": session_start() on "sid" (which takes flock(LOCK_EX) on its file, as a request
//   does), prints "ready\n" and sleeps until killed: a request in progress.
// - "read": {"sids": [...]} -> {"loaded": {sid: $_SESSION}} (read_and_close: no write back).
$request = json_decode(stream_get_contents(STDIN), true);
$action = $request['action'];
if ($action === 'write') {
    $sids = [];
    foreach ($request['sessions'] as $spec) {
        session_id($spec['sid']);
        if (!session_start()) {
            fwrite(STDERR, "session_start failed for {$spec['sid']}\n");
            exit(1);
        }
        $_SESSION = isset($spec['php']) ? eval('return ' . $spec['php'] . ';') : $spec['data'];
        if (!session_write_close()) {
            fwrite(STDERR, "session_write_close failed for {$spec['sid']}\n");
            exit(1);
        }
        $sids[] = $spec['sid'];
    }
    echo json_encode(['sids' => $sids]);
} elseif ($action === 'gc') {
    session_start();
    $n = session_gc();
    session_destroy();
    echo json_encode(['gc' => $n === false ? -1 : $n]);
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
