// A tiny upstream API for the demo and the browser tests: it answers every request with a
// JSON description of what it received — method, path, query, body size, which cookies and
// forwarding headers arrived, and whether an `Authorization: Bearer` or `DPoP` token came with
// it. It never sends the token back (the browser must never see one, SPEC §1): only its
// length, a short SHA-256 fingerprint and, for a JWT, its audience, scope and `cnf.jkt` (read,
// not verified: this is a demo). Dependency-free (node:* only); loopback only.
//
// DPoP (RFC 9449) resource-server checks, as a real API would make them:
// - `Authorization: DPoP <token>` needs a `DPoP` proof: a compact JWS with header
//   `typ: dpop+jwt`, `alg: ES256` and `jwk` (an EC P-256 public key, no `d`), a valid
//   signature, and claims `htm` = the request method, `htu` = `http://<Host><path>` (the URL
//   the request was sent to, without query and fragment), `iat` within ±60 s, a `jti` never
//   seen before, `ath` = base64url(SHA-256(token)); and the proof key's RFC 7638 thumbprint
//   must equal the token's `cnf.jkt`. Any failure: 401 `WWW-Authenticate: DPoP
//   error="invalid_dpop_proof"`, and a JSON body naming the check that failed.
// - A token with `cnf.jkt` presented as `Bearer`: 401 `WWW-Authenticate: Bearer
//   error="invalid_token"` (a DPoP-bound token must never work as a bearer token).
// - Nonce mode (`--dpop-nonce`, `startEcho({ dpopNonce: true })`, `POST /__echo/dpop-nonce`):
//   a valid proof without the current nonce gets 401 `WWW-Authenticate: DPoP
//   error="use_dpop_nonce"` and a `DPoP-Nonce` header.
// Bearer tokens without `cnf.jkt` and requests without Authorization are answered 200, as
// before: the echo checks bindings, it is not an access-control layer.
//
// WebSocket (RFC 6455, what a `websocket = true` route of oidc-bff proxies to, SPEC §6.3): a
// `GET` with `Upgrade: websocket` whose path is `/ws` or starts with `/ws/` is accepted (101
// with `Sec-WebSocket-Accept`) after the same Authorization/DPoP checks as any request (a
// refusal is the same 401, before the upgrade). The socket then sends a text frame
// `{"tick":n}` (n = 1, 2, …) every second and echoes every text or binary message back with
// its opcode; fragmented messages are reassembled, pings answered with pongs, a close frame
// answered with the same code. A message over 4 MiB is closed with 1009, invalid UTF-8 text
// with 1007, an unmasked or malformed frame with 1002. Other upgrade requests get 404
// (another path) or 400 (not a valid WebSocket handshake). Every upgrade request is listed in
// the request log like any request (status 101, 401, 404 or 400, plus `websocket: true`).
//
//   node examples/echo-api/echo.mjs [PORT] [--dpop-nonce]   # default 9001; 0 = a free port
//
// It prints `echo-api listening on http://127.0.0.1:PORT` on stdout once listening.
//
// Control endpoints, for tests that talk to the echo directly (the BFF never routes here):
//   GET    /__echo/requests    what arrived (method, path, scheme, status, DPoP verdict), no tokens
//   DELETE /__echo/requests    forget it
//   POST   /__echo/dpop-nonce  demand DPoP nonces from now on, with a fresh one: {"dpop_nonce":true,"nonce":"…"}
//   DELETE /__echo/dpop-nonce  stop demanding them
//   GET    /__echo/websockets  {"open":N,"closes":[{"path","code","reason"}]}: sockets open now,
//                              and the close codes received (1006: the connection was lost
//                              without a close frame), oldest first
//   DELETE /__echo/websockets  forget the closes
//
// Tests import `startEcho()` and read `echo.requests`: every request as received, with the
// full Authorization header, kept in this process only; `echo.wsOpen` and `echo.wsCloses`
// are what `/__echo/websockets` answers.
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';

const MAX_BODY = 1 << 20;
const IAT_WINDOW_SECS = 60;
// Seen proof `jti`s are remembered this long (beyond the ±60 s iat window, so a replay is
// always caught) and at most this many (the oldest forgotten first).
const JTI_TTL_MS = 5 * 60 * 1000;
const JTI_MAX = 10_000;
const LOG_MAX = 1000;

/** A short fingerprint of a secret: enough to compare, useless to replay. */
export const fingerprint = (s) => createHash('sha256').update(s).digest('hex').slice(0, 12);

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const sha256b64u = (s) => b64u(createHash('sha256').update(s).digest());
const B64U = /^[A-Za-z0-9_-]+$/;

/** The JSON object in one base64url segment of a JWS, or undefined. */
function decodeSegment(segment) {
  if (!segment || !B64U.test(segment)) return undefined;
  try {
    const value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return value && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `aud`, `scope` and `cnf.jkt` of a JWT access token, or nulls for an opaque one. Read from
 * the payload WITHOUT verifying the signature: this is a demo and test upstream, which trusts
 * whoever sent the token. A real resource server verifies the token (or introspects it) first;
 * the DPoP checks below then compare the proof's key against this verified `cnf.jkt`.
 */
function jwtFacts(token) {
  const claims = token.split('.').length === 3 ? decodeSegment(token.split('.')[1]) : undefined;
  return {
    audience: claims?.aud ?? null,
    scope: claims?.scope ?? null,
    cnf_jkt: typeof claims?.cnf?.jkt === 'string' ? claims.cnf.jkt : null,
  };
}

/** RFC 7638 thumbprint of an EC public JWK: SHA-256 over {"crv","kty","x","y"} in that order. */
export function jwkThumbprint({ crv, kty, x, y }) {
  return sha256b64u(JSON.stringify({ crv, kty, x, y }));
}

/** Seen proof `jti`s: bounded in time and number. */
class JtiCache {
  seen = new Map(); // jti -> expiry (ms); insertion order = age
  has(jti) {
    this.evict();
    return this.seen.has(jti);
  }
  add(jti) {
    this.evict();
    this.seen.set(jti, Date.now() + JTI_TTL_MS);
    while (this.seen.size > JTI_MAX) this.seen.delete(this.seen.keys().next().value);
  }
  evict() {
    const now = Date.now();
    for (const [jti, exp] of this.seen) {
      if (exp > now) break; // entries are in expiry order
      this.seen.delete(jti);
    }
  }
}

class ProofError extends Error {
  constructor(check, description) {
    super(description);
    this.check = check;
  }
}

/**
 * Verify a DPoP proof for `token` on request `req` (RFC 9449 §4.3 and §7.1). Returns
 * `{ jkt, htm, htu, nonce, jti }`, or throws a ProofError naming the failed check. The nonce
 * and the replay check are left to the caller (they need state).
 */
function verifyProof(req, token, proof, cnfJkt) {
  if (!proof) throw new ProofError('proof', 'no DPoP header');
  const parts = proof.split('.');
  // Two DPoP fields arrive joined by ", "; a JWS never contains a comma.
  if (parts.length !== 3 || proof.includes(',')) throw new ProofError('jws', 'not one compact JWS');
  const header = decodeSegment(parts[0]);
  const claims = decodeSegment(parts[1]);
  if (!header || !claims || !parts[2] || !B64U.test(parts[2])) throw new ProofError('jws', 'malformed JWS');
  if (header.typ !== 'dpop+jwt') throw new ProofError('typ', 'typ must be dpop+jwt');
  if (header.alg !== 'ES256') throw new ProofError('alg', 'alg must be ES256');
  const { jwk } = header;
  if (!jwk || typeof jwk !== 'object' || jwk.kty !== 'EC' || jwk.crv !== 'P-256'
    || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') {
    throw new ProofError('jwk', 'jwk must be an EC P-256 public key');
  }
  if ('d' in jwk) throw new ProofError('jwk', 'jwk carries a private key');
  let key;
  try {
    key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' });
  } catch {
    throw new ProofError('jwk', 'jwk is not a valid P-256 point');
  }
  const signature = Buffer.from(parts[2], 'base64url');
  const signed = signature.length === 64 && verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`),
    { key, dsaEncoding: 'ieee-p1363' }, signature);
  if (!signed) throw new ProofError('signature', 'signature does not verify');

  if (claims.htm !== req.method) throw new ProofError('htm', `htm must be ${req.method}`);
  const host = req.headers.host;
  if (!host) throw new ProofError('htu', 'the request has no Host header');
  const expected = `http://${host}${req.url.split('?')[0]}`;
  if (typeof claims.htu !== 'string' || !sameUrl(claims.htu, expected)) {
    throw new ProofError('htu', `htu must be ${expected}`);
  }
  const now = Date.now() / 1000;
  if (typeof claims.iat !== 'number' || Math.abs(now - claims.iat) > IAT_WINDOW_SECS) {
    throw new ProofError('iat', `iat must be within ${IAT_WINDOW_SECS} s of now`);
  }
  if (typeof claims.jti !== 'string' || !claims.jti) throw new ProofError('jti', 'jti is missing');
  if (claims.ath !== sha256b64u(token)) throw new ProofError('ath', 'ath must be base64url(SHA-256(access token))');
  if (claims.nonce !== undefined && typeof claims.nonce !== 'string') throw new ProofError('nonce', 'nonce must be a string');
  const jkt = jwkThumbprint(jwk);
  if (cnfJkt === null) throw new ProofError('cnf', 'the access token is not DPoP-bound (no cnf.jkt)');
  if (jkt !== cnfJkt) throw new ProofError('cnf', 'the proof key is not the key the access token is bound to');
  return { jkt, htm: claims.htm, htu: claims.htu, nonce: claims.nonce ?? null, jti: claims.jti };
}

/** htu equals the request URL: no query or fragment, scheme/host compared as URLs, path exactly. */
function sameUrl(htu, expected) {
  if (htu.includes('?') || htu.includes('#')) return false;
  if (htu === expected) return true;
  try {
    return new URL(htu).href === new URL(expected).href;
  } catch {
    return false;
  }
}

/** A fresh server nonce (RFC 9449 §8: NQCHAR; base64url is a subset). */
const newNonce = () => b64u(randomBytes(24));

// ---- WebSocket (RFC 6455) ------------------------------------------------------------------

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const WS_MAX_MESSAGE = 4 << 20;
const WS_TICK_MS = 1000;
// After sending a close frame, wait this long for the peer's before cutting the connection.
const WS_CLOSE_WAIT_MS = 2000;
const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2). */
export const websocketAccept = (key) => createHash('sha1').update(key + WS_GUID).digest('base64');

/** Is this upgrade request a WebSocket opening handshake the echo accepts? A reason if not. */
function handshakeProblem(req) {
  if (req.method !== 'GET') return 'the method must be GET';
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return 'Upgrade must be websocket';
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(req.headers.connection ?? '')) return 'Connection must include Upgrade';
  if (req.headers['sec-websocket-version'] !== '13') return 'Sec-WebSocket-Version must be 13';
  const key = req.headers['sec-websocket-key'] ?? '';
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) return 'Sec-WebSocket-Key must be 16 bytes in base64';
  return null;
}

/** One frame from the server: never masked (RFC 6455 §5.1), always final. */
function wsFrame(opcode, payload = Buffer.alloc(0)) {
  const len = payload.length;
  let head;
  if (len < 126) {
    head = Buffer.from([0, len]);
  } else if (len < 0x10000) {
    head = Buffer.alloc(4);
    head.writeUInt16BE(len, 2);
    head[1] = 126;
  } else {
    head = Buffer.alloc(10);
    head.writeBigUInt64BE(BigInt(len), 2);
    head[1] = 127;
  }
  head[0] = 0x80 | opcode;
  return Buffer.concat([head, payload]);
}

function closePayload(code, reason = '') {
  if (code === null) return Buffer.alloc(0);
  const out = Buffer.alloc(2 + Buffer.byteLength(reason));
  out.writeUInt16BE(code, 0);
  out.write(reason, 2);
  return out;
}

/** Codes a close frame may carry (RFC 6455 §7.4): 1005, 1006 and 1015 never appear on the wire. */
const sendableCode = (code) => [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].includes(code)
  || (code >= 3000 && code <= 4999);

class WsError extends Error {
  constructor(code, reason) {
    super(reason);
    this.code = code;
  }
}

/**
 * The server side of one accepted WebSocket: ticks, echoes, answers pings and closes.
 * `onClose({ code, reason })` runs once when the TCP connection is gone, with the close code
 * the peer sent (1005: a close frame without one; 1006: no close frame at all).
 */
class EchoSocket {
  chunks = [];
  buffered = 0;
  message = null; // { opcode, parts, size } while a fragmented message is arriving
  received = null; // the peer's close, once it came
  closeSent = false;
  failed = false;
  ticks = 0;

  constructor(socket, head, onClose) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(0);
    socket.on('data', (chunk) => this.data(chunk));
    socket.on('error', () => {}); // 'close' follows; a reset peer is not the echo's failure
    socket.on('end', () => socket.end());
    socket.once('close', () => {
      clearInterval(this.timer);
      clearTimeout(this.cutTimer);
      onClose(this.received ?? { code: 1006, reason: '' });
    });
    this.timer = setInterval(() => {
      // A peer that stopped reading gets no more ticks: they would only pile up in memory.
      if (!this.closeSent && socket.writableLength < WS_MAX_MESSAGE) {
        this.send(OP.text, Buffer.from(JSON.stringify({ tick: ++this.ticks })));
      }
    }, WS_TICK_MS);
    if (head.length) this.data(head);
  }

  send(opcode, payload) {
    if (!this.socket.destroyed) this.socket.write(wsFrame(opcode, payload));
  }

  /** Send a close frame and stop: the peer's reply, or a timeout, ends the connection. */
  close(code, reason = '') {
    if (this.closeSent) return;
    this.closeSent = true;
    clearInterval(this.timer);
    this.send(OP.close, closePayload(code, reason));
    this.cutTimer = setTimeout(() => this.socket.destroy(), WS_CLOSE_WAIT_MS);
    this.cutTimer.unref();
  }

  data(chunk) {
    if (this.failed) return; // after a protocol error the stream cannot be parsed any more
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    try {
      while (this.frame()) { /* one frame per turn */ }
    } catch (err) {
      if (!(err instanceof WsError)) throw err;
      this.failed = true;
      this.chunks = [];
      this.buffered = 0;
      this.close(err.code, err.message);
      this.socket.end();
    }
  }

  /** Take the first `n` buffered bytes. */
  take(n) {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return all.subarray(0, n);
  }

  /** Parse and handle one complete frame; false when more bytes are needed. */
  frame() {
    if (this.buffered < 2) return false;
    const peek = this.chunks[0].length >= 14 ? this.chunks[0] : Buffer.concat(this.chunks).subarray(0, 14);
    const fin = (peek[0] & 0x80) !== 0;
    const opcode = peek[0] & 0x0f;
    if (peek[0] & 0x70) throw new WsError(1002, 'reserved bits set');
    if (!(peek[1] & 0x80)) throw new WsError(1002, 'client frames must be masked');
    if (![0, 1, 2, 8, 9, 10].includes(opcode)) throw new WsError(1002, `unknown opcode ${opcode}`);
    const control = opcode >= 8;
    let len = peek[1] & 0x7f;
    let offset = 2;
    if (len === 126) {
      if (peek.length < 4) return false;
      len = peek.readUInt16BE(2);
      offset = 4;
    } else if (len === 127) {
      if (peek.length < 10) return false;
      const big = peek.readBigUInt64BE(2);
      if (big >> 63n) throw new WsError(1002, 'payload length has its top bit set');
      // Refused on the header alone: an oversized message is never buffered.
      len = big > BigInt(WS_MAX_MESSAGE) ? WS_MAX_MESSAGE + 1 : Number(big);
      offset = 10;
    }
    if (control && (!fin || len > 125)) throw new WsError(1002, 'control frames are final and at most 125 bytes');
    if (!control && len + (this.message?.size ?? 0) > WS_MAX_MESSAGE) {
      throw new WsError(1009, `messages are limited to ${WS_MAX_MESSAGE} bytes`);
    }
    if (this.buffered < offset + 4 + len) return false;
    const bytes = this.take(offset + 4 + len);
    const mask = bytes.subarray(offset, offset + 4);
    const payload = Buffer.from(bytes.subarray(offset + 4));
    for (let i = 0; i < payload.length; i += 1) payload[i] ^= mask[i & 3];
    if (this.received) return true; // after the peer's close frame, nothing counts
    this.handle(fin, opcode, payload);
    return true;
  }

  handle(fin, opcode, payload) {
    switch (opcode) {
      case OP.ping:
        if (!this.closeSent) this.send(OP.pong, payload);
        return;
      case OP.pong:
        return;
      case OP.close:
        this.peerClosed(payload);
        return;
      case OP.continuation:
        if (!this.message) throw new WsError(1002, 'a continuation frame without a message');
        break;
      default: // text, binary
        if (this.message) throw new WsError(1002, 'a new message before the last one ended');
        this.message = { opcode, parts: [], size: 0 };
    }
    this.message.parts.push(payload);
    this.message.size += payload.length;
    if (!fin) return;
    const { opcode: kind, parts } = this.message;
    this.message = null;
    const whole = Buffer.concat(parts);
    if (kind === OP.text) {
      try {
        utf8.decode(whole);
      } catch {
        throw new WsError(1007, 'text messages must be UTF-8');
      }
    }
    if (!this.closeSent) this.send(kind, whole);
  }

  peerClosed(payload) {
    if (payload.length === 1) throw new WsError(1002, 'a close payload of one byte');
    const code = payload.length ? payload.readUInt16BE(0) : 1005;
    this.received = { code, reason: '' };
    try {
      this.received.reason = utf8.decode(payload.subarray(2));
    } catch {
      throw new WsError(1007, 'close reasons must be UTF-8');
    }
    if (payload.length && !sendableCode(code)) throw new WsError(1002, `close code ${code} is not allowed`);
    // Our own close frame is the answer to theirs (§5.5.1): the same code, then the end.
    this.close(payload.length ? code : null);
    this.socket.end();
  }

  destroy() {
    this.socket.destroy();
  }
}

/** A plain HTTP answer on a socket that asked to upgrade (no `res` exists for it). */
function rawResponse(socket, status, headers, body) {
  const text = JSON.stringify(body);
  const lines = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}`,
    'content-type: application/json',
    'cache-control: no-store',
    `content-length: ${Buffer.byteLength(text)}`,
    'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${text}`);
}

function describe(req, bodyBytes, dpop) {
  const url = new URL(req.url, 'http://upstream.invalid');
  const auth = req.headers.authorization ?? '';
  const bearer = /^Bearer (\S+)$/.exec(auth);
  const cookieNames = (req.headers.cookie ?? '')
    .split(';')
    .map((c) => c.split('=')[0].trim())
    .filter(Boolean);
  let authorization = null;
  if (dpop) {
    authorization = {
      scheme: 'DPoP', token_length: dpop.token.length, token_sha256: fingerprint(dpop.token), ...jwtFacts(dpop.token),
      dpop: { verified: true, jkt: dpop.jkt, htm: dpop.htm, htu: dpop.htu, nonce: dpop.nonce },
    };
  } else if (bearer) {
    const { cnf_jkt: _unbound, ...facts } = jwtFacts(bearer[1]);
    authorization = { scheme: 'Bearer', token_length: bearer[1].length, token_sha256: fingerprint(bearer[1]), ...facts };
  } else if (auth) {
    authorization = { scheme: auth.split(' ')[0] };
  }
  return {
    upstream: 'echo-api',
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    body_bytes: bodyBytes,
    authorization,
    cookies_received: cookieNames,
    x_forwarded_for: req.headers['x-forwarded-for'] ?? null,
    x_forwarded_proto: req.headers['x-forwarded-proto'] ?? null,
    x_forwarded_host: req.headers['x-forwarded-host'] ?? null,
    received_at: new Date().toISOString(),
  };
}

/**
 * Start the echo API on 127.0.0.1:`port` (0 = a free port). Resolves to
 * `{ port, url, requests, log, wsOpen, wsCloses, dpopNonce(on), currentNonce(), close() }`:
 * - `requests` lists `{ method, path, authorization, dpop, cookie, origin, body, status,
 *   verdict }` for every request received, in order (`dpop`: the proof header; `verdict`: as
 *   in `log`); control requests (`/__echo/…`) are not listed; upgrade requests also have
 *   `websocket: true` (status 101 when accepted);
 * - `log` is what `GET /__echo/requests` answers: `{ method, path, scheme, status, dpop,
 *   dpop_header }` with `dpop` = `{ ok, reason, jkt, nonce }` or null and `dpop_header`
 *   whether a `DPoP` header arrived, never a token (upgrades: `websocket: true` too);
 * - `wsOpen` is the number of WebSockets open now; `wsCloses` lists `{ path, code, reason }`
 *   for every WebSocket that ended, in order: the close code its peer sent (oidc-bff sends
 *   1001 upstream when the session ends), 1005 for a close frame without a code, 1006 for a
 *   connection lost without a close frame;
 * - `dpopNonce(true)` demands nonces with a fresh one (returned), `dpopNonce(false)` stops.
 */
export function startEcho({ port = 0, log = false, dpopNonce = false } = {}) {
  const requests = [];
  const entries = [];
  const sockets = new Set();
  const wsCloses = [];
  const jtis = new JtiCache();
  let nonce = dpopNonce ? newNonce() : null;

  function note(entry) {
    entries.push(entry);
    if (entries.length > LOG_MAX) entries.shift();
  }

  /** The DPoP/Bearer checks: `{ status, headers, body }` of a refusal, or `{ dpop }`. */
  function authorize(req) {
    const auth = req.headers.authorization ?? '';
    const scheme = /^(\S+)/.exec(auth)?.[1] ?? null;
    if (scheme?.toLowerCase() === 'bearer') {
      const token = /^\S+ (\S+)$/.exec(auth)?.[1] ?? '';
      if (jwtFacts(token).cnf_jkt !== null) {
        const description = 'DPoP-bound token presented as a bearer token';
        return {
          scheme,
          verdict: { ok: false, reason: 'bearer', jkt: null, nonce: null },
          refusal: {
            headers: { 'www-authenticate': `Bearer error="invalid_token", error_description="${description}"` },
            body: { error: 'invalid_token', error_description: description },
          },
        };
      }
      return { scheme, verdict: null };
    }
    if (scheme?.toLowerCase() !== 'dpop') return { scheme, verdict: null };

    const token = /^\S+ (\S+)$/.exec(auth)?.[1] ?? '';
    const proof = req.headers.dpop;
    const refuse = (check, description, jkt = null, claimedNonce = null) => ({
      scheme,
      verdict: { ok: false, reason: check, jkt, nonce: claimedNonce },
      refusal: {
        headers: {
          'www-authenticate': 'DPoP error="invalid_dpop_proof", '
            + `error_description="${description.replace(/"/g, "'")}", algs="ES256"`,
        },
        body: { error: 'invalid_dpop_proof', check, error_description: description },
      },
    });
    if (!token) return refuse('token', 'no access token after the DPoP scheme');
    let result;
    try {
      result = verifyProof(req, token, proof, jwtFacts(token).cnf_jkt);
    } catch (err) {
      if (err instanceof ProofError) return refuse(err.check, err.message);
      throw err;
    }
    // A signature-valid proof's jti is spent whatever follows: a retry needs a new proof.
    if (jtis.has(result.jti)) return refuse('jti', 'jti was seen before (replayed proof)', result.jkt, result.nonce);
    jtis.add(result.jti);
    if (nonce !== null && result.nonce !== nonce) {
      return {
        scheme,
        verdict: { ok: false, reason: 'use_dpop_nonce', jkt: result.jkt, nonce: result.nonce },
        refusal: {
          headers: {
            'www-authenticate': 'DPoP error="use_dpop_nonce", '
              + 'error_description="Resource server requires nonce in DPoP proof", algs="ES256"',
            'dpop-nonce': nonce,
          },
          body: { error: 'use_dpop_nonce', error_description: 'Resource server requires nonce in DPoP proof' },
        },
      };
    }
    return {
      scheme,
      verdict: { ok: true, reason: null, jkt: result.jkt, nonce: result.nonce },
      dpop: { token, ...result },
    };
  }

  function control(req, res) {
    const json = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    switch (`${req.method} ${req.url.split('?')[0]}`) {
      case 'GET /__echo/requests': return json(200, entries);
      case 'DELETE /__echo/requests':
        entries.length = 0; // `requests` (in-process, indexed by tests) stays
        return json(200, { cleared: true });
      case 'POST /__echo/dpop-nonce':
        nonce = newNonce();
        return json(200, { dpop_nonce: true, nonce });
      case 'DELETE /__echo/dpop-nonce':
        nonce = null;
        return json(200, { dpop_nonce: false });
      case 'GET /__echo/websockets': return json(200, { open: sockets.size, closes: wsCloses });
      case 'DELETE /__echo/websockets':
        wsCloses.length = 0;
        return json(200, { cleared: true });
      default: return json(404, { error: 'not_found' });
    }
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (req.url.startsWith('/__echo/')) {
        control(req, res);
        return;
      }
      const body = Buffer.concat(chunks).toString('utf8');
      const { scheme, verdict, refusal, dpop } = authorize(req);
      const status = refusal ? 401 : size > MAX_BODY ? 413 : 200;
      requests.push({
        method: req.method,
        path: req.url,
        authorization: req.headers.authorization ?? null,
        dpop: req.headers.dpop ?? null,
        cookie: req.headers.cookie ?? null,
        origin: req.headers.origin ?? null,
        body,
        status,
        verdict,
      });
      note({
        method: req.method,
        path: req.url.split('?')[0],
        scheme,
        status,
        dpop: verdict,
        // Whether a DPoP header arrived at all (a proxy must never pass the browser's on).
        dpop_header: req.headers.dpop !== undefined,
        at: new Date().toISOString(),
      });
      if (log) {
        console.error(`echo-api: ${req.method} ${req.url.split('?')[0]} ${scheme ?? 'anonymous'} -> ${status}`
          + `${verdict && !verdict.ok ? ` (${verdict.reason})` : ''}`);
      }
      if (refusal) {
        res.writeHead(401, { 'content-type': 'application/json', 'cache-control': 'no-store', ...refusal.headers });
        res.end(JSON.stringify(refusal.body));
        return;
      }
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(describe(req, size, dpop), null, 2));
    });
  });
  // Node hands every request with an Upgrade header here, not to the request handler above.
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {}); // a peer gone mid-handshake is not the echo's failure
    const path = req.url.split('?')[0];
    const isWs = /^\/ws(\/|$)/.test(path);
    const problem = isWs ? handshakeProblem(req) : null;
    const { scheme, verdict, refusal } = isWs && !problem ? authorize(req) : { scheme: null, verdict: null };
    const status = !isWs ? 404 : problem ? 400 : refusal ? 401 : 101;
    if (!path.startsWith('/__echo/')) {
      requests.push({
        method: req.method,
        path: req.url,
        authorization: req.headers.authorization ?? null,
        dpop: req.headers.dpop ?? null,
        cookie: req.headers.cookie ?? null,
        origin: req.headers.origin ?? null,
        body: '',
        status,
        verdict,
        websocket: true,
      });
      note({
        method: req.method,
        path,
        scheme: scheme ?? /^(\S+)/.exec(req.headers.authorization ?? '')?.[1] ?? null,
        status,
        dpop: verdict,
        dpop_header: req.headers.dpop !== undefined,
        websocket: true,
        at: new Date().toISOString(),
      });
    }
    if (log) console.error(`echo-api: ${req.method} ${path} ${scheme ?? 'anonymous'} -> ${status} (websocket${problem ? `: ${problem}` : ''})`);
    if (status === 404) return rawResponse(socket, 404, {}, { error: 'not_found', error_description: 'WebSockets are served under /ws' });
    if (problem) return rawResponse(socket, 400, {}, { error: 'invalid_websocket_handshake', error_description: problem });
    if (refusal) return rawResponse(socket, 401, refusal.headers, refusal.body);
    socket.write([
      'HTTP/1.1 101 Switching Protocols',
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Accept: ${websocketAccept(req.headers['sec-websocket-key'])}`,
    ].join('\r\n') + '\r\n\r\n');
    const ws = new EchoSocket(socket, head, ({ code, reason }) => {
      sockets.delete(ws);
      wsCloses.push({ path, code, reason });
      if (wsCloses.length > LOG_MAX) wsCloses.shift();
      if (log) console.error(`echo-api: websocket ${path} closed ${code}${reason ? ` ${reason}` : ''}`);
    });
    sockets.add(ws);
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const actual = server.address().port;
      resolve({
        port: actual,
        url: `http://127.0.0.1:${actual}`,
        requests,
        log: entries,
        /** Demand DPoP nonces (a fresh one, returned) or stop (null). */
        dpopNonce(on = true) {
          nonce = on ? newNonce() : null;
          return nonce;
        },
        currentNonce: () => nonce,
        get wsOpen() { return sockets.size; },
        wsCloses,
        close: () => new Promise((done) => {
          // Upgraded sockets are no longer the HTTP server's connections: end them here.
          for (const ws of sockets) ws.destroy();
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--dpop-nonce' && !/^\d+$/.test(a));
  if (unknown.length) {
    console.error(`usage: node echo.mjs [PORT] [--dpop-nonce] (unknown: ${unknown.join(' ')})`);
    process.exit(2);
  }
  const port = Number(args.find((a) => /^\d+$/.test(a)) ?? 9001);
  const echo = await startEcho({ port, log: true, dpopNonce: args.includes('--dpop-nonce') });
  console.log(`echo-api listening on ${echo.url}`);
  const stop = () => echo.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
