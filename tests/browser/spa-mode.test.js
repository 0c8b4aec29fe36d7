// SPA mode (SPEC §3.2): oidc.redirect_uri is a page of the SPA (/signed-in); the IdP
// redirects the browser there and the page posts its URL to POST /login/end. Also the
// helper's startLogin (POST /login/start), in Chromium.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { USER, startStack } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';

describe('SPA mode', () => {
  let stack;
  let context;
  let page;
  let recorder;
  const requests = [];
  const snapshots = [];

  before(async () => {
    stack = await startStack({ spaMode: true });
    context = await stack.browser.newContext();
    recorder = recordResponses(context);
    context.on('request', (r) => requests.push({ method: r.method(), url: r.url() }));
    page = await recorder.newPage();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  it('logs in: the IdP returns to the SPA page, which completes with POST /login/end', async () => {
    await page.goto(stack.app);
    await spaReady(page);
    await page.click('#login');
    const ended = page.waitForResponse((r) => r.url() === `${stack.app}/login/end`, { timeout: 20_000 });
    await signInAtIdp(page);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });

    assert.equal(await page.textContent('#name'), 'Alice');
    assert.equal(await page.textContent('#sub'), USER);
    assert.ok(requests.some((r) => r.method === 'GET' && r.url.startsWith(`${stack.app}/signed-in?code=`)),
      'the IdP redirected to the SPA page');
    assert.ok(requests.some((r) => r.method === 'POST' && r.url === `${stack.app}/login/end`));
    assert.ok(!requests.some((r) => new URL(r.url).pathname === '/callback'), 'the BFF callback is not used');
    // The code left the address bar: the page is at return_to.
    assert.equal(page.url(), `${stack.app}/`);
    const end = await ended;
    assert.equal(end.status(), 200);
    assert.equal((await end.json()).return_to, '/');
    assert.match(await end.headerValue('set-cookie') ?? '', /(^|\n)bff=/, 'the session cookie comes with /login/end');
    snapshots.push(await pageStorage(page));
  });

  it('calls the proxied API with the SPA-mode session', async () => {
    const calls = stack.echo.requests.length;
    await page.click('#call-api');
    await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });
    assert.equal(stack.echo.requests.length, calls + 1);
    const bearer = /^Bearer (\S+)$/.exec(stack.echo.requests.at(-1).authorization ?? '');
    assert.ok(bearer);
    assert.equal((await stack.idp.introspect(bearer[1])).active, true);
    snapshots.push(await pageStorage(page));
  });

  it('starts a login with bff.startLogin (POST /login/start) and lands on its return_to', async () => {
    const fresh = await stack.browser.newContext();
    const freshRequests = [];
    fresh.on('request', (r) => freshRequests.push({ method: r.method(), url: r.url() }));
    try {
      const tab = await fresh.newPage();
      await tab.goto(`${stack.app}/orders?page=2`);
      await spaReady(tab);
      // What an SPA that navigates itself does: the helper's startLogin, from the page.
      await tab.evaluate(() => import('/bff.js').then((m) => { m.createBff().startLogin(); }));
      await signInAtIdp(tab);
      await tab.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
      assert.equal(tab.url(), `${stack.app}/orders?page=2`);
      assert.ok(freshRequests.some((r) => r.method === 'POST' && r.url === `${stack.app}/login/start`));
      assert.ok(freshRequests.some((r) => r.method === 'POST' && r.url === `${stack.app}/login/end`));
    } finally {
      await fresh.close();
    }
  });

  it('shows a callback URL this browser did not start as an error, without calling the IdP', async () => {
    const fresh = await stack.browser.newContext();
    try {
      const tab = await fresh.newPage();
      const before = await stack.idp.events();
      // A code/state pair this browser never started: /login/end refuses it (invalid_state).
      await tab.goto(`${stack.app}/signed-in?code=forged&state=forged&iss=${encodeURIComponent(stack.idp.issuer)}`);
      await spaReady(tab);
      await tab.waitForSelector('#error:not([hidden])');
      assert.match(await tab.textContent('#error'), /invalid_state/);
      assert.equal(await tab.isVisible('#anonymous'), true);
      assert.equal(new URL(tab.url()).search, '', 'the parameters left the address bar');
      assert.deepEqual((await stack.idp.events()).grants, before.grants, 'the IdP was not called');
    } finally {
      await fresh.close();
    }
  });

  it('never lets the page see a token', async () => {
    await recorder.settle();
    const issued = await stack.idp.issuedTokens();
    assert.ok(issued.access_tokens.length >= 1);
    assert.ok(recorder.seen.some((e) => e.url === `${stack.app}/login/end` && e.body?.includes('"authenticated":true')));
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app: stack.app, snapshots }), []);
  });
});
