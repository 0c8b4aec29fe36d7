// A minimal OpenID Provider for bench/refresh-memory.sh: as fast as possible, with token sizes
// under control (PingOne-sized: 3 KB access and refresh tokens), which panva's oidc-provider —
// the IdP of every integration test — does not offer. It implements only what a login and a
// refresh need: discovery, JWKS, an authorization endpoint that logs in at once, and a token
// endpoint (authorization_code with PKCE S256 and client_secret_basic; refresh_token, rotating).
// Loopback only. Prints one ready line {"issuer","port"}; GET /__count tells the grants.
import * as crypto from 'node:crypto';
import * as http from 'node:http';

const TOKEN_BYTES = Number(process.env.TOKEN_BYTES ?? 3072);
const EXPIRES_IN = Number(process.env.EXPIRES_IN ?? 1);
const CLIENT = { id: 'bench', secret: 'bench-secret-0123456789' };
const prefix = '/ENV/as';

const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench-1', alg: 'RS256', use: 'sig' };
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const sign = (claims) => {
  const input = `${b64({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' })}.${b64(claims)}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
};
// base64url of TOKEN_BYTES * 3/4 random bytes: TOKEN_BYTES characters.
const token = () => crypto.randomBytes(Math.ceil((TOKEN_BYTES * 3) / 4)).toString('base64url').slice(0, TOKEN_BYTES);

const codes = new Map(); // code -> { nonce, challenge, redirect }
const counts = { authorization_code: 0, refresh_token: 0 };
let issuer;

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function form(req) {
  let body = '';
  for await (const c of req) body += c;
  return new URLSearchParams(body);
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  const path = url.pathname;
  if (path === '/__count') return json(res, 200, counts);
  if (path === `${prefix}/.well-known/openid-configuration`) {
    return json(res, 200, {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      authorization_response_iss_parameter_supported: true,
    });
  }
  if (path === `${prefix}/jwks`) return json(res, 200, { keys: [jwk] });
  if (path === `${prefix}/authorize`) {
    const q = url.searchParams;
    if (q.get('client_id') !== CLIENT.id || q.get('code_challenge_method') !== 'S256') {
      return json(res, 400, { error: 'invalid_request' });
    }
    const code = crypto.randomBytes(16).toString('base64url');
    codes.set(code, { nonce: q.get('nonce'), challenge: q.get('code_challenge'), redirect: q.get('redirect_uri') });
    const to = new URL(q.get('redirect_uri'));
    to.searchParams.set('code', code);
    to.searchParams.set('state', q.get('state'));
    to.searchParams.set('iss', issuer);
    res.writeHead(302, { location: to.toString() });
    return res.end();
  }
  if (path === `${prefix}/token` && req.method === 'POST') {
    const basic = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
    if (basic !== `${CLIENT.id}:${CLIENT.secret}`) return json(res, 401, { error: 'invalid_client' });
    const p = await form(req);
    const grant = p.get('grant_type');
    if (grant === 'authorization_code') {
      const c = codes.get(p.get('code'));
      codes.delete(p.get('code'));
      const verifier = crypto.createHash('sha256').update(p.get('code_verifier') ?? '').digest('base64url');
      if (!c || c.challenge !== verifier || c.redirect !== p.get('redirect_uri')) {
        return json(res, 400, { error: 'invalid_grant' });
      }
      counts.authorization_code += 1;
      const now = Math.floor(Date.now() / 1000);
      const sub = `user-${counts.authorization_code}`;
      return json(res, 200, {
        access_token: token(), refresh_token: token(), token_type: 'Bearer', expires_in: EXPIRES_IN,
        id_token: sign({ iss: issuer, sub, aud: CLIENT.id, iat: now, exp: now + 3600, nonce: c.nonce, name: sub }),
      });
    }
    if (grant === 'refresh_token') {
      counts.refresh_token += 1;
      return json(res, 200, { access_token: token(), refresh_token: token(), token_type: 'Bearer', expires_in: EXPIRES_IN });
    }
    return json(res, 400, { error: 'unsupported_grant_type' });
  }
  return json(res, 404, { error: 'not_found' });
});

server.keepAliveTimeout = 5000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}${prefix}`;
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
