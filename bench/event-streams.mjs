// The client side of bench/event-streams.sh: holds many idle GET /session/events streams open
// against oidc-bff, and times a back-channel logout's fan-out to them. Dependency-free (node:*
// only); loopback only (every URL must be http://127.0.0.1:…).
//
//   node bench/event-streams.mjs ISSUER CLIENT_ID
//
// It reads one command per line on stdin and answers each with exactly one line on stdout,
// "ok key=value …" or "fail <why>" (the shell script talks to it as a coprocess; progress and
// errors go to stderr). It exits when stdin closes. Commands:
//
//   use BFF_URL                    the oidc-bff the next commands talk to (no streams may be open)
//   login GROUP N USER SAME        N sessions (8 logins at a time) as USER0…USER{N-1}, or all as
//                                  USER when SAME is 1 → ok sessions= seconds= per_second=
//   open GROUP TOTAL PER           TOTAL streams, at most PER per session of GROUP; each counts
//                                  once its first event (`session`) has arrived → ok streams= seconds=
//   check GROUP                    → ok open= lost= (closed, not by us, without `ended`)
//                                  unexpected= (events other than session / keep-alive / ended)
//                                  ended= keepalives=
//   fanout GROUP SUB WITHIN_MS     signs a logout token naming only SUB at the IdP (/__test/sign),
//                                  POSTs it to /backchannel-logout and waits until every stream of
//                                  GROUP has `ended {"reason":"backchannel"}` →
//                                  ok streams= delivered= p50_ms= p90_ms= max_ms= post_ms= post_status=
//   close GROUP                    closes GROUP's streams (waits for their sockets; the sessions
//                                  stay for the next open) → ok closed=
//   cookie USER                    a fresh login's session cookie → ok cookie=<the Cookie header value>
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';

const [issuer, clientId] = process.argv.slice(2);
if (!issuer?.startsWith('http://127.0.0.1:') || !clientId) {
  console.error('usage: event-streams.mjs http://127.0.0.1:PORT/… CLIENT_ID');
  process.exit(2);
}
const idpOrigin = new URL(issuer).origin;
/** Loopback only: a URL that is not http://127.0.0.1:… is refused before anything is sent. */
function local(url) {
  const u = new URL(url);
  if (u.protocol !== 'http:' || u.hostname !== '127.0.0.1') throw new Error(`not a loopback URL: ${url}`);
  return u;
}
const snippet = (s) => String(s).replace(/\s+/g, ' ').slice(0, 300);

let base = null; // the oidc-bff, "http://127.0.0.1:PORT"
const groups = new Map(); // name -> { cookies: [..], streams: [..] }
const group = (name) => {
  if (!groups.has(name)) groups.set(name, { cookies: [], streams: [] });
  return groups.get(name);
};

// ---- plain HTTP with a cookie jar (a port of bench/login.py) ----

const loginAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** jar: Map host -> Map name -> value; every cookie of a host is sent, whatever its Path. */
function absorb(jar, host, setCookie) {
  if (!jar || !setCookie) return;
  if (!jar.has(host)) jar.set(host, new Map());
  const store = jar.get(host);
  for (const line of setCookie) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (!value || attrs.some((a) => a.trim().toLowerCase() === 'max-age=0')) store.delete(name);
    else store.set(name, value);
  }
}

function request(url, { method = 'GET', headers = {}, body, jar, timeout = 10000, agent = loginAgent } = {}) {
  const u = local(url);
  const h = { ...headers };
  const cookies = jar?.get(u.host);
  if (cookies?.size) h.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  if (body !== undefined) h['content-length'] = Buffer.byteLength(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          absorb(jar, u.host, res.headers['set-cookie']);
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() });
        });
      },
    );
    req.setTimeout(timeout, () => req.destroy(new Error(`no answer within ${timeout} ms: ${method} ${u.pathname}`)));
    req.on('error', reject);
    req.end(body);
  });
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Log in through the test IdP; the session cookie(s) as one Cookie header value. */
async function login(user) {
  const jar = new Map();
  let r = await request(`${base}/login`, { jar });
  if (r.status !== 302) throw new Error(`/login answered ${r.status}: ${snippet(r.body)}`);
  let url = new URL(r.headers.location, base).href;
  for (let step = 0; !url.startsWith(`${base}/`); step += 1) {
    if (step >= 12) throw new Error('login: more than 12 steps at the IdP');
    r = await request(url, { jar });
    if (REDIRECTS.has(r.status)) {
      url = new URL(r.headers.location, url).href;
      continue;
    }
    const m = /action="([^"]+)"/.exec(r.body);
    if (r.status !== 200 || !m) throw new Error(`IdP answered ${r.status}: ${snippet(r.body)}`);
    const action = new URL(m[1].replaceAll('&amp;', '&'), url).href;
    r = await request(action, {
      method: 'POST',
      body: `login=${encodeURIComponent(user)}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      jar,
    });
    if (!REDIRECTS.has(r.status)) throw new Error(`IdP login answered ${r.status}: ${snippet(r.body)}`);
    url = new URL(r.headers.location, action).href;
  }
  r = await request(url, { jar });
  if (r.status !== 302) throw new Error(`/callback answered ${r.status}: ${snippet(r.body)}`);
  const cookies = jar.get(new URL(base).host) ?? new Map();
  const session = [...cookies].filter(([k]) => /^(__Host-)?bff(\.\d)?$/.test(k));
  if (!session.length) throw new Error('no session cookie after the callback');
  return session.map(([k, v]) => `${k}=${v}`).join('; ');
}

/** Run fn(0…n-1), at most `limit` at a time; stop starting new ones after `maxErrors` errors. */
async function pool(n, limit, fn, maxErrors = 20) {
  let next = 0;
  const errors = [];
  const worker = async () => {
    while (next < n && errors.length < maxErrors) {
      const i = next++;
      try {
        await fn(i);
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return { started: next, errors };
}

function describe(errors, started) {
  const kinds = {};
  for (const e of errors) {
    const k = e.status ? `${e.status} ${e.code ?? ''}`.trim() : 'error';
    kinds[k] = (kinds[k] ?? 0) + 1;
  }
  const summary = Object.entries(kinds).map(([k, v]) => `${k} x${v}`).join(', ');
  return `${errors.length} of ${started} failed (${summary}); first: ${snippet(errors[0].message)}`;
}

// ---- event streams ----

/** Opens one stream; resolves once its first event, `session`, has arrived. */
function openStream(cookie, name) {
  const u = local(`${base}/session/events`);
  const s = {
    group: name, req: null, first: false, keepalives: 0, ended: null, endedAt: 0,
    unexpected: [], closing: false, closed: false, serverEnded: false,
  };
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, agent: false,
      headers: { 'x-csrf': '1', cookie, accept: 'text/event-stream' },
    });
    s.req = req;
    const timer = setTimeout(() => req.destroy(new Error('no `session` event within 15 s')), 15000);
    const fail = (e) => {
      clearTimeout(timer);
      reject(e);
    };
    req.on('error', (e) => {
      if (!s.first) fail(e);
    });
    req.on('close', () => {
      s.closed = true;
      if (!s.first) fail(new Error('closed before the first event'));
      s.onClose?.();
    });
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { body += c; });
        res.on('end', () => {
          const e = new Error(`GET /session/events answered ${res.statusCode}: ${snippet(body)}`);
          e.status = res.statusCode;
          try { e.code = JSON.parse(body).error; } catch { /* not JSON */ }
          fail(e);
          req.destroy();
        });
        return;
      }
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (chunk) => {
        const at = performance.now();
        buf += chunk;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const lines = buf.slice(0, i).split('\n');
          buf = buf.slice(i + 2);
          if (lines.every((l) => l.startsWith(':'))) {
            s.keepalives += 1;
            continue;
          }
          const event = lines.find((l) => l.startsWith('event: '))?.slice(7);
          const data = lines.find((l) => l.startsWith('data: '))?.slice(6);
          if (!s.first) {
            if (event !== 'session') {
              fail(new Error(`first event was ${event}, not session: ${snippet(data)}`));
              req.destroy();
              return;
            }
            s.first = true;
            clearTimeout(timer);
            resolve(s);
          } else if (event === 'ended' && !s.ended) {
            s.ended = data;
            s.endedAt = at;
            s.onEnded?.();
          } else {
            s.unexpected.push(`${event} ${snippet(data)}`);
          }
        }
      });
      res.on('end', () => { s.serverEnded = true; });
      res.on('error', () => {});
    });
    req.end();
  });
}

function stats(name) {
  const g = group(name);
  const open = g.streams.filter((s) => !s.closed).length;
  const lost = g.streams.filter((s) => s.closed && !s.closing && !s.ended).length;
  const unexpected = g.streams.reduce((n, s) => n + s.unexpected.length, 0);
  const ended = g.streams.filter((s) => s.ended).length;
  const keepalives = g.streams.reduce((n, s) => n + s.keepalives, 0);
  const sample = g.streams.find((s) => s.unexpected.length)?.unexpected[0];
  return { open, lost, unexpected, ended, keepalives, sample };
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))];

const commands = {
  async use(url) {
    for (const [name, g] of groups) {
      if (g.streams.some((s) => !s.closed)) throw new Error(`group ${name} still has open streams`);
    }
    local(url);
    base = url.replace(/\/$/, '');
    groups.clear();
    return 'base=' + base;
  },

  async login(name, n, user, same) {
    const g = group(name);
    const count = Number(n);
    const t0 = performance.now();
    const cookies = new Array(count);
    const { started, errors } = await pool(count, 8, async (i) => {
      cookies[i] = await login(same === '1' ? user : `${user}${i}`);
    });
    if (errors.length) throw new Error(describe(errors, started));
    const seconds = (performance.now() - t0) / 1000;
    g.cookies.push(...cookies);
    return `sessions=${count} seconds=${seconds.toFixed(2)} per_second=${(count / seconds).toFixed(1)}`;
  },

  async open(name, total, per) {
    const g = group(name);
    const n = Number(total);
    const perSession = Number(per);
    if (g.cookies.length * perSession < n) throw new Error(`group ${name}: ${g.cookies.length} sessions cannot hold ${n} streams`);
    const t0 = performance.now();
    const { started, errors } = await pool(n, 32, async (i) => {
      g.streams.push(await openStream(g.cookies[Math.floor(i / perSession)], name));
    });
    if (errors.length) throw new Error(`${describe(errors, started)} (${g.streams.length} open)`);
    return `streams=${g.streams.length} seconds=${((performance.now() - t0) / 1000).toFixed(2)}`;
  },

  async check(name) {
    const { open, lost, unexpected, ended, keepalives, sample } = stats(name);
    if (lost || unexpected) {
      throw new Error(`group ${name}: ${lost} streams closed by the server without an ended event, ` +
        `${unexpected} unexpected events${sample ? ` (e.g. ${sample})` : ''}`);
    }
    return `open=${open} lost=${lost} unexpected=${unexpected} ended=${ended} keepalives=${keepalives}`;
  },

  async fanout(name, sub, withinMs) {
    const g = group(name);
    const live = g.streams.filter((s) => !s.closed && !s.ended);
    if (!live.length) throw new Error(`group ${name} has no open streams`);
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: issuer, aud: clientId, iat: now, jti: `bench-${randomBytes(12).toString('hex')}`, sub,
      events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
    };
    const signed = await request(`${idpOrigin}/__test/sign`, {
      method: 'POST', agent: false,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ header: { typ: 'logout+jwt' }, payload }),
    });
    if (signed.status !== 200) throw new Error(`IdP /__test/sign answered ${signed.status}: ${snippet(signed.body)}`);
    const { jwt } = JSON.parse(signed.body);
    let delivered = 0;
    let allDelivered;
    const done = new Promise((r) => { allDelivered = r; });
    for (const s of live) {
      s.onEnded = () => {
        delivered += 1;
        if (delivered === live.length) allDelivered();
      };
    }
    const limit = Number(withinMs);
    const t0 = performance.now();
    const post = request(`${base}/backchannel-logout`, {
      method: 'POST', agent: false, timeout: limit,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `logout_token=${encodeURIComponent(jwt)}`,
    }).then((r) => ({ ...r, ms: performance.now() - t0 }));
    let timer;
    await Promise.race([done, new Promise((r) => { timer = setTimeout(r, limit); })]);
    clearTimeout(timer);
    const posted = await post.catch((e) => ({ status: 0, body: e.message, ms: performance.now() - t0 }));
    if (posted.status !== 200) {
      throw new Error(`POST /backchannel-logout answered ${posted.status}: ${snippet(posted.body)}`);
    }
    const want = '{"reason":"backchannel"}';
    const wrong = live.filter((s) => s.ended && s.ended !== want);
    if (wrong.length) throw new Error(`${wrong.length} streams ended with ${snippet(wrong[0].ended)}, not ${want}`);
    const within = live.filter((s) => s.ended && s.endedAt - t0 <= limit).length;
    if (within < live.length) {
      throw new Error(`only ${within} of ${live.length} streams got ended {"reason":"backchannel"} within ${limit} ms ` +
        `(${delivered} at all; the POST answered ${posted.status} after ${posted.ms.toFixed(1)} ms)`);
    }
    const ms = live.map((s) => s.endedAt - t0).sort((a, b) => a - b);
    // After `ended` the server closes the stream: give it up to 2 s.
    const closeBy = performance.now() + 2000;
    while (live.some((s) => !s.serverEnded) && performance.now() < closeBy) await new Promise((r) => setTimeout(r, 20));
    const serverClosed = live.filter((s) => s.serverEnded).length;
    return `streams=${live.length} delivered=${delivered} p50_ms=${pct(ms, 0.5).toFixed(1)} ` +
      `p90_ms=${pct(ms, 0.9).toFixed(1)} max_ms=${ms[ms.length - 1].toFixed(1)} first_ms=${ms[0].toFixed(1)} ` +
      `post_ms=${posted.ms.toFixed(1)} post_status=${posted.status} server_closed=${serverClosed}`;
  },

  async close(name) {
    const g = group(name);
    const open = g.streams.filter((s) => !s.closed);
    const closed = new Promise((resolve) => {
      let left = open.length;
      if (!left) resolve();
      for (const s of open) {
        s.onClose = () => { if (--left === 0) resolve(); };
        s.closing = true;
        s.req.destroy();
      }
    });
    let timer;
    await Promise.race([closed, new Promise((r) => { timer = setTimeout(r, 10000); })]);
    clearTimeout(timer);
    const still = g.streams.filter((s) => !s.closed).length;
    if (still) throw new Error(`${still} streams of ${name} still open 10 s after closing them`);
    g.streams = []; // the sessions stay: `open` may use them again
    return `closed=${open.length}`;
  },

  async cookie(user) {
    return `cookie=${await login(user)}`;
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
  const [cmd, ...args] = line.trim().split(/\s+/);
  if (!cmd) continue;
  let answer;
  try {
    if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
    if (cmd !== 'use' && !base) throw new Error('no oidc-bff chosen yet (use BFF_URL)');
    answer = `ok ${await commands[cmd](...args)}`;
  } catch (e) {
    console.error(`event-streams.mjs: ${cmd}: ${e.stack ?? e}`);
    answer = `fail ${cmd}: ${snippet(e.message ?? e)}`;
  }
  process.stdout.write(`${answer}\n`);
}
// stdin closed: the script is done (or gone); let every socket go.
process.exit(0);
