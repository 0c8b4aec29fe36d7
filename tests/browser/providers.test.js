// Several IdPs (SPEC §3.7), in Chromium: oidc-bff with `[oidc]` (the provider "default") at one
// test IdP and a `[[providers]]` entry "partners" at another (its own issuer, keys and client).
// The anonymous sample SPA offers one button per provider; each login goes to its own IdP and
// back through the shared /callback (both IdPs send RFC 9207's iss), the page shows which
// provider the session came from, the code is redeemed at that IdP only (the other IdP's token
// endpoint never sees it), and logout ends the session at the IdP it came from. The page never
// sees a token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { startEcho } from '../../examples/echo-api/echo.mjs';
import { fetchInPage, launchChromium, pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { freePort, sleep, startBff, startIdp, within } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const ANONYMOUS = '#anonymous:not([hidden])';
const PARTNERS = { client_id: 'browser-partners', client_secret: 'browser-partners-secret-0123456789' };

describe('several IdPs', () => {
  let echo;
  let idps = {}; // name -> the IdP behind that provider
  let bff;
  let browser;
  let app;
  let page;
  let recorder;
  const navigations = [];
  const snapshots = [];

  before(async () => {
    const port = await freePort();
    app = `http://localhost:${port}`;
    echo = await startEcho();
    const [company, partners] = await Promise.all([
      startIdp({ appOrigin: app }),
      startIdp({
        appOrigin: app,
        idpConfig: {
          envId: 'PARTNERS',
          clients: [{
            ...PARTNERS,
            token_endpoint_auth_method: 'client_secret_basic',
            redirect_uris: [`${app}/callback`],
            post_logout_redirect_uris: [`${app}/`],
          }],
        },
      }),
    ]);
    idps = { default: company, partners };
    assert.notEqual(company.issuer, partners.issuer);
    bff = await startBff({
      port,
      issuer: company.issuer,
      upstream: echo.url,
      // More TOML after the /api route: the second provider. No redirect_uri: it shares
      // /callback with "default", which both IdPs allow by sending iss.
      extraRoutes: () => `
[[providers]]
name = "partners"
issuer = "${partners.issuer}"
client_id = "${PARTNERS.client_id}"
client_secret = "${PARTNERS.client_secret}"
`,
    });
    // /readyz waits for "default" only; the other provider's discovery may still be running.
    await within(15_000, 'the "partners" provider to be ready', (async () => {
      for (;;) {
        const body = await (await fetch(`http://127.0.0.1:${port}/readyz`)).json().catch(() => ({}));
        if (body.providers?.partners === 'ready') return;
        await sleep(100);
      }
    })());
    browser = await launchChromium();
    const context = await browser.newContext();
    recorder = recordResponses(context);
    context.on('request', (r) => { if (r.isNavigationRequest()) navigations.push(r.url()); });
    page = await recorder.newPage();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await bff?.close();
    for (const idp of Object.values(idps)) await idp.stop();
    await echo?.close();
  });

  /** Both IdPs' counters: successful code grants, and code requests their token endpoints got. */
  async function codeCounts() {
    const out = {};
    for (const [name, idp] of Object.entries(idps)) {
      const ev = await idp.events();
      out[name] = { grants: ev.grants.authorization_code, token_requests: ev.token_requests.authorization_code };
    }
    return out;
  }

  async function loginButtons() {
    return page.$$eval('#providers button', (bs) => bs.map((b) => [b.id, b.dataset.provider, b.textContent, !b.hidden]));
  }

  /** Log in with `name`'s button as `user`, and check the session and both IdPs' counters. */
  async function logInWith(name, user) {
    const before = await codeCounts();
    const mark = navigations.length;
    await page.click(`#login-${name}`);
    await signInAtIdp(page, user);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });

    assert.equal(await page.textContent('#provider'), name, 'the page shows the provider used');
    assert.equal(await page.textContent('#sub'), user);
    const claims = JSON.parse(await page.textContent('#claims'));
    assert.equal(claims.iss, idps[name].issuer, 'the ID token came from that IdP');
    assert.equal(await page.textContent('#provider-issuer'), `(${idps[name].issuer})`);

    // The browser went to that IdP only, and came back to the shared /callback with its iss.
    const went = navigations.slice(mark);
    const other = Object.keys(idps).find((n) => n !== name);
    assert.ok(went.some((u) => u.startsWith(`${idps[name].issuer}/`)), JSON.stringify(went));
    assert.ok(!went.some((u) => u.startsWith(`${idps[other].issuer}/`)), JSON.stringify(went));
    const login = went.find((u) => u.startsWith(`${app}/login?`));
    assert.equal(new URL(login).searchParams.get('provider'), name);
    const callback = went.find((u) => u.startsWith(`${app}/callback?`));
    assert.ok(callback, JSON.stringify(went));
    assert.equal(new URL(callback).searchParams.get('iss'), idps[name].issuer);

    // The code was redeemed at that IdP, and the other one's token endpoint never saw a code.
    const after = await codeCounts();
    assert.deepEqual(after[name], { grants: before[name].grants + 1, token_requests: before[name].token_requests + 1 });
    assert.deepEqual(after[other], before[other], `${other}'s IdP was not asked`);
    snapshots.push(await pageStorage(page));
  }

  /** Log out with the page's button; the IdP of `name` (and only it) ends its session. */
  async function logOutFrom(name) {
    const endSessions = async () => Object.fromEntries(
      await Promise.all(Object.entries(idps).map(async ([n, idp]) => [n, (await idp.events()).end_sessions])),
    );
    const before = await endSessions();
    const mark = navigations.length;
    await page.click('#logout');
    await page.getByRole('button', { name: 'Yes, sign me out' }).click({ timeout: 15_000 });
    await page.waitForURL((u) => u.origin === app, { timeout: 15_000 });
    await spaReady(page);
    await page.waitForSelector(ANONYMOUS);
    assert.ok(navigations.slice(mark).some((u) => u.startsWith(`${idps[name].issuer}/signoff`)), 'the logout URL is that IdP\'s');
    const expected = Object.fromEntries(Object.entries(before).map(([n, count]) => [n, count + (n === name ? 1 : 0)]));
    assert.deepEqual(await endSessions(), expected, 'only that IdP\'s session ended');
    snapshots.push(await pageStorage(page));
  }

  it('offers one login button per provider when anonymous', async () => {
    await page.goto(app);
    await spaReady(page);
    await page.waitForSelector(ANONYMOUS);
    const session = await fetchInPage(page, '/session', { headers: { 'X-CSRF': '1' } });
    assert.equal(session.status, 401);
    assert.deepEqual(JSON.parse(session.body), { authenticated: false, providers: ['default', 'partners'] });

    assert.equal(await page.isVisible('#login'), false, 'no single "Log in" button');
    assert.equal(await page.isVisible('#providers'), true);
    assert.deepEqual(await loginButtons(), [
      ['login-default', 'default', 'Log in with default', true],
      ['login-partners', 'partners', 'Log in with partners', true],
    ]);
  });

  it('logs in with the default provider: its IdP issues and redeems the code, the page says "default"', async () => {
    await logInWith('default', 'alice');
    assert.equal(await page.textContent('#name'), 'Alice');
  });

  it('logs out at the default provider\'s IdP and offers both buttons again', async () => {
    await logOutFrom('default');
    assert.deepEqual((await loginButtons()).map(([id]) => id), ['login-default', 'login-partners']);
  });

  it('logs in with partners: the partners\' IdP issues and redeems the code, the page says "partners"', async () => {
    await logInWith('partners', 'bob');
    assert.equal(await page.textContent('#name'), 'Bob');
    // A proxied call works with the partners' session (its own access token).
    const calls = echo.requests.length;
    await page.click('#call-api');
    await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });
    assert.equal(echo.requests.length, calls + 1);
    const bearer = /^Bearer (\S+)$/.exec(echo.requests.at(-1).authorization ?? '');
    assert.ok(bearer, 'the upstream got a bearer token');
    const issued = await idps.partners.issuedTokens();
    assert.ok(issued.access_tokens.includes(bearer[1]), 'the partners\' IdP issued it');
  });

  it('logs out at the partners\' IdP, not the other one', async () => {
    await logOutFrom('partners');
  });

  it('starts a login with bff.startLogin({ provider }) and refuses an unknown provider', async () => {
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      await tab.goto(app);
      await spaReady(tab);
      const unknown = await fetchInPage(tab, '/login/start', {
        method: 'POST',
        headers: { 'X-CSRF': '1', 'Content-Type': 'application/json' },
        body: JSON.stringify({ provider: 'nobody', return_to: '/' }),
      });
      assert.equal(unknown.status, 400);
      assert.equal(JSON.parse(unknown.body).error, 'unknown_provider');

      await tab.evaluate(() => import('/bff.js').then((m) => {
        m.createBff().startLogin({ returnTo: '/orders', provider: 'partners' });
      }));
      await tab.locator('input[name="login"]').waitFor({ timeout: 15_000 });
      assert.ok(tab.url().startsWith(`${idps.partners.issuer}/`), tab.url());
      await signInAtIdp(tab, 'carol');
      await tab.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
      assert.equal(new URL(tab.url()).pathname, '/orders');
      assert.equal(await tab.textContent('#provider'), 'partners');
    } finally {
      await context.close();
    }
  });

  it('never lets the page see a token', async () => {
    await recorder.settle();
    const [a, b] = await Promise.all([idps.default.issuedTokens(), idps.partners.issuedTokens()]);
    const issued = Object.fromEntries(Object.keys(a).map((k) => [k, [...a[k], ...b[k]]]));
    assert.ok(a.access_tokens.length >= 1 && b.access_tokens.length >= 1);
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app, snapshots }), []);
  });
});
