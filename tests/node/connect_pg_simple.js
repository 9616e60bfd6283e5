// connect-pg-simple itself, through express-session's Store API, on a PostgreSQL database.
// tests/pg.py runs this with NODE_PATH pointing at the modules installed from package-lock.json.
//
// Reads one JSON request on stdin, prints one JSON answer on stdout.
// Request: {"conString": "postgresql://...", "action": ..., "timezone": optional, ...}
// - "write": the store creates its own table from the package's table.sql
//   (createTableIfMissing), then store.set(sid, session) for each of "sessions"
//   ([{"expires_in": seconds, "data": {...}, "sid": optional}]). Each session's cookie is
//   express-session's own Cookie with maxAge = expires_in * 1000, so cookie.expires is now plus
//   that, in the past for a negative number: connect-pg-simple stores the cookie's expires
//   (rounded up to the second) as-is, with no check, which is how an expired row looks after
//   the application wrote it that long ago. No UPDATE behind the store's back is needed.
//   Answers {"sids": [...]}.
// - "prune": the store's own pruneSessions() (DELETE ... WHERE expire < to_timestamp(now));
//   answers {"before": n, "after": n, "removed": n}.
// - "load": {"sids": [...]} -> {"loaded": {sid: session or null}} through store.get().
// "timezone" sets the connection's TimeZone (libpq options -c TimeZone=...): the "expire" column
// is a timestamp WITHOUT time zone, written and read in that zone.
'use strict';

const crypto = require('node:crypto');
const session = require('express-session');
const PGStore = require('connect-pg-simple')(session);

function readStdin () {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', chunk => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
    process.stdin.on('error', reject);
  });
}

function call (store, method, ...args) {
  return new Promise((resolve, reject) => {
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value)));
  });
}

async function main () {
  const request = JSON.parse(await readStdin());
  const conObject = { connectionString: request.conString };
  if (request.timezone) conObject.options = `-c TimeZone=${request.timezone}`;
  const store = new PGStore({
    conObject,
    tableName: request.table || 'session',
    schemaName: request.schema || undefined,
    createTableIfMissing: true,
    pruneSessionInterval: false,
    errorLog: (...args) => { console.error(...args); }
  });
  const pool = new (require('pg')).Pool(conObject);
  const table = store.quotedTable();
  const count = async () => Number((await pool.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
  let out;
  try {
    if (request.action === 'write') {
      const sids = [];
      for (const [index, spec] of (request.sessions || []).entries()) {
        // express-session's default genid is uid-safe(24): 32 characters of base64url.
        const sid = spec.sid || crypto.randomBytes(24).toString('base64url');
        const cookie = new session.Cookie({ maxAge: Number(spec.expires_in) * 1000 });
        const sess = { cookie, ...(spec.data || { user: `user${index + 1}` }) };
        await call(store, 'set', sid, sess);
        sids.push(sid);
      }
      if (!sids.length) await store._ensureSessionStoreTable();
      out = { sids };
    } else if (request.action === 'prune') {
      await store._ensureSessionStoreTable();
      const before = await count();
      await call(store, 'pruneSessions');
      const after = await count();
      out = { before, after, removed: before - after };
    } else if (request.action === 'load') {
      const loaded = {};
      for (const sid of request.sids) loaded[sid] = (await call(store, 'get', sid)) || null;
      out = { loaded };
    } else {
      throw new Error(`unknown action ${request.action}`);
    }
  } finally {
    await store.close();
    await pool.end();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch(err => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
