// Self-test of the echo API's DPoP checks (RFC 9449): starts it with startEcho() and sends good
// and bad proofs with plain fetch; then its WebSocket endpoint (RFC 6455) with a raw client
// written here, which can send what a browser never would (unmasked, fragmented, oversized
// frames), and with the runtime's own WebSocket client when it has one (Node 22+). Exits 0
// when every check passes, 1 otherwise.
//   node examples/echo-api/check.mjs
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';

import { jwkThumbprint, startEcho, websocketAccept } from './echo.mjs';

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const ok = (...a) => console.log('  ✓', ...a);
const now = () => Math.floor(Date.now() / 1000);

function newKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const jwk = { kty, crv, x, y };
  return { privateKey, jwk, jkt: jwkThumbprint(jwk) };
}

/** An access token shaped like the IdP's (the echo reads, never verifies, its payload). */
function accessToken(claims) {
  const enc = (o) => b64u(JSON.stringify(o));
  return `${enc({ alg: 'ES256', typ: 'at+jwt' })}.${enc({ sub: 'alice', aud: 'https://api.example.test/', scope: 'read', ...claims })}.${b64u(crypto.randomBytes(64))}`;
}

function proof(key, { htm = 'GET', htu, token, header = {}, claims = {}, sign = key.privateKey } = {}) {
  const enc = (o) => b64u(JSON.stringify(o));
  const body = {
    jti: b64u(crypto.randomBytes(16)), htm, htu, iat: now(),
    ...(token ? { ath: b64u(crypto.hash('sha256', token, 'buffer')) } : {}), ...claims,
  };
  const input = `${enc({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk, ...header })}.${enc(body)}`;
  return `${input}.${b64u(crypto.sign('sha256', Buffer.from(input), { key: sign, dsaEncoding: 'ieee-p1363' }))}`;
}

async function call(url, { method = 'GET', scheme = 'DPoP', token, dpop, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `${scheme} ${token}`;
  if (dpop) headers.dpop = dpop;
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: JSON.parse(text) };
}

/** Reject with `what` after `ms`. */
function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** One client frame: masked unless told otherwise, final unless told otherwise. */
function clientFrame(opcode, payload = Buffer.alloc(0), { fin = true, mask = true, length = payload.length } = {}) {
  const head = [((fin ? 0x80 : 0) | opcode)];
  const m = mask ? 0x80 : 0;
  if (length < 126) head.push(m | length);
  else if (length < 0x10000) head.push(m | 126, length >> 8, length & 0xff);
  else {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(length));
    head.push(m | 127, ...b);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = crypto.randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i += 1) masked[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), key, masked]);
}

/**
 * A minimal WebSocket client on a raw TCP socket: `open(url, headers)` resolves to
 * `{ status, headers, socket, frame(), skipTicks(), send(), closed }` after the handshake
 * (any status: a refused upgrade is an answer too).
 */
async function wsOpen(url, headers = {}) {
  const { hostname, port, pathname, search } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  await within(5000, 'connect', once(socket, 'connect'));
  const key = crypto.randomBytes(16).toString('base64');
  socket.write([
    `GET ${pathname}${search} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', '',
  ].join('\r\n'));
  let buf = Buffer.alloc(0);
  const frames = [];
  const waiters = [];
  const closed = new Promise((resolve) => { socket.once('close', resolve); });
  socket.on('error', () => {});
  const head = await within(5000, 'the handshake answer', new Promise((resolve, reject) => {
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const text = buf.subarray(0, end).toString('latin1');
      buf = buf.subarray(end + 4);
      resolve(text);
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('closed before the handshake answer')));
  }));
  const [statusLine, ...lines] = head.split('\r\n');
  const answer = {
    status: Number(statusLine.split(' ')[1]),
    headers: Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()])),
    key,
    socket,
    closed,
    rest: buf,
  };
  if (answer.status !== 101) return answer;
  // Server frames: never masked (the echo would be wrong to mask them: checked below).
  const parse = () => {
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) return;
      frames.push({ fin: (buf[0] & 0x80) !== 0, opcode: buf[0] & 0x0f, masked: (buf[1] & 0x80) !== 0, payload: buf.subarray(off, off + len) });
      buf = buf.subarray(off + len);
      while (waiters.length && frames.length) waiters.shift()(frames.shift());
    }
  };
  socket.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
  parse();
  answer.frame = (what = 'a frame', ms = 5000) => within(ms, what, frames.length
    ? Promise.resolve(frames.shift())
    : new Promise((resolve) => { waiters.push(resolve); }));
  /** The next frame that is not a tick. */
  answer.next = async (what, ms) => {
    for (;;) {
      const f = await answer.frame(what, ms);
      if (!(f.opcode === 1 && /^\{"tick":\d+\}$/.test(f.payload.toString()))) return f;
    }
  };
  answer.send = (opcode, payload, opts) => socket.write(clientFrame(opcode, Buffer.from(payload ?? ''), opts));
  return answer;
}

const closeOf = (f) => ({ opcode: f.opcode, code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString() });
const closeFrame = (code, reason = '') => {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code);
  b.write(reason, 2);
  return b;
};

/** The WebSocket endpoint, on an echo of its own (its request log starts empty). */
async function checkWebSockets(key) {
  const ws = await startEcho();
  const opened = [];
  const open = async (path, headers) => {
    const c = await wsOpen(`${ws.url}${path}`, headers);
    opened.push(c.socket);
    return c;
  };
  try {
    const unbound = accessToken({});
    let c = await open('/ws/tick?x=1', { authorization: `Bearer ${unbound}`, origin: 'http://app.example.test' });
    assert.equal(c.status, 101);
    assert.equal(c.headers['sec-websocket-accept'], websocketAccept(c.key));
    assert.equal(c.headers['sec-websocket-accept'], crypto.createHash('sha1').update(`${c.key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64'));
    assert.deepEqual([c.headers.upgrade.toLowerCase(), c.headers.connection.toLowerCase()], ['websocket', 'upgrade']);
    assert.equal(ws.wsOpen, 1);
    let f = await c.frame('the first tick', 3000);
    assert.deepEqual([f.fin, f.opcode, f.masked, f.payload.toString()], [true, 1, false, '{"tick":1}']);
    f = await c.frame('the second tick', 3000);
    assert.equal(f.payload.toString(), '{"tick":2}');
    ok('handshake: 101 with Sec-WebSocket-Accept; unmasked text ticks {"tick":1}, {"tick":2} a second apart');

    c.send(1, 'héllo ✓');
    f = await c.next('the text echo');
    assert.deepEqual([f.opcode, f.payload.toString()], [1, 'héllo ✓']);
    const bin = crypto.randomBytes(300);
    c.send(2, bin);
    f = await c.next('the binary echo');
    assert.deepEqual([f.opcode, Buffer.compare(f.payload, bin)], [2, 0]);
    const big = crypto.randomBytes(70_000); // a 64-bit length on the wire
    c.send(2, big);
    f = await c.next('the 70 kB echo');
    assert.deepEqual([f.opcode, f.payload.length, Buffer.compare(f.payload, big)], [2, big.length, 0]);
    // Fragmented text, a ping between the fragments, a character split across two of them.
    const word = Buffer.from('fragmented ✓ message');
    c.socket.write(Buffer.concat([
      clientFrame(1, word.subarray(0, 12), { fin: false }),
      clientFrame(9, Buffer.from('are you there')),
      clientFrame(0, word.subarray(12, 13), { fin: false }),
    ]));
    f = await c.next('the pong');
    assert.deepEqual([f.opcode, f.payload.toString()], [10, 'are you there']);
    c.send(0, word.subarray(13));
    f = await c.next('the reassembled echo');
    assert.deepEqual([f.fin, f.opcode, f.payload.toString()], [true, 1, word.toString()]);
    ok('echoes text (UTF-8), binary (300 B, 70 kB) with their opcodes; reassembles fragments; ping -> pong between fragments');

    c.send(8, closeFrame(1000, 'bye'));
    f = await c.next('the close reply');
    assert.deepEqual(closeOf(f), { opcode: 8, code: 1000, reason: '' });
    await within(3000, 'the echo to end the connection', c.closed);
    await within(2000, 'the close to be recorded', (async () => { while (ws.wsOpen) await new Promise((r) => { setTimeout(r, 20); }); })());
    assert.deepEqual(ws.wsCloses, [{ path: '/ws/tick', code: 1000, reason: 'bye' }]);
    ok('close 1000 "bye" -> close 1000 back, connection ended; wsCloses records it, wsOpen is 0');

    // Protocol errors: each closes with its code.
    const refused = async (what, send, code) => {
      const s = await open('/ws');
      send(s);
      const reply = await s.next(`the close for ${what}`);
      assert.deepEqual([reply.opcode, closeOf(reply).code], [8, code], what);
      await within(3000, `the end after ${what}`, s.closed);
    };
    await refused('an unmasked frame', (s) => s.send(1, 'x', { mask: false }), 1002);
    await refused('invalid UTF-8', (s) => s.send(1, Buffer.from([0xc3, 0x28])), 1007);
    await refused('a message over 4 MiB (header only)', (s) => s.socket.write(clientFrame(2, Buffer.alloc(0), { length: (4 << 20) + 1 }).subarray(0, 14)), 1009);
    await refused('fragments adding up to over 4 MiB', (s) => {
      s.socket.write(clientFrame(2, Buffer.alloc(3 << 20), { fin: false }));
      s.socket.write(clientFrame(0, Buffer.alloc(2 << 20)));
    }, 1009);
    await refused('a continuation without a message', (s) => s.send(0, 'x'), 1002);
    await refused('a fragmented ping', (s) => s.send(9, 'x', { fin: false }), 1002);
    await refused('an unknown opcode', (s) => s.send(3, 'x'), 1002);
    await refused('close code 1005 on the wire', (s) => s.send(8, closeFrame(1005)), 1002);
    ok('closes with 1002 (unmasked, stray continuation, fragmented ping, unknown opcode, code 1005 sent), 1007 (bad UTF-8), 1009 (over 4 MiB, also across fragments, refused on the header)');

    c = await open('/ws/x');
    c.send(8, Buffer.alloc(0));
    f = await c.next('the reply to an empty close');
    assert.deepEqual([f.opcode, f.payload.length], [8, 0]);
    await within(3000, 'the end', c.closed);
    c = await open('/ws/y');
    c.socket.destroy();
    await within(2000, 'the lost connection to be recorded', (async () => { while (ws.wsOpen) await new Promise((r) => { setTimeout(r, 20); }); })());
    assert.deepEqual(ws.wsCloses.slice(-2).map(({ path, code }) => [path, code]), [['/ws/x', 1005], ['/ws/y', 1006]]);
    ok('an empty close is recorded as 1005, a connection lost without one as 1006');

    // Refusals before the upgrade, all in the request log.
    c = await open('/api/ws');
    assert.equal(c.status, 404);
    c = await open('/wsx');
    assert.equal(c.status, 404, 'a prefix matches at a segment boundary only');
    c = await open('/ws', { 'Sec-WebSocket-Version': '8' });
    assert.equal(c.status, 400);
    const bound = accessToken({ cnf: { jkt: key.jkt } });
    c = await open('/ws/tick', { authorization: `Bearer ${bound}` });
    assert.equal(c.status, 401);
    assert.match(c.headers['www-authenticate'], /^Bearer error="invalid_token"/);
    c = await open('/ws/tick', { authorization: `DPoP ${bound}`, dpop: proof(key, { htu: `${ws.url}/ws/other`, token: bound }) });
    assert.equal(c.status, 401);
    assert.match(c.headers['www-authenticate'], /^DPoP error="invalid_dpop_proof"/);
    c = await open('/ws/tick', { authorization: `DPoP ${bound}`, dpop: proof(key, { htu: `${ws.url}/ws/tick`, token: bound }) });
    assert.equal(c.status, 101, 'a valid DPoP proof opens the socket');
    c.send(8, closeFrame(1001, 'going away'));
    await c.next('the close reply');
    ok('refused before the upgrade: other path 404, bad handshake 400, DPoP-bound token as Bearer 401, bad DPoP proof 401; a good proof 101');

    const res = await fetch(`${ws.url}/__echo/requests`);
    const text = await res.text();
    assert.ok(!text.includes(unbound) && !text.includes(bound), 'no token in /__echo/requests');
    const log = JSON.parse(text);
    assert.deepEqual(log[0], { ...log[0], method: 'GET', path: '/ws/tick', scheme: 'Bearer', status: 101, dpop: null, websocket: true });
    assert.deepEqual(log.map((e) => [e.path, e.status, e.scheme]).slice(-6), [
      ['/api/ws', 404, null], ['/wsx', 404, null], ['/ws', 400, null], ['/ws/tick', 401, 'Bearer'],
      ['/ws/tick', 401, 'DPoP'], ['/ws/tick', 101, 'DPoP'],
    ]);
    assert.equal(ws.requests.length, log.length);
    assert.deepEqual([ws.requests[0].path, ws.requests[0].origin, ws.requests[0].websocket, ws.requests[0].status],
      ['/ws/tick?x=1', 'http://app.example.test', true, 101]);
    const sockets = await (await fetch(`${ws.url}/__echo/websockets`)).json();
    assert.equal(sockets.closes.at(-1).code, 1001);
    assert.equal(sockets.closes.length, ws.wsCloses.length);
    await fetch(`${ws.url}/__echo/websockets`, { method: 'DELETE' });
    assert.deepEqual(await (await fetch(`${ws.url}/__echo/websockets`)).json(), { open: ws.wsOpen, closes: [] });
    ok('upgrades are in /__echo/requests (websocket: true, scheme, status, no token) and echo.requests; GET/DELETE /__echo/websockets');

    // The runtime's own client, when it has one: the same protocol as a browser speaks.
    if (typeof globalThis.WebSocket === 'function') {
      const client = new globalThis.WebSocket(`${ws.url.replace(/^http/, 'ws')}/ws/native`);
      const got = [];
      const echoed = new Promise((resolve, reject) => {
        client.onmessage = (e) => { got.push(e.data); if (e.data === 'from a real client') resolve(); };
        client.onerror = () => reject(new Error('WebSocket error'));
      });
      await within(5000, 'open', new Promise((resolve) => { client.onopen = resolve; }));
      client.send('from a real client');
      await within(5000, 'the echo', echoed);
      const done = new Promise((resolve) => { client.onclose = resolve; });
      client.close(4000, 'done');
      const ev = await within(5000, 'the close', done);
      assert.deepEqual([ev.code, ev.reason], [4000, '']);
      ok('the runtime\'s WebSocket client: open, echo, close 4000');
    } else {
      ok(`(no globalThis.WebSocket in Node ${process.versions.node}: the raw client above covers the protocol)`);
    }

    // close() ends open sockets too.
    c = await open('/ws/last');
    await ws.close();
    await within(3000, 'close() to end the socket', c.closed);
    ok('close() ends open WebSockets');
  } finally {
    for (const s of opened) s.destroy();
    await ws.close();
  }
}

let failed = false;
const echo = await startEcho();
const nonceEcho = await startEcho({ dpopNonce: true });
try {
  const k1 = newKey();
  const k2 = newKey();
  const bound = accessToken({ cnf: { jkt: k1.jkt } });
  const opaque = b64u(crypto.randomBytes(32));
  const htu = `${echo.url}/api/echo`;
  const url = `${htu}?from=check`;
  const refusedProof = async (r, check) => {
    assert.equal(r.status, 401, r.text);
    assert.match(r.headers.get('www-authenticate'), /^DPoP error="invalid_dpop_proof"/);
    assert.equal(r.json.error, 'invalid_dpop_proof');
    assert.equal(r.json.check, check, r.text);
    assert.ok(!r.text.includes(bound), 'never the token');
  };

  // No Authorization, and an unbound bearer token: answered as before.
  let r = await call(url);
  assert.deepEqual([r.status, r.json.authorization], [200, null]);
  const unbound = accessToken({});
  r = await call(url, { scheme: 'Bearer', token: unbound });
  assert.deepEqual([r.status, r.json.authorization.scheme, r.json.authorization.audience], [200, 'Bearer', 'https://api.example.test/']);
  ok('no Authorization / unbound Bearer token -> 200 as before');

  // A good proof (the query string of the request is not part of htu).
  r = await call(url, { token: bound, dpop: proof(k1, { htu, token: bound }) });
  assert.equal(r.status, 200, r.text);
  const a = r.json.authorization;
  assert.deepEqual(
    [a.scheme, a.cnf_jkt, a.dpop.verified, a.dpop.jkt, a.dpop.htm, a.dpop.htu, a.dpop.nonce, a.token_length, a.scope],
    ['DPoP', k1.jkt, true, k1.jkt, 'GET', htu, null, bound.length, 'read'],
  );
  assert.ok(!r.text.includes(bound), 'never the token');
  assert.deepEqual(r.json.query, { from: 'check' });
  r = await call(htu, { method: 'POST', token: bound, dpop: proof(k1, { htm: 'POST', htu, token: bound }), body: '{"a":1}' });
  assert.deepEqual([r.status, r.json.body_bytes, r.json.authorization.dpop.htm], [200, 7, 'POST']);
  r = await call(url, { scheme: 'dpop', token: bound, dpop: proof(k1, { htu, token: bound }) });
  assert.equal(r.status, 200, 'the scheme is case-insensitive');
  ok('valid proof -> 200 with authorization {scheme DPoP, cnf_jkt, dpop: {verified, jkt, htm, htu, nonce}}');

  // A bound token replayed as a bearer token.
  r = await call(url, { scheme: 'Bearer', token: bound });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('www-authenticate'), 'Bearer error="invalid_token", error_description="DPoP-bound token presented as a bearer token"');
  assert.ok(!r.text.includes(bound));
  r = await call(url, { scheme: 'Bearer', token: bound, dpop: proof(k1, { htu, token: bound }) });
  assert.equal(r.status, 401, 'also with a proof alongside');
  ok('DPoP-bound token as Bearer -> 401 Bearer error="invalid_token"');

  // Every check.
  await refusedProof(await call(url, { token: bound }), 'proof');
  await refusedProof(await call(url, { token: bound, dpop: proof(k2, { htu, token: bound }) }), 'cnf');
  await refusedProof(await call(url, { token: opaque, dpop: proof(k1, { htu, token: opaque }) }), 'cnf');
  const once1 = proof(k1, { htu, token: bound });
  assert.equal((await call(url, { token: bound, dpop: once1 })).status, 200);
  await refusedProof(await call(url, { token: bound, dpop: once1 }), 'jti');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu: url, token: bound }) }), 'htu');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu: `${echo.url}/api/other`, token: bound }) }), 'htu');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu: `http://127.0.0.1:1/api/echo`, token: bound }) }), 'htu');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu: `https://127.0.0.1:${echo.port}/api/echo`, token: bound }) }), 'htu');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htm: 'POST', htu, token: bound }) }), 'htm');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: unbound }) }), 'ath');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu }) }), 'ath');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, claims: { iat: now() - 120 } }) }), 'iat');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, claims: { iat: now() + 120 } }) }), 'iat');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, claims: { jti: undefined } }) }), 'jti');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, header: { typ: 'JWT' } }) }), 'typ');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, header: { alg: 'ES384' } }) }), 'alg');
  const priv = k1.privateKey.export({ format: 'jwk' });
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, header: { jwk: priv } }) }), 'jwk');
  await refusedProof(await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, sign: k2.privateKey }) }), 'signature');
  await refusedProof(await call(url, { token: bound, dpop: 'not.a.jws' }), 'jws');
  const good = proof(k1, { htu, token: bound });
  await refusedProof(await call(url, { token: bound, dpop: `${good}, ${good}` }), 'jws');
  ok('refused with 401 DPoP error="invalid_dpop_proof" and the failed check: no proof, other key, opaque token, replayed jti, htu (query, path, port, scheme), htm, ath, iat (past, future), no jti, typ, alg, private jwk, signature, malformed, two proofs');

  // Nonce mode switched on at runtime.
  let res = await fetch(`${echo.url}/__echo/dpop-nonce`, { method: 'POST' });
  const { nonce } = await res.json();
  assert.match(nonce, /^[A-Za-z0-9_-]{22,}$/);
  r = await call(url, { token: bound, dpop: proof(k1, { htu, token: bound }) });
  assert.equal(r.status, 401);
  assert.match(r.headers.get('www-authenticate'), /^DPoP error="use_dpop_nonce"/);
  assert.equal(r.headers.get('dpop-nonce'), nonce);
  assert.equal(r.json.error, 'use_dpop_nonce');
  r = await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, claims: { nonce } }) });
  assert.deepEqual([r.status, r.json.authorization?.dpop?.nonce], [200, nonce], r.text);
  await refusedProof(await call(url, { token: bound, dpop: proof(k2, { htu, token: bound, claims: { nonce } }) }), 'cnf');
  res = await fetch(`${echo.url}/__echo/dpop-nonce`, { method: 'POST' });
  const rotated = (await res.json()).nonce;
  assert.notEqual(rotated, nonce);
  r = await call(url, { token: bound, dpop: proof(k1, { htu, token: bound, claims: { nonce } }) });
  assert.deepEqual([r.status, r.headers.get('dpop-nonce')], [401, rotated], 'the old nonce is refused');
  await fetch(`${echo.url}/__echo/dpop-nonce`, { method: 'DELETE' });
  r = await call(url, { token: bound, dpop: proof(k1, { htu, token: bound }) });
  assert.equal(r.status, 200, 'no nonce needed after DELETE');
  // Nonce mode from the start.
  const nHtu = `${nonceEcho.url}/api/echo`;
  r = await call(nHtu, { token: bound, dpop: proof(k1, { htu: nHtu, token: bound }) });
  assert.deepEqual([r.status, r.headers.get('dpop-nonce')], [401, nonceEcho.currentNonce()]);
  r = await call(nHtu, { token: bound, dpop: proof(k1, { htu: nHtu, token: bound, claims: { nonce: r.headers.get('dpop-nonce') } }) });
  assert.equal(r.status, 200);
  ok('nonce dance: 401 use_dpop_nonce + DPoP-Nonce, retry with it -> 200; rotation refuses the old nonce; DELETE stops; dpopNonce option');

  // The token-free request log.
  res = await fetch(`${echo.url}/__echo/requests`);
  const text = await res.text();
  const entries = JSON.parse(text);
  assert.ok(!text.includes(bound) && !text.includes(opaque) && !text.includes(unbound), 'no token in /__echo/requests');
  assert.ok(!text.includes(once1), 'no proof either');
  assert.deepEqual(entries[0], { ...entries[0], method: 'GET', path: '/api/echo', scheme: null, status: 200, dpop: null });
  const verdicts = entries.filter((e) => e.scheme?.toLowerCase() === 'dpop').map((e) => e.dpop);
  assert.ok(verdicts.some((v) => v.ok && v.jkt === k1.jkt && v.reason === null));
  assert.ok(verdicts.some((v) => !v.ok && v.reason === 'use_dpop_nonce' && v.jkt === k1.jkt));
  assert.ok(verdicts.some((v) => v.ok && v.nonce === nonce));
  assert.deepEqual(entries.filter((e) => e.scheme === 'Bearer').map((e) => e.status), [200, 401, 401]);
  assert.equal(echo.requests.length, entries.length, 'control requests are not listed');
  assert.equal(echo.requests.at(-1).verdict.ok, true);
  await fetch(`${echo.url}/__echo/requests`, { method: 'DELETE' });
  assert.deepEqual(await (await fetch(`${echo.url}/__echo/requests`)).json(), []);
  ok(`GET /__echo/requests: ${entries.length} entries with method, path, scheme, status, verdict, no token; DELETE clears`);

  // The CLI: PORT 0 and --dpop-nonce; the ready line a Rust test parses.
  const child = spawn(process.execPath, [fileURLToPath(new URL('./echo.mjs', import.meta.url)), '0', '--dpop-nonce'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const line = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]); });
      child.once('exit', (code) => reject(new Error(`echo.mjs exited ${code}`)));
      setTimeout(() => reject(new Error('no ready line in 10 s')), 10_000);
    });
    const m = /^echo-api listening on (http:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
    assert.ok(m && m[2] !== '0', line);
    const cHtu = `${m[1]}/x`;
    r = await call(cHtu, { token: bound, dpop: proof(k1, { htu: cHtu, token: bound }) });
    assert.equal(r.status, 401);
    r = await call(cHtu, { token: bound, dpop: proof(k1, { htu: cHtu, token: bound, claims: { nonce: r.headers.get('dpop-nonce') } }) });
    assert.equal(r.status, 200);
    ok(`CLI: "${line}", --dpop-nonce demands a nonce`);
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }

  await checkWebSockets(k1);
} catch (err) {
  failed = true;
  console.error('CHECK FAILED:', err);
} finally {
  await echo.close();
  await nonceEcho.close();
}
console.log(failed ? 'echo check: FAIL' : 'echo check: OK');
process.exit(failed ? 1 : 0);
