// Smoke test for server.js: starts it, then drives every flow the Rust tests rely on with
// plain fetch, manual redirects and a hand-made cookie jar. Exits non-zero on any failure.
//   node tests/idp/smoke.js
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { once } from 'node:events';
import { strict as assert } from 'node:assert';

const here = new URL('.', import.meta.url).pathname;
const b64u = (buf) => Buffer.from(buf).toString('base64url');
const log = (...a) => console.log('  ✓', ...a);

// ---- helpers ------------------------------------------------------------------------------
function startIdp(config, { stdin = 'pipe' } = {}) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [`${here}server.js`], {
    env: { ...process.env, IDP_CONFIG: JSON.stringify(config) },
    stdio: [stdin, 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('\n')) resolve(JSON.parse(stdout.split('\n')[0]));
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before ready:\n${stderr}`)));
  });
  return { child, ready, ms: () => performance.now() - t0, stdout: () => stdout, stderr: () => stderr };
}

class Jar { // one jar per origin is all we need: everything is on 127.0.0.1:PORT
  cookies = new Map(); // name -> { value, path }
  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const [name, value] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)];
      const path = attrs.find((a) => /^path=/i.test(a))?.slice(5) ?? '/';
      const expired = attrs.some((a) => /^expires=/i.test(a) && new Date(a.slice(8)) < new Date());
      if (expired || value === '') this.cookies.delete(name); else this.cookies.set(name, { value, path });
    }
  }
  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies].filter(([, c]) => pathname.startsWith(c.path)).map(([n, c]) => `${n}=${c.value}`).join('; ');
  }
}

async function req(jar, url, opts = {}) {
  const headers = { ...opts.headers };
  const cookie = jar?.header(url);
  if (cookie) headers.cookie = cookie;
  const res = await fetch(url, { ...opts, headers, redirect: 'manual' });
  jar?.store(res);
  return res;
}
const form = (o) => new URLSearchParams(o).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

function verifyJwt(jwt, jwks) {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert(jwk, `no JWK for kid ${header.kid}`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  const ok = {
    RS256: () => crypto.verify('sha256', data, key, sig),
    PS256: () => crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig),
    ES256: () => crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig),
  }[header.alg]();
  assert(ok, `bad ${header.alg} signature`);
  return { header, payload: JSON.parse(Buffer.from(p, 'base64url')) };
}

// Browser-like login. expect: 'form' (no session), 'consent' (session, no grant: auto-consent
// redirect, no form), 'none' (session + grant: authorize redirects straight to the client).
// par: push the parameters first (RFC 9126), then authorize with client_id and request_uri only.
// iss: whether the authorization response must carry RFC 9207's iss (false: must not).
async function login(idp, client, { jar = new Jar(), user = 'alice', expect = 'form', scope = 'openid profile email offline_access', extra = {}, par = false, iss = true } = {}) {
  const verifier = b64u(crypto.randomBytes(32));
  const state = b64u(crypto.randomBytes(16));
  const nonce = b64u(crypto.randomBytes(16));
  const params = {
    response_type: 'code', client_id: client.client_id, redirect_uri: client.redirect_uris[0], scope, state, nonce,
    code_challenge: b64u(crypto.hash('sha256', verifier, 'buffer')), code_challenge_method: 'S256', ...extra,
  };
  let q = form(params);
  if (par) {
    const pushed = await push(idp, client, params);
    assert.equal(pushed.status, 201, JSON.stringify(pushed.json));
    assert.match(pushed.json.request_uri, /^urn:ietf:params:oauth:request_uri:/);
    assert.equal(pushed.json.expires_in, 60);
    q = form({ client_id: client.client_id, request_uri: pushed.json.request_uri });
  }
  let res = await req(jar, `${idp.issuer}/authorize?${q}`);
  assert.equal(res.status, 303, 'authorize');
  let loc = new URL(res.headers.get('location'), idp.issuer);
  if (expect !== 'none') {
    assert.match(loc.pathname, /^\/ENV_ID\/as\/interaction\/[\w-]+$/);
    res = await req(jar, loc.href);
    if (expect === 'form') {
      assert.equal(res.status, 200, 'interaction page');
      const html = await res.text();
      const action = html.match(/<form method="post" action="([^"]+)"/)[1].replace(/&#38;/g, '&');
      assert.match(html, /name="login"/);
      assert.match(html, />Sign in</);
      let submit = await req(jar, action, { method: 'POST', headers: FORM, body: form({ login: '' }) });
      assert.equal(submit.status, 400, 'empty login re-renders');
      assert.match(await submit.text(), /Enter a login name/);
      submit = await req(jar, action, { method: 'POST', headers: FORM, body: form({ login: user }) });
      assert.equal(submit.status, 303, 'login submit');
      res = submit;
    } else {
      assert.equal(res.status, 303, 'consent-only interaction answers with a redirect');
    }
    loc = new URL(res.headers.get('location'), idp.issuer);
    assert.match(loc.pathname, /^\/ENV_ID\/as\/authorize\/[\w-]+$/, 'resume');
    res = await req(jar, loc.href);
    assert.equal(res.status, 303, 'resume');
    loc = new URL(res.headers.get('location'));
  }
  assert.equal(`${loc.origin}${loc.pathname}`, client.redirect_uris[0]);
  assert.equal(loc.searchParams.get('state'), state);
  assert.equal(loc.searchParams.get('iss'), iss ? idp.issuer : null, 'RFC 9207 iss');
  return { code: loc.searchParams.get('code'), verifier, nonce, state, jar };
}

// POST to an endpoint with the client's authentication (basic, or post when registered so).
async function authPost(url, client, body, extraHeaders = {}) {
  const headers = { ...FORM, ...extraHeaders };
  if (client.token_endpoint_auth_method === 'client_secret_post') {
    Object.assign(body, { client_id: client.client_id, client_secret: client.client_secret });
  } else headers.authorization = basic(client.client_id, client.client_secret);
  const res = await fetch(url, { method: 'POST', headers, body: form(body) });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { text }; } // a 404 is plain text
  return { status: res.status, headers: res.headers, json };
}
// headers: e.g. { dpop: proof }.
const token = (idp, client, body, headers) => authPost(`${idp.issuer}/token`, client, body, headers);
const push = (idp, client, params, headers) => authPost(`${idp.issuer}/par`, client, { ...params }, headers);

// ---- DPoP (RFC 9449) with node:crypto -------------------------------------------------------
/** A fresh P-256 key: its public JWK and RFC 7638 thumbprint. */
function dpopKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const jkt = b64u(crypto.hash('sha256', JSON.stringify({ crv, kty, x, y }), 'buffer'));
  return { privateKey, jwk: { kty, crv, x, y }, jkt };
}
/** A DPoP proof JWT (ES256). claims override/extend htm, htu, iat, jti; `header` the JOSE header. */
function dpopProof(key, htm, htu, claims = {}, header = {}) {
  const enc = (o) => b64u(JSON.stringify(o));
  const input = `${enc({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk, ...header })}.${enc({
    jti: b64u(crypto.randomBytes(16)), htm, htu, iat: Math.floor(Date.now() / 1000), ...claims,
  })}`;
  const sig = crypto.sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64u(sig)}`;
}
const jwtPayload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));
const exchange = (idp, c, l) => token(idp, c, { grant_type: 'authorization_code', code: l.code, redirect_uri: c.redirect_uris[0], code_verifier: l.verifier });
const refresh = (idp, c, rt) => token(idp, c, { grant_type: 'refresh_token', refresh_token: rt });
const getJson = async (url, opts) => (await fetch(url, opts)).json();
const post = (url) => fetch(url, { method: 'POST' }).then((r) => r.json());

// ---- the test -----------------------------------------------------------------------------
const bcl = []; // back-channel logout tokens received
const rp = http.createServer((rq, rs) => {
  let b = '';
  rq.on('data', (d) => { b += d; }).on('end', () => { bcl.push(new URLSearchParams(b).get('logout_token')); rs.writeHead(200).end(); });
});
rp.listen(0, '127.0.0.1');
await once(rp, 'listening');
const rpBase = `http://127.0.0.1:${rp.address().port}`;

const A = {
  client_id: 'bff', client_secret: 'bff-secret', redirect_uris: [`${rpBase}/callback`],
  post_logout_redirect_uris: [`${rpBase}/`], backchannel_logout_uri: `${rpBase}/backchannel-logout`,
};
const B = {
  client_id: 'bff-es', client_secret: 'es-secret', token_endpoint_auth_method: 'client_secret_post',
  redirect_uris: [`${rpBase}/cb-es`], id_token_signed_response_alg: 'ES256',
};
const C = { client_id: 'bff-ps', client_secret: 'ps-secret', redirect_uris: [`${rpBase}/cb-ps`], id_token_signed_response_alg: 'PS256' };

const server = startIdp({ clients: [A, B, C], signingAlgs: ['RS256', 'PS256', 'ES256'], bigClaimBytes: 5000, accessTokenTtl: 300 });
let idp2; // requirePar + dpopNonce
let idp3; // par: false, dpop: false
let idp4; // issAuthResp: false
let failed = false;
try {
  const idp = await server.ready;
  console.log(`ready in ${server.ms().toFixed(0)} ms: ${JSON.stringify(idp)}`);
  assert.match(idp.issuer, /^http:\/\/127\.0\.0\.1:\d+\/ENV_ID\/as$/);

  const disc = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
  assert.equal(disc.issuer, idp.issuer);
  for (const [k, p] of Object.entries({ authorization_endpoint: 'authorize', token_endpoint: 'token', jwks_uri: 'jwks', userinfo_endpoint: 'userinfo', revocation_endpoint: 'revoke', introspection_endpoint: 'introspect', end_session_endpoint: 'signoff' })) {
    assert.equal(disc[k], `${idp.issuer}/${p}`, k);
  }
  assert.equal(disc.authorization_response_iss_parameter_supported, true);
  assert.deepEqual(disc.code_challenge_methods_supported, ['S256']);
  let jwks = await getJson(disc.jwks_uri);
  assert.deepEqual(jwks.keys.map((k) => k.alg).sort(), ['ES256', 'PS256', 'RS256']);
  assert.equal(new Set(jwks.keys.map((k) => k.kid)).size, 3, 'distinct kids');
  log('discovery + JWKS (3 keys, distinct kids)');

  // PKCE is required even for a confidential client.
  let res = await fetch(`${idp.issuer}/authorize?${form({ response_type: 'code', client_id: A.client_id, redirect_uri: A.redirect_uris[0], scope: 'openid', state: 'x' })}`, { redirect: 'manual' });
  assert.equal(new URL(res.headers.get('location')).searchParams.get('error'), 'invalid_request', 'PKCE required');
  log('authorization request without PKCE refused');

  // 1. Login + code exchange.
  const l1 = await login(idp, A);
  let t = await exchange(idp, A, l1);
  assert.equal(t.status, 200, JSON.stringify(t.json));
  assert.ok(t.json.access_token && t.json.refresh_token && t.json.id_token);
  assert.equal(t.json.token_type, 'Bearer');
  assert.equal(t.json.expires_in, 300);
  assert.equal(t.json.scope, 'openid profile email', 'offline_access is dropped without prompt=consent');
  let id = verifyJwt(t.json.id_token, jwks);
  assert.equal(id.header.alg, 'RS256');
  assert.equal(id.payload.iss, idp.issuer);
  assert.equal(id.payload.aud, A.client_id);
  assert.equal(id.payload.sub, 'alice');
  assert.equal(id.payload.nonce, l1.nonce);
  assert.equal(id.payload.name, 'Alice');
  assert.equal(id.payload.email, 'alice@example.test');
  assert.equal(id.payload.big.length, 5000);
  assert.ok(id.payload.sid, 'sid (back-channel logout)');
  const sid = id.payload.sid;
  log(`login + code exchange (cookies: ${[...l1.jar.cookies.keys()].join(', ')}), ID token ${t.json.id_token.length} bytes`);

  const ui = await getJson(disc.userinfo_endpoint, { headers: { authorization: `Bearer ${t.json.access_token}` } });
  assert.equal(ui.sub, "alice", JSON.stringify(ui));
  assert.equal(ui.email_verified, true);
  const intro = await getJson(disc.introspection_endpoint, { method: 'POST', headers: { ...FORM, authorization: basic(A.client_id, A.client_secret) }, body: form({ token: t.json.access_token }) });
  assert.equal(intro.active, true);
  assert.equal(intro.sub, 'alice');
  log('userinfo, introspection');

  // 2. Refresh with rotation.
  const rt1 = t.json.refresh_token;
  t = await refresh(idp, A, rt1);
  assert.equal(t.status, 200, JSON.stringify(t.json));
  const rt2 = t.json.refresh_token;
  assert.ok(rt2 && rt2 !== rt1, 'rotated');
  assert.equal(verifyJwt(t.json.id_token, jwks).payload.sub, 'alice');
  log('refresh rotates the refresh token and returns a new ID token');

  // 3. Key rotation keeps sessions and grants.
  const oldKids = jwks.keys.map((k) => k.kid);
  const { kids } = await post(`http://127.0.0.1:${idp.port}/__test/rotate-keys`);
  jwks = await getJson(disc.jwks_uri);
  assert.deepEqual(jwks.keys.map((k) => k.kid).sort(), [...kids].sort());
  assert.ok(kids.every((k) => !oldKids.includes(k)));
  t = await refresh(idp, A, rt2);
  assert.equal(t.status, 200, JSON.stringify(t.json));
  assert.ok(kids.includes(verifyJwt(t.json.id_token, jwks).header.kid));
  const rt3 = t.json.refresh_token;
  const l2 = await login(idp, A, { jar: l1.jar, expect: 'none' }); // session survived: no interaction
  assert.equal((await exchange(idp, A, l2)).status, 200);
  log('rotate-keys: new kids only, old grant refreshes, old session still logged in');

  // 4. Revocation of a refresh token kills its grant.
  res = await fetch(disc.revocation_endpoint, { method: 'POST', headers: { ...FORM, authorization: basic(A.client_id, A.client_secret) }, body: form({ token: rt3, token_type_hint: 'refresh_token' }) });
  assert.equal(res.status, 200);
  assert.equal((await refresh(idp, A, rt3)).json.error, 'invalid_grant');
  log('revocation');

  // 5. Reuse of a rotated refresh token revokes the grant. The session's grant is gone now,
  //    so this login goes through the consent-only interaction (auto-granted, no form).
  const l3 = await login(idp, A, { jar: l1.jar, expect: 'consent' });
  t = await exchange(idp, A, l3);
  const rt4 = t.json.refresh_token;
  const rt5 = (await refresh(idp, A, rt4)).json.refresh_token;
  assert.equal((await refresh(idp, A, rt4)).json.error, 'invalid_grant', 'reuse of rotated token');
  assert.equal((await refresh(idp, A, rt5)).json.error, 'invalid_grant', 'reuse revoked the grant');
  log('reuse of a rotated refresh token revokes the whole grant; consent-only interaction');

  // 6. /__test/revoke-refresh-tokens.
  const l4 = await login(idp, A, { jar: l1.jar, expect: 'consent' });
  t = await exchange(idp, A, l4);
  const rt6 = t.json.refresh_token;
  const { revoked } = await post(`http://127.0.0.1:${idp.port}/__test/revoke-refresh-tokens`);
  assert.equal(revoked, 1, 'one live refresh token');
  assert.equal((await refresh(idp, A, rt6)).json.error, 'invalid_grant');
  log(`revoke-refresh-tokens -> {"revoked":${revoked}}`);

  // 7. Other clients: ES256 + client_secret_post, PS256; a second user in a fresh browser.
  for (const [client, alg] of [[B, 'ES256'], [C, 'PS256']]) {
    const l = await login(idp, client, { user: 'bob', scope: 'openid email' });
    const tt = await exchange(idp, client, l);
    assert.equal(tt.status, 200, JSON.stringify(tt.json));
    const v = verifyJwt(tt.json.id_token, jwks);
    assert.equal(v.header.alg, alg);
    assert.equal(v.payload.sub, 'bob');
    assert.equal(v.payload.name, undefined, 'no profile scope, no name');
    const rt = (await refresh(idp, client, tt.json.refresh_token)).json.refresh_token;
    assert.ok(rt);
    // Replaying a code is refused and revokes everything issued from it (RFC 6749 §4.1.2).
    assert.equal((await exchange(idp, client, l)).json.error, 'invalid_grant', 'code reuse');
    assert.equal((await refresh(idp, client, rt)).json.error, 'invalid_grant', 'code reuse revoked the grant');
  }
  log('ES256 client (client_secret_post) and PS256 client; code reuse revokes the grant');

  // 8. RP-initiated logout with the default confirmation form + back-channel logout.
  //    (revoke-refresh-tokens took the session's grant: this login is consent-only again)
  const l5 = await login(idp, A, { jar: l1.jar, expect: 'consent' });
  t = await exchange(idp, A, l5);
  const rt7 = t.json.refresh_token;
  const q = form({ id_token_hint: t.json.id_token, post_logout_redirect_uri: A.post_logout_redirect_uris[0], state: 'bye' });
  res = await req(l1.jar, `${disc.end_session_endpoint}?${q}`);
  assert.equal(res.status, 200);
  const html = await res.text();
  assert.match(html, /Yes, sign me out/);
  const action = html.match(/<form id="op.logoutForm" method="post" action="([^"]+)"/)[1];
  const xsrf = html.match(/name="xsrf" value="([^"]+)"/)[1];
  assert.equal(action, `${idp.issuer}/signoff/confirm`);
  res = await req(l1.jar, action, { method: 'POST', headers: FORM, body: form({ xsrf, logout: 'yes' }) });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), `${A.post_logout_redirect_uris[0]}?state=bye`);
  assert.equal(bcl.length, 1, 'one back-channel logout token');
  const lt = JSON.parse(Buffer.from(bcl[0].split('.')[1], 'base64url'));
  assert.equal(lt.sub, 'alice');
  assert.equal(lt.sid, sid);
  assert.ok(lt.events['http://schemas.openid.net/event/backchannel-logout']);
  assert.equal((await refresh(idp, A, rt7)).json.error, 'invalid_grant', 'logout revokes the grant');
  await login(idp, A, { jar: l1.jar, expect: 'form' }); // the IdP session is gone
  log('end session (confirm form, post_logout_redirect_uri, back-channel logout token, grant revoked)');

  // 8b. RFC 8707 resource indicators and RFC 8693 token exchange.
  const R = 'https://orders.example.test/';
  const l9 = await login(idp, B, { user: 'carol', scope: 'openid read write', extra: { resource: R } });
  t = await token(idp, B, { grant_type: 'authorization_code', code: l9.code, redirect_uri: B.redirect_uris[0], code_verifier: l9.verifier, resource: R });
  assert.equal(t.status, 200, JSON.stringify(t.json));
  let at = verifyJwt(t.json.access_token, jwks).payload;
  const t8bAccessToken = t.json.access_token;
  assert.equal(at.aud, R, 'the login token is bound to the resource');
  assert.deepEqual(at.scope.split(' ').sort(), ['read', 'write']);
  const reqs = await getJson(`http://127.0.0.1:${idp.port}/__test/requests`);
  assert.deepEqual(reqs.filter((r) => r.resource.length).map((r) => r.endpoint), ['authorize', 'token']);
  const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
  const AT = 'urn:ietf:params:oauth:token-type:access_token';
  const tx = (subject, more) => token(idp, B, { grant_type: TE, subject_token: subject, subject_token_type: AT, requested_token_type: AT, ...more });
  let x = await tx(t.json.access_token, { resource: 'https://payments.example.test/', scope: 'read' });
  assert.equal(x.status, 200, JSON.stringify(x.json));
  assert.equal(x.json.issued_token_type, AT);
  at = verifyJwt(x.json.access_token, jwks).payload;
  assert.deepEqual([at.aud, at.scope, at.sub], ['https://payments.example.test/', 'read', 'carol']);
  x = await tx(t.json.access_token, { audience: 'avatars', scope: 'write' });
  assert.equal(verifyJwt(x.json.access_token, jwks).payload.aud, 'avatars');
  x = await tx(t.json.access_token, { resource: R, scope: 'read admin' });
  assert.deepEqual([x.status, x.json.error], [400, 'invalid_scope'], 'no up-scoping');
  x = await tx('not-a-token', { resource: R });
  assert.deepEqual([x.status, x.json.error], [400, 'invalid_grant']);
  await post(`http://127.0.0.1:${idp.port}/__test/refuse-exchanges`);
  x = await tx(t.json.access_token, { resource: R });
  assert.equal(x.json.error, 'invalid_grant', 'refuse switch');
  await fetch(`http://127.0.0.1:${idp.port}/__test/refuse-exchanges`, { method: 'DELETE' });
  log('resource-bound login token (JWT, aud = resource); token exchange down-scopes, refuses up-scoping');

  // 9. Counters and config.
  const ev = await getJson(`http://127.0.0.1:${idp.port}/__test/events`);
  assert.deepEqual(ev, {
    grants: { authorization_code: 8, refresh_token: 5, token_exchange: 2 }, revocations: 1, end_sessions: 1, introspections: 1,
    // Refused ones too: 2 replayed codes, 7 refused refreshes, 3 refused exchanges.
    token_requests: { total: 27, authorization_code: 10, refresh_token: 12, token_exchange: 5 },
  });
  const conf = await getJson(`http://127.0.0.1:${idp.port}/__test/config`);
  assert.ok(!JSON.stringify(conf).includes('secret"'), 'no secrets');
  assert.deepEqual(conf.clients[0].grant_types, ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange']);
  log(`events ${JSON.stringify(ev)}`);

  // 9b. PAR (RFC 9126) and DPoP (RFC 9449), both on by default.
  const ctl = (p, method = 'POST') => fetch(`http://127.0.0.1:${idp.port}/__test/${p}`, { method }).then((r) => r.json());
  const lastRequests = async (n) => (await getJson(`http://127.0.0.1:${idp.port}/__test/requests`)).slice(-n);
  assert.equal(disc.pushed_authorization_request_endpoint, `${idp.issuer}/par`);
  assert.equal(disc.require_pushed_authorization_requests, undefined);
  assert.ok(disc.dpop_signing_alg_values_supported.includes('ES256'), 'DPoP ES256');
  const TOKEN = `${idp.issuer}/token`;
  const k1 = dpopKey();
  const k2 = dpopKey();
  // PAR with dpop_jkt (client_secret_post), then /authorize with client_id and request_uri only.
  const l10 = await login(idp, B, { user: 'dave', scope: 'openid read write', par: true, extra: { resource: R, dpop_jkt: k1.jkt } });
  let [pr, ar] = (await lastRequests(10)).filter((r) => r.endpoint === 'par' || (r.endpoint === 'authorize' && r.query_keys.includes('request_uri')));
  assert.deepEqual(
    [pr.status, pr.state, pr.dpop_jkt, pr.client_auth, pr.dpop_proof, pr.query_keys, pr.resource],
    [201, l10.state, k1.jkt, 'post', false, null, [R]],
    JSON.stringify(pr),
  );
  assert.deepEqual([ar.query_keys, ar.state, ar.dpop_jkt, ar.client_auth], [['client_id', 'request_uri'], l10.state, k1.jkt, null], JSON.stringify(ar));
  log('PAR: push (201, request_uri, expires_in 60) then authorize with client_id + request_uri only; recorded state, dpop_jkt, client_auth');

  // Nonce demanded: a proof without it is 400 use_dpop_nonce + DPoP-Nonce, and spends no code.
  assert.deepEqual(await ctl('dpop-nonce'), { dpop_nonce: true });
  const codeBody = { grant_type: 'authorization_code', code: l10.code, redirect_uri: B.redirect_uris[0], code_verifier: l10.verifier, resource: R };
  t = await token(idp, B, { ...codeBody }, { dpop: dpopProof(k1, 'POST', TOKEN) });
  assert.deepEqual([t.status, t.json.error], [400, 'use_dpop_nonce'], JSON.stringify(t.json));
  const nonce1 = t.headers.get('dpop-nonce');
  assert.match(nonce1 ?? '', /^[\w-]{20,}$/, 'DPoP-Nonce header');
  t = await token(idp, B, { ...codeBody }, { dpop: dpopProof(k1, 'POST', TOKEN, { nonce: nonce1 }) });
  assert.equal(t.status, 200, JSON.stringify(t.json));
  assert.equal(t.json.token_type, 'DPoP');
  at = verifyJwt(t.json.access_token, jwks).payload;
  assert.deepEqual([at.aud, at.cnf?.jkt], [R, k1.jkt], 'a DPoP-bound JWT access token');
  assert.deepEqual(
    (await lastRequests(2)).map((r) => [r.endpoint, r.grant_type, r.status, r.dpop_proof, r.dpop_nonce, r.client_auth, r.state]),
    [['token', 'authorization_code', 400, true, null, 'post', null], ['token', 'authorization_code', 200, true, nonce1, 'post', null]],
  );
  assert.deepEqual(await ctl('dpop-nonce', 'DELETE'), { dpop_nonce: false });
  log('DPoP nonce demanded: 400 use_dpop_nonce + DPoP-Nonce, retry with the nonce -> token_type DPoP, JWT with cnf.jkt');

  const dpopAt = t.json.access_token;
  const dpopRt = t.json.refresh_token;
  t = await token(idp, B, { grant_type: 'refresh_token', refresh_token: dpopRt, resource: R }, { dpop: dpopProof(k1, 'POST', TOKEN) });
  assert.deepEqual([t.status, t.json.token_type, verifyJwt(t.json.access_token, jwks).payload.cnf?.jkt], [200, 'DPoP', k1.jkt], JSON.stringify(t.json));
  log('refresh with a DPoP proof -> token_type DPoP, bound to the same key');

  // The code was bound to dpop_jkt: no proof, or another key's proof, is invalid_grant.
  // (invalid_grant's error_description is always the generic "grant request is invalid".)
  for (const proof of [undefined, dpopProof(k2, 'POST', TOKEN)]) {
    const l = await login(idp, B, { user: 'dave', scope: 'openid', par: true, extra: { dpop_jkt: k1.jkt } });
    t = await token(idp, B, { grant_type: 'authorization_code', code: l.code, redirect_uri: B.redirect_uris[0], code_verifier: l.verifier }, proof ? { dpop: proof } : {});
    assert.deepEqual([t.status, t.json.error], [400, 'invalid_grant'], JSON.stringify(t.json));
  }
  // A proof that fails validation is invalid_dpop_proof (400 at the token endpoint).
  const l11 = await login(idp, B, { user: 'dave', scope: 'openid' });
  t = await token(idp, B, { grant_type: 'authorization_code', code: l11.code, redirect_uri: B.redirect_uris[0], code_verifier: l11.verifier }, { dpop: dpopProof(k1, 'POST', `${idp.issuer}/other`) });
  assert.deepEqual([t.status, t.json.error, t.json.error_description], [400, 'invalid_dpop_proof', 'DPoP proof htu mismatch']);
  // Without dpop_jkt, a proof on the code exchange still binds; no proof gives a Bearer token.
  t = await exchange(idp, B, l11);
  assert.deepEqual([t.status, t.json.token_type], [200, 'Bearer'], 'the failed proof did not spend the code');
  log('dpop_jkt-bound code: no proof / other key -> invalid_grant; bad htu -> 400 invalid_dpop_proof (code not spent)');

  // DPoP token exchange.
  const txd = (subject, proof, more = {}) => token(idp, B, { grant_type: TE, subject_token: subject, subject_token_type: AT, requested_token_type: AT, resource: 'https://payments.example.test/', scope: 'read', ...more }, proof ? { dpop: proof } : {});
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN));
  assert.deepEqual([x.status, x.json.token_type], [200, 'DPoP'], JSON.stringify(x.json));
  assert.equal(x.headers.get('dpop-nonce'), null, 'no nonce handed out while none are demanded');
  at = verifyJwt(x.json.access_token, jwks).payload;
  assert.deepEqual([at.cnf?.jkt, at.aud, at.scope, at.sub], [k1.jkt, 'https://payments.example.test/', 'read', 'dave']);
  let rec = (await lastRequests(1))[0];
  assert.deepEqual([rec.grant_type, rec.dpop_proof, rec.status], [TE, true, 200]);
  x = await txd(dpopAt, dpopProof(k2, 'POST', TOKEN));
  assert.deepEqual([x.status, x.json.error], [400, 'invalid_grant'], 'another key than the subject token\'s');
  x = await txd(dpopAt);
  assert.deepEqual([x.status, x.json.error], [400, 'invalid_grant'], 'a bound subject token needs a proof');
  x = await txd(dpopAt, dpopProof(k1, 'GET', TOKEN));
  assert.deepEqual([x.status, x.json.error, x.json.error_description], [400, 'invalid_dpop_proof', 'DPoP proof htm mismatch']);
  // A proof whose iat is off by more than 5 minutes: the library offers a nonce instead
  // (nonces are always available here), and the retry with it is accepted whatever iat says.
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN, { iat: Math.floor(Date.now() / 1000) - 3600 }));
  assert.deepEqual([x.status, x.json.error], [400, 'use_dpop_nonce'], 'stale iat');
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN, { iat: Math.floor(Date.now() / 1000) - 3600, nonce: x.headers.get('dpop-nonce') }));
  assert.deepEqual([x.status, x.json.token_type], [200, 'DPoP'], 'stale iat with a nonce');
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN, { nonce: 'not-a-nonce-of-this-server' }));
  assert.deepEqual([x.status, x.json.error], [400, 'use_dpop_nonce'], 'unknown nonce');
  const once1 = dpopProof(k1, 'POST', TOKEN);
  assert.equal((await txd(dpopAt, once1)).status, 200);
  x = await txd(dpopAt, once1);
  assert.deepEqual([x.status, x.json.error], [400, 'invalid_grant'], 'replayed proof (jti)');
  await ctl('dpop-nonce');
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN));
  assert.deepEqual([x.status, x.json.error], [400, 'use_dpop_nonce']);
  x = await txd(dpopAt, dpopProof(k1, 'POST', TOKEN, { nonce: x.headers.get('dpop-nonce') }));
  assert.deepEqual([x.status, x.json.token_type], [200, 'DPoP']);
  await ctl('dpop-nonce', 'DELETE');
  // An unbound (Bearer) subject token with a proof: the exchanged token is bound to the proof.
  x = await txd(t8bAccessToken, dpopProof(k2, 'POST', TOKEN), { resource: R });
  assert.deepEqual([x.status, x.json.token_type, verifyJwt(x.json.access_token, jwks).payload.cnf?.jkt], [200, 'DPoP', k2.jkt]);
  x = await txd(t8bAccessToken, undefined, { resource: R });
  assert.deepEqual([x.status, x.json.token_type, verifyJwt(x.json.access_token, jwks).payload.cnf], [200, 'Bearer', undefined]);
  log('DPoP token exchange: bound to the proof key (cnf.jkt, token_type DPoP); other key / no proof -> invalid_grant; htm, iat, jti replay, nonce validated');

  // refuse-par switch; client_secret_basic on PAR.
  const parParams = { response_type: 'code', client_id: A.client_id, redirect_uri: A.redirect_uris[0], scope: 'openid', state: 'refused', code_challenge: b64u(crypto.randomBytes(32)), code_challenge_method: 'S256' };
  assert.deepEqual(await ctl('refuse-par'), { refuse_par: true });
  let p = await push(idp, A, parParams);
  assert.deepEqual([p.status, p.json], [400, { error: 'invalid_request', error_description: 'PAR refused (test switch)' }]);
  rec = (await lastRequests(1))[0];
  assert.deepEqual([rec.endpoint, rec.status, rec.state, rec.client_auth], ['par', 400, 'refused', 'basic']);
  assert.deepEqual(await ctl('refuse-par', 'DELETE'), { refuse_par: false });
  p = await push(idp, A, parParams);
  assert.equal(p.status, 201, JSON.stringify(p.json));
  log('refuse-par: 400 invalid_request while on, 201 again after DELETE (client_secret_basic recorded as basic)');

  const reqText = JSON.stringify(await getJson(`http://127.0.0.1:${idp.port}/__test/requests`));
  for (const secret of [A.client_secret, B.client_secret, dpopAt, dpopRt, l10.code, l10.verifier]) {
    assert.ok(!reqText.includes(secret), '/__test/requests records no secret, code or token');
  }
  assert.ok(!/eyJ/.test(reqText), 'no JWT (proof or token) recorded');

  // requirePar + dpopNonce from the start, on a second IdP.
  idp2 = startIdp({ clients: [A, B], signingAlgs: ['ES256'], requirePar: true, dpopNonce: true });
  const i2 = await idp2.ready;
  const disc2 = await getJson(`${i2.issuer}/.well-known/openid-configuration`);
  assert.equal(disc2.require_pushed_authorization_requests, true);
  res = await fetch(`${i2.issuer}/authorize?${form({ response_type: 'code', client_id: A.client_id, redirect_uri: A.redirect_uris[0], scope: 'openid', state: 'fc', code_challenge: b64u(crypto.randomBytes(32)), code_challenge_method: 'S256' })}`, { redirect: 'manual' });
  const loc = new URL(res.headers.get('location'));
  assert.deepEqual([res.status, `${loc.origin}${loc.pathname}`, loc.searchParams.get('error'), loc.searchParams.get('error_description'), loc.searchParams.get('state')],
    [303, A.redirect_uris[0], 'invalid_request', 'Pushed Authorization Request must be used', 'fc']);
  const l12 = await login(i2, A, { par: true, scope: 'openid', extra: { dpop_jkt: k1.jkt } });
  const T2 = `${i2.issuer}/token`;
  const body2 = { grant_type: 'authorization_code', code: l12.code, redirect_uri: A.redirect_uris[0], code_verifier: l12.verifier };
  t = await token(i2, A, { ...body2 }, { dpop: dpopProof(k1, 'POST', T2) });
  assert.deepEqual([t.status, t.json.error], [400, 'use_dpop_nonce']);
  t = await token(i2, A, { ...body2 }, { dpop: dpopProof(k1, 'POST', T2, { nonce: t.headers.get('dpop-nonce') }) });
  assert.deepEqual([t.status, t.json.token_type], [200, 'DPoP'], JSON.stringify(t.json));
  assert.equal((await getJson(`http://127.0.0.1:${i2.port}/__test/config`)).dpopNonce, true);
  // The refresh grant too; the challenged attempt does not spend (rotate) the refresh token.
  const rtBody = { grant_type: 'refresh_token', refresh_token: t.json.refresh_token };
  t = await token(i2, A, { ...rtBody }, { dpop: dpopProof(k1, 'POST', T2) });
  assert.deepEqual([t.status, t.json.error], [400, 'use_dpop_nonce']);
  t = await token(i2, A, { ...rtBody }, { dpop: dpopProof(k1, 'POST', T2, { nonce: t.headers.get('dpop-nonce') }) });
  assert.deepEqual([t.status, t.json.token_type], [200, 'DPoP'], JSON.stringify(t.json));
  await fetch(`http://127.0.0.1:${i2.port}/__test/dpop-nonce`, { method: 'DELETE' });
  t = await token(i2, A, { grant_type: 'refresh_token', refresh_token: t.json.refresh_token }, { dpop: dpopProof(k1, 'POST', T2) });
  assert.deepEqual([t.status, t.json.token_type], [200, 'DPoP'], 'no nonce needed after DELETE');
  log('requirePar: discovery says so, front-channel request refused (303 error=invalid_request); dpopNonce config demands a nonce from the start (code and refresh grants; the challenged attempt spends nothing)');

  // par: false and dpop: false on a third IdP.
  idp3 = startIdp({ clients: [A], signingAlgs: ['ES256'], par: false, dpop: false });
  const i3 = await idp3.ready;
  const disc3 = await getJson(`${i3.issuer}/.well-known/openid-configuration`);
  assert.deepEqual([disc3.pushed_authorization_request_endpoint, disc3.dpop_signing_alg_values_supported], [undefined, undefined]);
  assert.equal((await push(i3, A, parParams)).status, 404, 'no PAR endpoint');
  const l13 = await login(i3, A, { scope: 'openid' });
  t = await token(i3, A, { grant_type: 'authorization_code', code: l13.code, redirect_uri: A.redirect_uris[0], code_verifier: l13.verifier }, { dpop: dpopProof(k1, 'POST', `${i3.issuer}/token`) });
  assert.deepEqual([t.status, t.json.token_type], [200, 'Bearer'], 'the DPoP header is ignored');
  log('par: false, dpop: false: discovery lacks both, /par is 404, a DPoP header is ignored (token_type Bearer)');

  // issAuthResp: false on a fourth IdP: an IdP without RFC 9207 (no iss, not advertised).
  idp4 = startIdp({ clients: [A], signingAlgs: ['ES256'], issAuthResp: false });
  const i4 = await idp4.ready;
  const disc4 = await getJson(`${i4.issuer}/.well-known/openid-configuration`);
  assert.ok(!('authorization_response_iss_parameter_supported' in disc4), 'not advertised');
  assert.ok(!('authorization_response_iss_parameter_supported' in await getJson(`${i4.issuer}/.well-known/oauth-authorization-server`)));
  assert.equal(disc4.issuer, i4.issuer);
  assert.equal((await getJson(`http://127.0.0.1:${i4.port}/__test/config`)).issAuthResp, false);
  const l14 = await login(i4, A, { scope: 'openid', iss: false }); // asserts: no iss
  assert.equal((await exchange(i4, A, l14)).status, 200);
  const l15 = await login(i4, A, { scope: 'openid', par: true, iss: false, jar: l14.jar, expect: 'none' });
  assert.equal((await exchange(i4, A, l15)).status, 200);
  res = await fetch(`${i4.issuer}/authorize?${form({ response_type: 'code', client_id: A.client_id, redirect_uri: A.redirect_uris[0], scope: 'openid', state: 'nopkce' })}`, { redirect: 'manual' });
  let loc4 = new URL(res.headers.get('location'));
  assert.deepEqual([res.status, loc4.searchParams.get('error'), loc4.searchParams.get('state'), loc4.searchParams.has('iss')], [303, 'invalid_request', 'nopkce', false], 'error responses too');
  assert.ok(!(await res.text()).includes('iss='), 'nor in the redirect body');
  // form_post and fragment response modes, with the IdP session (no interaction): compared
  // with the first IdP, whose answers do carry iss.
  const direct = (i, jar, mode) => req(jar, `${i.issuer}/authorize?${form({
    response_type: 'code', response_mode: mode, client_id: A.client_id, redirect_uri: A.redirect_uris[0], scope: 'openid', state: mode,
    code_challenge: b64u(crypto.randomBytes(32)), code_challenge_method: 'S256',
  })}`);
  const fp = await Promise.all([[idp, l1.jar], [i4, l14.jar]].map(async ([i, jar]) => {
    const r = await direct(i, jar, 'form_post');
    assert.equal(r.status, 200, 'form_post answers the auto-submitting form');
    const page = await r.text();
    return ['code', 'state', 'iss'].map((n) => page.includes(`name="${n}"`));
  }));
  assert.deepEqual(fp, [[true, true, true], [true, true, false]], 'form_post: iss only from the RFC 9207 IdP');
  res = await direct(i4, l14.jar, 'fragment');
  loc4 = new URL(res.headers.get('location'));
  const frag = new URLSearchParams(loc4.hash.slice(1));
  assert.deepEqual([res.status, frag.has('code'), frag.get('state'), frag.has('iss')], [303, true, 'fragment', false]);
  log('issAuthResp: false: discovery lacks authorization_response_iss_parameter_supported; no iss in query, error, PAR, fragment or form_post responses');

  // token_requests counts what reached the token endpoint whatever the answer: a code of the
  // first IdP presented to this one (a mix-up) is refused, and counted; grants are not.
  const before4 = await getJson(`http://127.0.0.1:${i4.port}/__test/events`);
  assert.deepEqual(before4.token_requests, { total: 2, authorization_code: 2, refresh_token: 0, token_exchange: 0 });
  const foreign = await login(idp, A, { scope: 'openid' });
  t = await exchange(i4, A, foreign);
  assert.deepEqual([t.status, t.json.error], [400, 'invalid_grant']);
  await post(`http://127.0.0.1:${i4.port}/__test/outage`);
  t = await refresh(i4, A, 'any');
  assert.equal(t.status, 503);
  await fetch(`http://127.0.0.1:${i4.port}/__test/outage`, { method: 'DELETE' });
  t = await token(i4, A, { code: 'x' }); // no grant_type at all
  assert.deepEqual([t.status, t.json.error], [400, 'invalid_request']);
  const after4 = await getJson(`http://127.0.0.1:${i4.port}/__test/events`);
  assert.deepEqual(after4.grants, before4.grants, 'no new grant');
  assert.deepEqual(after4.token_requests, { total: 5, authorization_code: 3, refresh_token: 1, token_exchange: 0, none: 1 });
  assert.equal((await exchange(idp, A, foreign)).status, 200, 'the code is still good at its own IdP');
  log('token_requests: a refused foreign code, an outage 503 and a request without grant_type are counted; grants unchanged');

  // 10. Shutdown: SIGTERM exits 0; stdout carried exactly one line.
  server.child.kill('SIGTERM');
  const [code] = await once(server.child, 'exit');
  assert.equal(code, 0, 'SIGTERM exit code');
  assert.equal(server.stdout().split('\n').filter(Boolean).length, 1, `stdout: ${server.stdout()}`);
  log('SIGTERM -> exit 0, exactly one stdout line');

  // 11. A parent that dies closes our stdin: the server must go with it.
  const orphan = startIdp({ port: 0, envId: 'other' });
  const o = await orphan.ready;
  assert.match(o.issuer, /\/other\/as$/);
  orphan.child.stdin.end();
  const [oc] = await once(orphan.child, 'exit');
  assert.equal(oc, 0);
  log('stdin closed -> exit 0');
} catch (err) {
  failed = true;
  console.error('SMOKE FAILED:', err);
  console.error('--- server stderr ---\n', server.stderr());
  for (const other of [idp2, idp3, idp4]) if (other) console.error('--- other server stderr ---\n', other.stderr());
} finally {
  server.child.kill('SIGTERM');
  idp2?.child.kill('SIGTERM');
  idp3?.child.kill('SIGTERM');
  idp4?.child.kill('SIGTERM');
  rp.close();
}
console.log(failed ? 'smoke: FAIL' : 'smoke: OK');
process.exit(failed ? 1 : 0);
