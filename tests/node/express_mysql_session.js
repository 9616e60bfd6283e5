// express-mysql-session itself, through express-session's Store API, on a MySQL/MariaDB database.
// tests/mysql.py runs this with NODE_PATH pointing at the modules installed from package-lock.json.
//
// Reads one JSON request on stdin, prints one JSON answer on stdout.
// Request: {"mysql": {"host", "port" or "socketPath", "user", "password", "database"}, "action": ...,
//           "table": optional (default "sessions"), ...}
// - "write": the store creates its own table from the package's schema.sql
//   (createDatabaseTable, the default: `sessions(session_id varchar(128) utf8mb4_bin PK,
//   expires int(11) unsigned, data mediumtext)`, no index on expires), then store.set(sid,
//   session) for each of "sessions" ([{"expires_in": seconds, "data": {...}, "sid": optional}]).
//   Each session's cookie is express-session's own Cookie with maxAge = expires_in * 1000: the
//   store writes expires = round(cookie.expires / 1000), unix seconds, in the past for a negative
//   number (it does not check), and data = JSON.stringify(session). Answers {"sids": [...]}.
// - "prune": the store's own clearExpiredSessions() (DELETE ... WHERE expires < round(now / 1000),
//   one statement, no LIMIT); answers {"before": n, "after": n, "removed": n}.
// - "load": {"sids": [...]} -> {"loaded": {sid: session or null}} through store.get(), which is
//   null for a missing session and for one whose expires is past.
// The store runs with clearExpired: false, so its 15-minute setInterval never starts here.
'use strict';

const crypto = require('node:crypto');
const session = require('express-session');
const MySQLStore = require('express-mysql-session')(session);
const mysql = require('mysql2/promise');

function readStdin () {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', chunk => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
    process.stdin.on('error', reject);
  });
}

async function main () {
  const request = JSON.parse(await readStdin());
  const table = request.table || 'sessions';
  // The store makes its own mysql2 pool from these options (host, port, user, password,
  // database); it passes no socketPath on, so for a socket it is handed a pool, as an
  // application may do (the store then leaves that pool open: it is ended below).
  const pool = request.mysql.socketPath ? mysql.createPool(request.mysql) : undefined;
  const store = new MySQLStore({
    ...request.mysql,
    clearExpired: false,
    schema: { tableName: table }
  }, pool);
  await store.onReady();
  const conn = await mysql.createConnection(request.mysql);
  const count = async () => {
    const [rows] = await conn.query('SELECT COUNT(*) AS n FROM ??', [table]);
    return Number(rows[0].n);
  };
  let out;
  try {
    if (request.action === 'write') {
      const sids = [];
      for (const [index, spec] of (request.sessions || []).entries()) {
        // express-session's default genid is uid-safe(24): 32 characters of base64url.
        const sid = spec.sid || crypto.randomBytes(24).toString('base64url');
        const cookie = new session.Cookie({ maxAge: Number(spec.expires_in) * 1000 });
        const sess = { cookie, ...(spec.data || { user: `user${index + 1}` }) };
        await store.set(sid, sess);
        sids.push(sid);
      }
      out = { sids };
    } else if (request.action === 'prune') {
      const before = await count();
      await store.clearExpiredSessions();
      const after = await count();
      out = { before, after, removed: before - after };
    } else if (request.action === 'load') {
      const loaded = {};
      for (const sid of request.sids) loaded[sid] = (await store.get(sid)) || null;
      out = { loaded };
    } else {
      throw new Error(`unknown action ${request.action}`);
    }
  } finally {
    await store.close();
    if (pool) await pool.end();
    await conn.end();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch(err => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
