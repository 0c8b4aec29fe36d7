// Pushed authorization requests (SPEC §3.5, RFC 9126) and DPoP (SPEC §3.6, RFC 9449), in
// Chromium: with `par = "required"` the browser reaches the IdP's /authorize with nothing but
// client_id and request_uri (the IdP refuses anything else: requirePar); with `dpop = true` the
// login's key thumbprint is pushed as dpop_jkt, the access token (a JWT for the echo API's
// resource) is bound to it (cnf.jkt), and the echo API receives `Authorization: DPoP` with a
// proof it verifies. Server nonces, at the IdP and at the API, are fetched and used. A refused
// PAR shows par_rejected and sets no transaction cookie. The page never sees a token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { CLIENT_ID, startStack } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const JKT = /^[A-Za-z0-9_-]{43}$/; // base64url of a SHA-256

const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));

describe('PAR and DPoP', () => {
  let stack;
  let page;
  let recorder;
  const snapshots = [];
  let firstJkt;

  before(async () => {
    stack = await startStack({
      idpConfig: { requirePar: true },
      // The login's access token is a JWT for the echo API (RFC 8707), so it carries cnf.jkt.
      extraOidc: (upstream) => [
        'par = "required"',
        'dpop = true',
        `resource = ["${upstream}/"]`,
        'scopes = ["openid", "profile", "email", "offline_access", "read"]',
      ].join('\n'),
    });
    const context = await stack.browser.newContext();
    recorder = recordResponses(context);
    page = await recorder.newPage();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  /** Click the SPA's "Call API" button and return the echo API's answer shown on the page. */
  async function callApi() {
    const before = stack.echo.log.length;
    // The click handler clears data-status at once and sets it when the answer is shown (an
    // upstream 401 would instead show the logged-out view: the wait then fails, with the log).
    await page.click('#call-api');
    try {
      await page.waitForSelector('#api-result[data-status]', { timeout: 10_000 });
    } catch (err) {
      throw new Error(`no API answer shown; the echo API saw ${JSON.stringify(stack.echo.log.slice(before))}`, { cause: err });
    }
    const shown = await page.textContent('#api-result');
    assert.match(shown, /^HTTP 200\n/, shown);
    return JSON.parse(shown.replace(/^HTTP \d+\n/, ''));
  }

  it('logs in through PAR: /authorize gets only client_id and request_uri, /par gets dpop_jkt', async () => {
    await page.goto(stack.app);
    await spaReady(page);
    await page.click('#login');
    await signInAtIdp(page);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
    assert.equal(await page.textContent('#name'), 'Alice');

    const requests = await stack.idp.requests();
    const authorize = requests.filter((r) => r.endpoint === 'authorize');
    const pushed = requests.filter((r) => r.endpoint === 'par');
    const tokens = requests.filter((r) => r.endpoint === 'token');
    assert.equal(authorize.length, 1, JSON.stringify(requests));
    assert.deepEqual(authorize[0].query_keys, ['client_id', 'request_uri'], 'the browser carried nothing else');
    assert.equal(authorize[0].status, 303);
    assert.equal(pushed.length, 1, JSON.stringify(requests));
    const [par] = pushed;
    assert.equal(par.status, 201);
    assert.equal(par.client_auth, 'basic', 'PAR is authenticated like the token request');
    assert.match(par.dpop_jkt ?? '', JKT, 'the login key thumbprint was pushed');
    assert.deepEqual(par.resource, [`${stack.echo.url}/`]);
    assert.ok(par.state, 'a state was pushed');
    assert.equal(authorize[0].state, par.state, 'the front channel used the pushed request');
    assert.equal(tokens.length, 1, JSON.stringify(requests));
    assert.deepEqual(
      [tokens[0].grant_type, tokens[0].status, tokens[0].dpop_proof, tokens[0].client_auth],
      ['authorization_code', 200, true, 'basic'],
    );
    firstJkt = par.dpop_jkt;

    // The token is DPoP-bound to that key.
    const issued = await stack.idp.issuedTokens();
    assert.equal(issued.access_tokens.length, 1);
    const claims = payloadOf(issued.access_tokens[0]);
    assert.equal(claims.cnf?.jkt, firstJkt, 'the access token is bound to the pushed dpop_jkt');
    assert.equal(claims.aud, `${stack.echo.url}/`);
    assert.equal(claims.client_id, CLIENT_ID);
    snapshots.push(await pageStorage(page));
  });

  it('calls the API with a DPoP-bound token and a proof the API verifies', async () => {
    const [token] = (await stack.idp.issuedTokens()).access_tokens;
    const answer = await callApi();
    const auth = answer.authorization;
    assert.equal(auth.scheme, 'DPoP', JSON.stringify(answer));
    assert.equal(auth.dpop?.verified, true);
    assert.equal(auth.dpop.jkt, firstJkt, 'the proof key is the login key');
    assert.equal(auth.cnf_jkt, auth.dpop.jkt, 'the proof key is the key the token is bound to');
    assert.equal(auth.dpop.htm, 'GET');
    assert.equal(auth.dpop.htu, `${stack.echo.url}/api/echo`, 'htu: the upstream URL without the query');
    assert.equal(auth.dpop.nonce, null);
    assert.equal(answer.path, '/api/echo');
    assert.deepEqual(answer.query, { from: 'sample-spa' });
    assert.equal(auth.token_length, token.length);

    const seen = stack.echo.requests.at(-1);
    assert.equal(seen.authorization, `DPoP ${token}`);
    assert.ok(seen.dpop, 'a DPoP header came');
    assert.deepEqual([seen.status, seen.verdict.ok, seen.verdict.jkt], [200, true, firstJkt]);
    snapshots.push(await pageStorage(page));
  });

  it('retries an API call once with the nonce the API asks for', async () => {
    const nonce = stack.echo.dpopNonce(true);
    try {
      const before = stack.echo.log.length;
      const answer = await callApi();
      assert.equal(answer.authorization.dpop?.nonce, nonce, JSON.stringify(answer));
      const tried = stack.echo.log.slice(before).map((e) => [e.status, e.dpop?.ok, e.dpop?.reason]);
      assert.deepEqual(tried, [[401, false, 'use_dpop_nonce'], [200, true, null]], 'one challenge, one retry');

      // The nonce is remembered: the next call uses it at once.
      const next = stack.echo.log.length;
      const again = await callApi();
      assert.equal(again.authorization.dpop?.nonce, nonce);
      assert.deepEqual(stack.echo.log.slice(next).map((e) => e.status), [200]);
    } finally {
      stack.echo.dpopNonce(false);
    }
  });

  it('retries the code exchange once with the nonce the IdP asks for', async () => {
    const context = await stack.browser.newContext();
    await stack.idp.switchOn('dpop-nonce');
    try {
      const mark = (await stack.idp.requests()).length;
      const tab = await context.newPage();
      await tab.goto(stack.app);
      await spaReady(tab);
      await tab.click('#login');
      await signInAtIdp(tab);
      await tab.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
      const requests = (await stack.idp.requests()).slice(mark);
      const tokens = requests.filter((r) => r.endpoint === 'token');
      assert.deepEqual(
        tokens.map((r) => [r.grant_type, r.status, r.dpop_proof, r.dpop_nonce !== null]),
        [['authorization_code', 400, true, false], ['authorization_code', 200, true, true]],
        JSON.stringify(tokens),
      );
      const par = requests.find((r) => r.endpoint === 'par');
      assert.match(par?.dpop_jkt ?? '', JKT);
      assert.notEqual(par.dpop_jkt, firstJkt, 'every login has a key of its own');
    } finally {
      await stack.idp.switchOff('dpop-nonce');
      await context.close();
    }
  });

  it('shows par_rejected when the IdP refuses the pushed request, and sets no transaction cookie', async () => {
    const context = await stack.browser.newContext();
    await stack.idp.switchOn('refuse-par');
    try {
      const mark = (await stack.idp.requests()).length;
      const tab = await context.newPage();
      const res = await tab.goto(`${stack.app}/login?return_to=/`);
      assert.equal(res.status(), 502);
      assert.match(await tab.textContent('body'), /par_rejected/);
      const requests = (await stack.idp.requests()).slice(mark);
      assert.deepEqual(requests.map((r) => [r.endpoint, r.status]), [['par', 400]], 'never the front channel');
      const cookies = await context.cookies(stack.app);
      assert.deepEqual(cookies.filter((c) => c.name.startsWith('bff-tx')).map((c) => c.name), []);
    } finally {
      await stack.idp.switchOff('refuse-par');
      await context.close();
    }
  });

  it('never lets the page see a token', async () => {
    await recorder.settle();
    const issued = await stack.idp.issuedTokens();
    assert.ok(issued.access_tokens.length >= 2);
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app: stack.app, snapshots }), []);
  });
});
