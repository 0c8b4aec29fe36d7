// Self-test of the echo API's DPoP checks (RFC 9449): starts it with startEcho() and sends good
// and bad proofs with plain fetch. Exits 0 when every check passes, 1 otherwise.
//   node examples/echo-api/check.mjs
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { jwkThumbprint, startEcho } from './echo.mjs';

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
} catch (err) {
  failed = true;
  console.error('CHECK FAILED:', err);
} finally {
  await echo.close();
  await nonceEcho.close();
}
console.log(failed ? 'echo check: FAIL' : 'echo check: OK');
process.exit(failed ? 1 : 0);
