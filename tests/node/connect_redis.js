// connect-redis itself (with the node "redis" client), through express-session's Store API.
// tests/redisfix.py runs this with NODE_PATH pointing at the modules installed from
// package-lock.json.
//
// Reads one JSON request on stdin, prints one JSON answer on stdout.
// Request: {"url": "redis://...", "prefix": "...sess:", "action": ..., ...}
// - "write": store.set(sid, session) for each of "sessions" ([{"expires_in": seconds,
//   "data": {...}, "sid": optional, "disable_ttl": bool, "browser_session": bool}]), each through
//   a RedisStore of its own with the store options that session asks for:
//   - the session's cookie is express-session's own Cookie with maxAge = expires_in * 1000;
//     connect-redis then writes `SET prefix+sid JSON EX ceil(ms to cookie.expires / 1000)`;
//   - "browser_session": a cookie with no maxAge (no expires): the store's default ttl, 86400 s;
//   - "disable_ttl": the store's disableTTL option: a plain SET, the key never expires. With a
//     negative expires_in the cookie is already expired: connect-redis's set() would destroy
//     it, unless its ttl option says otherwise; an application with disableTTL and a ttl
//     function (here `() => 1`, ignored for the write) keeps it, which is what such a key looks
//     like after its cookie ran out with nothing in Redis to remove it.
//   Answers {"sids": [...]}.
// - "load": {"sids": [...]} -> {"loaded": {sid: session or null}} through store.get().
'use strict';

const crypto = require('node:crypto');
const session = require('express-session');
const { RedisStore } = require('connect-redis');
const { createClient } = require('redis');

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
  const client = createClient({ url: request.url });
  client.on('error', err => { console.error(err); });
  await client.connect();
  const prefix = request.prefix == null ? 'sess:' : request.prefix;
  let out;
  try {
    if (request.action === 'write') {
      const sids = [];
      for (const [index, spec] of (request.sessions || []).entries()) {
        const options = { client, prefix };
        if (spec.disable_ttl) {
          options.disableTTL = true;
          if (Number(spec.expires_in) <= 0) options.ttl = () => 1;
        }
        const store = new RedisStore(options);
        // express-session's default genid is uid-safe(24): 32 characters of base64url.
        const sid = spec.sid || crypto.randomBytes(24).toString('base64url');
        const cookie = new session.Cookie(
          spec.browser_session ? {} : { maxAge: Number(spec.expires_in) * 1000 });
        const sess = { cookie, ...(spec.data || { user: `user${index + 1}` }) };
        await call(store, 'set', sid, sess);
        sids.push(sid);
      }
      out = { sids };
    } else if (request.action === 'load') {
      const store = new RedisStore({ client, prefix });
      const loaded = {};
      for (const sid of request.sids) loaded[sid] = (await call(store, 'get', sid)) || null;
      out = { loaded };
    } else {
      throw new Error(`unknown action ${request.action}`);
    }
  } finally {
    await client.quit();
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch(err => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
