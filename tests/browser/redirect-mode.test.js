// Redirect mode (the IdP returns to the BFF's /callback), in Chromium: login, claims, reload,
// the proxied API call, an oidc-bff restart, two tabs, logout at the BFF and the IdP, and
// proof that the page never holds a token (SPEC §1, §3, §5, §6).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { fetchInPage, pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { USER, startStack } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const ANONYMOUS = '#anonymous:not([hidden])';

describe('redirect mode', () => {
  let stack;
  let context;
  let page;
  let recorder;
  let storageSnapshots = [];
  const consoleErrors = [];

  // The page's own view of its storage, kept for the final no-token check.
  const snapshot = async (p = page) => { storageSnapshots.push(await pageStorage(p)); };

  before(async () => {
    stack = await startStack();
    context = await stack.browser.newContext();
    recorder = recordResponses(context);
    page = await recorder.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  });

  after(async () => {
    if (stack) await stack.close();
    storageSnapshots = [];
  });

  it('logs in through GET /login and shows the user\'s claims from /session', async () => {
    await page.goto(stack.app);
    await spaReady(page);
    await page.waitForSelector(ANONYMOUS);
    const before = await stack.idp.events();

    await page.click('#login');
    await signInAtIdp(page);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });

    assert.equal(new URL(page.url()).pathname, '/');
    assert.equal(await page.textContent('#name'), 'Alice');
    assert.equal(await page.textContent('#sub'), USER);
    const claims = JSON.parse(await page.textContent('#claims'));
    assert.equal(claims.email, `${USER}@example.test`);
    assert.equal(claims.iss, stack.idp.issuer);
    assert.equal((await stack.idp.events()).grants.authorization_code, before.grants.authorization_code + 1);
    // The session cookie exists, but only for the browser: HttpOnly, SameSite=Strict.
    const cookie = (await context.cookies(stack.app)).find((c) => c.name === 'bff');
    assert.ok(cookie, 'the session cookie "bff" is set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    const seen = await pageStorage(page);
    assert.equal(seen.cookie, '', 'document.cookie shows nothing');
    await snapshot();
  });

  it('keeps the session across a page reload', async () => {
    const before = await stack.idp.events();
    await page.reload();
    await spaReady(page);
    await page.waitForSelector(AUTHENTICATED);
    assert.equal(await page.textContent('#name'), 'Alice');
    assert.deepEqual((await stack.idp.events()).grants, before.grants, 'no new login, no refresh');
    await snapshot();
  });

  it('calls a proxied API: the upstream receives the access token, the page only the answer', async () => {
    const calls = stack.echo.requests.length;
    await page.click('#call-api');
    await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });

    const received = stack.echo.requests.slice(calls);
    assert.equal(received.length, 1, 'one request reached the upstream');
    const [req] = received;
    assert.equal(req.method, 'GET');
    assert.equal(req.path, '/api/echo?from=sample-spa');
    const bearer = /^Bearer (\S+)$/.exec(req.authorization ?? '');
    assert.ok(bearer, `the upstream got a bearer token, not ${req.authorization}`);
    assert.ok(!/(^|;\s*)bff[=.]/.test(req.cookie ?? ''), 'the session cookie does not reach the upstream');
    // The token is a live access token of this user at the real IdP.
    const info = await stack.idp.introspect(bearer[1]);
    assert.equal(info.active, true);
    assert.equal(info.sub, USER);
    assert.equal(info.token_type, 'Bearer');
    // The page shows what the upstream saw, which is not the token.
    const shown = JSON.parse((await page.textContent('#api-result')).replace(/^HTTP 200\n/, ''));
    assert.equal(shown.authorization.scheme, 'Bearer');
    assert.equal(shown.authorization.token_length, bearer[1].length);
    assert.ok(!(await page.content()).includes(bearer[1]));
    await snapshot();
  });

  it('keeps the session across an oidc-bff restart (cookie mode: no server state)', async () => {
    const before = await stack.idp.events();
    await stack.bff.restart();
    await page.reload();
    await spaReady(page);
    await page.waitForSelector(AUTHENTICATED);
    assert.equal(await page.textContent('#name'), 'Alice');

    const calls = stack.echo.requests.length;
    await page.click('#call-api');
    await page.waitForSelector(`#api-result[data-status="200"]`, { timeout: 10_000 });
    assert.equal(stack.echo.requests.length, calls + 1);
    assert.match(stack.echo.requests.at(-1).authorization ?? '', /^Bearer \S+$/);
    assert.equal((await stack.idp.events()).grants.authorization_code, before.grants.authorization_code,
      'no new login after the restart');
    await snapshot();
  });

  it('completes logins started in two tabs', async () => {
    const fresh = await stack.browser.newContext(); // no IdP session: both tabs get the form
    try {
      const before = await stack.idp.events();
      const tabs = [await fresh.newPage(), await fresh.newPage()];
      for (const tab of tabs) {
        await tab.goto(stack.app);
        await spaReady(tab);
        await tab.click('#login');
        await tab.locator('input[name="login"]').waitFor({ timeout: 15_000 });
      }
      // Both logins are in flight (two transaction cookies); finish them in order.
      const tx = (await fresh.cookies(stack.app)).filter((c) => c.name.startsWith('bff-tx.'));
      assert.equal(tx.length, 2, 'one login-transaction cookie per tab');
      for (const tab of tabs) {
        await signInAtIdp(tab);
        await tab.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
        assert.equal(await tab.textContent('#name'), 'Alice');
        assert.equal(await tab.isVisible('#error'), false);
      }
      assert.equal((await stack.idp.events()).grants.authorization_code, before.grants.authorization_code + 2);
      // The session of the second login serves both tabs.
      await tabs[0].reload();
      await spaReady(tabs[0]);
      await tabs[0].waitForSelector(AUTHENTICATED);
    } finally {
      await fresh.close();
    }
  });

  it('shows the logged-out view when an API call answers 401 (the session ended in another tab)', async () => {
    const fresh = await stack.browser.newContext();
    try {
      const [tab, other] = [await fresh.newPage(), await fresh.newPage()];
      await tab.goto(stack.app);
      await spaReady(tab);
      await tab.click('#login');
      await signInAtIdp(tab);
      await tab.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
      await other.goto(stack.app);
      await spaReady(other);
      const out = await fetchInPage(other, '/logout', { method: 'POST', headers: { 'X-CSRF': '1' } });
      assert.equal(out.status, 200);

      const calls = stack.echo.requests.length;
      // The live event stream may already have shown the logged-out view (the button hidden):
      // the click goes through the DOM so that the API call is made either way.
      await tab.evaluate(() => document.getElementById('call-api').click());
      await tab.waitForSelector(ANONYMOUS, { timeout: 10_000 });
      assert.match(await tab.textContent('#notice'), /session has ended/);
      assert.equal(stack.echo.requests.length, calls, 'nothing reached the upstream');
    } finally {
      await fresh.close();
    }
  });

  it('logs out at the BFF and at the IdP: the next login asks for credentials again', async () => {
    // While the IdP session lives, a new login goes through without the login form.
    const navigations = [];
    page.on('request', (r) => { if (r.isNavigationRequest()) navigations.push(r.url()); });
    await page.goto(`${stack.app}/login?return_to=%2F`);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
    assert.ok(!navigations.some((u) => u.includes('/interaction/')), 'no login form while the IdP session lives');

    const before = await stack.idp.events();
    await page.click('#logout');
    // The IdP's RP-initiated logout page asks for confirmation.
    await page.getByRole('button', { name: 'Yes, sign me out' }).click({ timeout: 15_000 });
    await page.waitForURL((u) => u.origin === stack.app, { timeout: 15_000 });
    await spaReady(page);
    await page.waitForSelector(ANONYMOUS);

    const events = await stack.idp.events();
    assert.equal(events.end_sessions, before.end_sessions + 1, 'the IdP session ended');
    assert.equal(events.revocations, before.revocations + 1, 'the refresh token was revoked');
    assert.equal((await context.cookies(stack.app)).filter((c) => c.name.startsWith('bff')).length, 0,
      'no BFF cookie left');
    const session = await fetchInPage(page, '/session', { headers: { 'X-CSRF': '1' } });
    assert.equal(session.status, 401);
    await snapshot();

    navigations.length = 0;
    await page.click('#login');
    await page.locator('input[name="login"]').waitFor({ timeout: 15_000 });
    assert.ok(navigations.some((u) => u.includes('/interaction/')), 'the IdP asks for credentials');
  });

  it('never lets the page see a token: not in document.cookie, web storage or any response', async () => {
    await recorder.settle();
    const issued = await stack.idp.issuedTokens();
    assert.ok(issued.access_tokens.length >= 3 && issued.refresh_tokens.length >= 3 && issued.id_tokens.length >= 3);
    // The recording really holds what the page got (so an empty finding means something).
    const bodies = recorder.seen.filter((e) => e.body);
    assert.ok(bodies.some((e) => e.url.endsWith('/session') && e.body.includes('"authenticated":true')));
    assert.ok(bodies.some((e) => e.url.includes('/api/echo') && e.body.includes('"scheme": "Bearer"')));
    assert.ok(bodies.some((e) => e.method === 'POST' && e.url.endsWith('/logout') && e.body.includes('id_token_hint=eyJ')),
      'the logout answer was recorded (its id_token_hint is the one token SPEC §1 allows)');

    assert.ok(storageSnapshots.length >= 4);
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app: stack.app, snapshots: storageSnapshots }), []);
  });

  it('runs every flow above under the SPA\'s strict Content-Security-Policy without a violation', () => {
    assert.deepEqual(consoleErrors.filter((e) => /Content.Security.Policy/i.test(e)), []);
  });
});
