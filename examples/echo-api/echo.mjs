// A tiny upstream API for the demo and the browser tests: it answers every request with a
// JSON description of what it received — method, path, query, body size, which cookies and
// forwarding headers arrived, and whether an `Authorization: Bearer` or `DPoP` token came with
// it. It never sends the token back (the browser must never see one, SPEC §1): only its
// length, a short SHA-256 fingerprint and, for a JWT, its audience, scope and `cnf.jkt` (read,
// not verified: this is a demo). Dependency-free (node:crypto only); loopback only.
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
//   node examples/echo-api/echo.mjs [PORT] [--dpop-nonce]   # default 9001; 0 = a free port
//
// It prints `echo-api listening on http://127.0.0.1:PORT` on stdout once listening.
//
// Control endpoints, for tests that talk to the echo directly (the BFF never routes here):
//   GET    /__echo/requests    what arrived (method, path, scheme, status, DPoP verdict), no tokens
//   DELETE /__echo/requests    forget it
//   POST   /__echo/dpop-nonce  demand DPoP nonces from now on, with a fresh one: {"dpop_nonce":true,"nonce":"…"}
//   DELETE /__echo/dpop-nonce  stop demanding them
//
// Tests import `startEcho()` and read `echo.requests`: every request as received, with the
// full Authorization header, kept in this process only.
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
 * `{ port, url, requests, log, dpopNonce(on), currentNonce(), close() }`:
 * - `requests` lists `{ method, path, authorization, dpop, cookie, origin, body, status,
 *   verdict }` for every request received, in order (`dpop`: the proof header; `verdict`: as
 *   in `log`); control requests (`/__echo/…`) are not listed;
 * - `log` is what `GET /__echo/requests` answers: `{ method, path, scheme, status, dpop,
 *   dpop_header }` with `dpop` = `{ ok, reason, jkt, nonce }` or null and `dpop_header`
 *   whether a `DPoP` header arrived, never a token;
 * - `dpopNonce(true)` demands nonces with a fresh one (returned), `dpopNonce(false)` stops.
 */
export function startEcho({ port = 0, log = false, dpopNonce = false } = {}) {
  const requests = [];
  const entries = [];
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
        close: () => new Promise((done) => {
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
