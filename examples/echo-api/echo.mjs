// A tiny upstream API for the demo and the browser tests: it answers every request with a
// JSON description of what it received — method, path, query, body size, which cookies and
// forwarding headers arrived, and whether an `Authorization: Bearer` token came with it.
// It never sends the token back (the browser must never see one, SPEC §1): only its length,
// a short SHA-256 fingerprint and, for a JWT, its audience and scope (read, not verified: this
// is a demo). Dependency-free; loopback only.
//
//   node examples/echo-api/echo.mjs [PORT]      # default 9001, listens on 127.0.0.1
//
// Tests import `startEcho()` and read `echo.requests`: every request as received, with the
// full Authorization header, kept in this process only.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';

const MAX_BODY = 1 << 20;

/** A short fingerprint of a secret: enough to compare, useless to replay. */
export const fingerprint = (s) => createHash('sha256').update(s).digest('hex').slice(0, 12);

/** `aud` and `scope` of a JWT access token (unverified), or nulls for an opaque one. */
function jwtFacts(token) {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return { audience: claims.aud ?? null, scope: claims.scope ?? null };
  } catch {
    return { audience: null, scope: null };
  }
}

function describe(req, bodyBytes) {
  const url = new URL(req.url, 'http://upstream.invalid');
  const auth = req.headers.authorization ?? '';
  const bearer = /^Bearer (\S+)$/.exec(auth);
  const cookieNames = (req.headers.cookie ?? '')
    .split(';')
    .map((c) => c.split('=')[0].trim())
    .filter(Boolean);
  return {
    upstream: 'echo-api',
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    body_bytes: bodyBytes,
    authorization: bearer
      ? { scheme: 'Bearer', token_length: bearer[1].length, token_sha256: fingerprint(bearer[1]), ...jwtFacts(bearer[1]) }
      : auth ? { scheme: auth.split(' ')[0] } : null,
    cookies_received: cookieNames,
    x_forwarded_for: req.headers['x-forwarded-for'] ?? null,
    x_forwarded_proto: req.headers['x-forwarded-proto'] ?? null,
    x_forwarded_host: req.headers['x-forwarded-host'] ?? null,
    received_at: new Date().toISOString(),
  };
}

/**
 * Start the echo API on 127.0.0.1:`port` (0 = a free port). Resolves to
 * `{ port, url, requests, close() }`; `requests` lists `{ method, path, authorization,
 * cookie, origin, body }` for every request received, in order.
 */
export function startEcho({ port = 0, log = false } = {}) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({
        method: req.method,
        path: req.url,
        authorization: req.headers.authorization ?? null,
        cookie: req.headers.cookie ?? null,
        origin: req.headers.origin ?? null,
        body,
      });
      const answer = JSON.stringify(describe(req, size), null, 2);
      if (log) console.error(`echo-api: ${req.method} ${req.url.split('?')[0]} bearer=${Boolean(req.headers.authorization)}`);
      res.writeHead(size > MAX_BODY ? 413 : 200, {
        'content-type': 'application/json',
        'cache-control': 'no-store',
      });
      res.end(answer);
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
        close: () => new Promise((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 9001);
  const echo = await startEcho({ port, log: true });
  console.log(`echo-api listening on ${echo.url}`);
  const stop = () => echo.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
