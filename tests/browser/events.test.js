// Session events and WebSockets (SPEC §5 GET /session/events, §6.3), in Chromium: the sample
// SPA follows its session live through bff.js, with one event stream per browser that the tab
// holding the Web Lock relays to the others over a BroadcastChannel. A refresh made by one tab
// updates the expiry another tab shows; the stream moves to another tab when its tab closes; a
// logout in one tab, or at the IdP (back-channel logout, server-side sessions), shows the
// logged-out view in every tab without a reload; and oidc-bff closes each tab's WebSocket to the
// echo API (a `websocket = true` route) with 4401 "session ended", and the upstream side with
// 1001. No page reloads, no tab polls /session, and the stream carries no token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { fetchInPage, signInAtIdp, spaReady } from './lib/browser.js';
import { CLIENT_ID, USER, sleep, startStack, within } from './lib/stack.js';
import { JWT_SHAPE } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const ANONYMOUS = '#anonymous:not([hidden])';
const TTL = 5;

/** The echo API behind a WebSocket route, as config/demo.toml has it. */
const wsRoute = (upstream) => `
[[routes]]
prefix = "/ws"
upstream = "${upstream}"
websocket = true
`;

/** Poll `check` (sync or async) until it returns something truthy; bounded. */
async function until(ms, what, check) {
  return within(ms, what, (async () => {
    for (;;) {
      const value = await check();
      if (value) return value;
      await sleep(50);
    }
  })());
}

/**
 * What a test needs to know about each tab: its /session/events requests, its /session
 * requests, its navigations after load, and any CSP violation on its console.
 */
function watch(page, cspErrors) {
  const seen = { streams: [], sessions: [], navigations: [] };
  page.on('request', (r) => {
    const { pathname } = new URL(r.url());
    if (pathname === '/session/events') seen.streams.push(Date.now());
    if (pathname === '/session') seen.sessions.push(Date.now());
    if (r.isNavigationRequest()) seen.navigations.push(r.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  return seen;
}

async function logIn(page, app) {
  await page.goto(app);
  await spaReady(page);
  await page.click('#login');
  await signInAtIdp(page);
  await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
}

/** Another tab of the same browser, logged in through the shared cookie. */
async function openTab(context, app, cspErrors) {
  const page = await context.newPage();
  const seen = watch(page, cspErrors);
  await page.goto(app);
  await spaReady(page);
  await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
  return { page, seen };
}

/** Open the demo panel's WebSocket and wait for a tick and an echo through oidc-bff. */
async function connectSocket(page, echo) {
  const before = echo.requests.length;
  await page.click('#ws-connect');
  await page.waitForSelector('#ws-status:is([data-state="open"], [data-state="closed"])', { timeout: 10_000 });
  const upgrades = echo.requests.slice(before).filter((r) => r.websocket).map((r) => r.status);
  assert.equal(await page.getAttribute('#ws-status', 'data-state'), 'open',
    `the panel says "${await page.textContent('#ws-status')}"; the echo API saw upgrades ${JSON.stringify(upgrades)}`);
  await page.waitForSelector('#ws-tick[data-tick]', { timeout: 5000 });
  const message = `hello through oidc-bff ${Date.now()}`;
  await page.fill('#ws-message', message);
  await page.click('#ws-send');
  await page.waitForFunction((m) => document.getElementById('ws-echo').textContent === m, message, { timeout: 5000 });
  // The upgrade reached the echo with the access token and without the BFF's cookie.
  const upgrade = echo.requests.slice(before).find((r) => r.websocket);
  assert.ok(upgrade, 'the upgrade reached the echo API');
  assert.deepEqual([upgrade.method, upgrade.path, upgrade.status], ['GET', '/ws/tick', 101]);
  assert.match(upgrade.authorization ?? '', /^Bearer \S+$/, 'the upstream upgrade carries the access token');
  assert.ok(!/(^|;\s*)bff[=.]/.test(upgrade.cookie ?? ''), 'the session cookie does not reach the upstream');
}

/** The panel shows that oidc-bff closed the socket because the session ended. */
async function closedBySessionEnd(page) {
  await page.waitForSelector('#ws-status[data-code="4401"]', { timeout: 10_000 });
  assert.equal(await page.textContent('#ws-status'), 'closed 4401 session ended');
  assert.equal(await page.getAttribute('#ws-status', 'data-reason'), 'session ended');
}

/** The echo API saw its side closed with 1001 (going away), as SPEC §6.3 says. */
async function upstreamClosed(echo, from) {
  const closes = await until(5000, 'the upstream WebSocket to be closed', () => {
    const found = echo.wsCloses.slice(from).filter((c) => c.path === '/ws/tick');
    return found.length ? found : null;
  });
  assert.deepEqual(closes.map((c) => c.code), [1001]);
  assert.equal(echo.wsOpen, 0);
}

describe('session events, cookie mode', () => {
  let stack;
  let context;
  const cspErrors = [];
  const tabs = {};

  before(async () => {
    stack = await startStack({ accessTokenTtl: TTL, extraOidc: 'refresh_margin_secs = 1', extraRoutes: wsRoute });
    context = await stack.browser.newContext();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  it('opens one event stream for two tabs: the first tab leads, the second follows', async () => {
    const page = await context.newPage();
    tabs.a = { page, seen: watch(page, cspErrors) };
    await logIn(page, stack.app);
    await until(10_000, 'the first tab to open the event stream', () => tabs.a.seen.streams.length);
    tabs.b = await openTab(context, stack.app, cspErrors);
    // Long enough for a second stream to show up if the second tab opened one.
    await sleep(1500);
    assert.equal(tabs.b.seen.streams.length, 0, 'the second tab uses the first tab\'s stream');
    assert.equal(tabs.a.seen.streams.length, 1);
  });

  it('serves the stream as text/event-stream, no-store, the session first and never a token', async () => {
    // A second stream read by hand (the SPA's own is held by bff.js): at most 8 per session.
    const read = await tabs.b.page.evaluate(async () => {
      const ctl = new AbortController();
      const res = await fetch('/session/events', { headers: { 'X-CSRF': '1' }, signal: ctl.signal });
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = '';
      const deadline = Date.now() + 5000;
      while (!/event: session\r?\ndata: .*\r?\n\r?\n/.test(text) && Date.now() < deadline) {
        const chunk = await Promise.race([
          reader.read(),
          new Promise((resolve) => { setTimeout(() => resolve({ done: true }), deadline - Date.now()); }),
        ]);
        if (chunk.done) break;
        text += decoder.decode(chunk.value, { stream: true });
      }
      ctl.abort();
      return { status: res.status, type: res.headers.get('content-type'), cache: res.headers.get('cache-control'), text };
    });
    assert.equal(read.status, 200);
    assert.match(read.type ?? '', /^text\/event-stream/);
    assert.match(read.cache ?? '', /no-store/);
    const first = /^event: session\r?\ndata: (.*)$/m.exec(read.text);
    assert.ok(first, `a session event first: ${JSON.stringify(read.text)}`);
    const session = JSON.parse(first[1]);
    assert.equal(session.authenticated, true);
    assert.equal(session.sub, USER);
    assert.equal(typeof session.expires_at, 'number');
    const issued = await stack.idp.issuedTokens();
    for (const token of [...issued.access_tokens, ...issued.refresh_tokens, ...issued.id_tokens]) {
      assert.ok(!read.text.includes(token), 'no token in the event stream');
    }
    assert.deepEqual(read.text.match(JWT_SHAPE) ?? [], []);

    const noCsrf = await fetchInPage(tabs.b.page, '/session/events');
    assert.equal(noCsrf.status, 403);
    assert.equal(JSON.parse(noCsrf.body).error, 'csrf');
    const anonymous = await stack.browser.newContext();
    try {
      const page = await anonymous.newPage();
      await page.goto(stack.app);
      await spaReady(page);
      const res = await fetchInPage(page, '/session/events', { headers: { 'X-CSRF': '1' } });
      assert.equal(res.status, 401);
      assert.deepEqual(JSON.parse(res.body), { authenticated: false });
    } finally {
      await anonymous.close();
    }
  });

  it('shows in the second tab the expiry of a refresh made by the first, without asking /session', async () => {
    const { page: b, seen } = tabs.b;
    const firstExpiry = Number(await b.getAttribute('#expires', 'data-unix'));
    assert.ok(firstExpiry > 0);
    // Let the access token expire (bounded: TTL + 3 s at most), so the next call refreshes it.
    const wait = (firstExpiry + 1) * 1000 - Date.now();
    assert.ok(wait < (TTL + 3) * 1000);
    await sleep(Math.max(0, wait));
    const before = await stack.idp.events();
    const sessionsBefore = seen.sessions.length;
    const navigationsBefore = seen.navigations.length;

    await tabs.a.page.click('#call-api');
    await tabs.a.page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });
    assert.ok((await stack.idp.events()).grants.refresh_token > before.grants.refresh_token, 'the call refreshed the tokens');

    await b.waitForFunction((t) => Number(document.getElementById('expires').dataset.unix) > t, firstExpiry, { timeout: 5000 });
    const shown = Number(await b.getAttribute('#expires', 'data-unix'));
    assert.equal(shown, Number(await tabs.a.page.getAttribute('#expires', 'data-unix')), 'both tabs show the same expiry');
    assert.ok(shown > Date.now() / 1000, 'a new, unexpired access token');
    assert.equal(seen.sessions.length, sessionsBefore, 'the second tab learnt it from the event, not from /session');
    assert.equal(seen.navigations.length, navigationsBefore, 'no reload');
  });

  it('moves the stream to the second tab when the first one closes', async () => {
    // (The previous test's requests by hand count too.)
    const before = tabs.b.seen.streams.length;
    await tabs.a.page.close();
    await until(10_000, 'the second tab to open the event stream', () => tabs.b.seen.streams.length > before);
    await sleep(500);
    assert.equal(tabs.b.seen.streams.length, before + 1);
  });

  it('logout in one tab: the other shows the logged-out view at once, and its WebSocket is closed with 4401', async () => {
    const b = tabs.b.page;
    tabs.c = await openTab(context, stack.app, cspErrors);
    await sleep(500);
    assert.equal(tabs.c.seen.streams.length, 0, 'the new tab follows the second tab\'s stream');
    await connectSocket(b, stack.echo);
    assert.equal(stack.echo.wsOpen, 1);
    const closesBefore = stack.echo.wsCloses.length;
    const sessionsBefore = tabs.b.seen.sessions.length;
    const navigationsBefore = tabs.b.seen.navigations.length;
    // Every /session request of this tab from now on, with what the tab knew when it sent it:
    // the reason of the end it had heard of (body[data-ended]), or null.
    await b.evaluate(() => {
      delete document.body.dataset.ended;
      window.sessionFetches = [];
      const original = window.fetch;
      window.fetch = function (input, init) {
        const url = new URL(String(input?.url ?? input), location.href);
        if (url.pathname === '/session') window.sessionFetches.push(document.body.dataset.ended ?? null);
        return original.call(this, input, init);
      };
    });

    await tabs.c.page.click('#logout');
    // The tab that logged out goes on to the IdP's logout page; the other stays where it is.
    await tabs.c.page.getByRole('button', { name: 'Yes, sign me out' }).waitFor({ timeout: 15_000 });

    await b.waitForSelector(ANONYMOUS, { timeout: 10_000 });
    assert.equal(await b.getAttribute('body', 'data-ended'), 'logout');
    assert.match(await b.textContent('#notice'), /session has ended/);
    await closedBySessionEnd(b);
    assert.equal(await b.isVisible('#live'), true, 'the panel stays to show how the socket closed');
    await upstreamClosed(stack.echo, closesBefore);
    assert.equal(tabs.b.seen.navigations.length, navigationsBefore, 'no reload');
    // It learnt of the end from the event, not by asking /session: every /session request it
    // made was sent after it had heard of the end — the logged-out view asking which IdPs to
    // offer. (Under load a second such request has been seen, also after the end; a tab polling
    // /session to find out would send one before.)
    const fetches = await b.evaluate(() => window.sessionFetches);
    assert.ok(fetches.length >= 1 && fetches.length <= 2, `/session requests after the logout: ${JSON.stringify(fetches)}`);
    assert.ok(fetches.every((ended) => ended === 'logout'), `a /session request before the end was known: ${JSON.stringify(fetches)}`);
    assert.ok(tabs.b.seen.sessions.length <= sessionsBefore + 2);
    const session = await fetchInPage(b, '/session', { headers: { 'X-CSRF': '1' } });
    assert.equal(session.status, 401);
  });

  it('runs under the SPA\'s Content-Security-Policy (ws: included) without a violation', () => {
    assert.deepEqual(cspErrors, []);
  });
});

describe('session events, back-channel logout with server-side sessions', () => {
  let stack;
  let context;
  const cspErrors = [];

  before(async () => {
    stack = await startStack({
      backchannelLogout: true,
      extraSession: (dir) => `store = "sqlite"\nurl = "sqlite://${dir}/sessions.db?mode=rwc"`,
      extraRoutes: wsRoute,
    });
    context = await stack.browser.newContext();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  it('a logout at the IdP ends the session in every tab and closes their WebSockets with 4401', async () => {
    const page = await context.newPage();
    const a = { page, seen: watch(page, cspErrors) };
    await logIn(page, stack.app);
    await until(10_000, 'the first tab to open the event stream', () => a.seen.streams.length);
    const b = await openTab(context, stack.app, cspErrors);
    await connectSocket(a.page, stack.echo);
    await connectSocket(b.page, stack.echo);
    assert.equal(stack.echo.wsOpen, 2);
    assert.deepEqual([a.seen.streams.length, b.seen.streams.length], [1, 0], 'one stream for both tabs');
    const closesBefore = stack.echo.wsCloses.length;
    const navigations = [a.seen.navigations.length, b.seen.navigations.length];
    const before = await stack.idp.events();

    // RP-initiated logout at the IdP, in a third tab (the IdP session's cookie is this
    // browser's): the IdP ends its session and POSTs a logout token to oidc-bff.
    const idpTab = await context.newPage();
    await idpTab.goto(`${stack.idp.issuer}/signoff?client_id=${CLIENT_ID}`);
    await idpTab.getByRole('button', { name: 'Yes, sign me out' }).click({ timeout: 15_000 });
    const delivery = await until(10_000, 'the IdP to send the logout token',
      () => /back-channel logout (delivered to|to) browser-spa[^\n]*/.exec(stack.idp.log())?.[0]);
    assert.match(delivery, /delivered/, `oidc-bff accepted the logout token:\n${stack.idp.log()}\n${stack.bff.log()}`);
    assert.equal((await stack.idp.events()).end_sessions, before.end_sessions + 1);

    for (const tab of [a, b]) {
      await tab.page.waitForSelector(ANONYMOUS, { timeout: 10_000 });
      assert.equal(await tab.page.getAttribute('body', 'data-ended'), 'backchannel');
      assert.match(await tab.page.textContent('#notice'), /session has ended/);
      await closedBySessionEnd(tab.page);
    }
    const closes = await until(5000, 'both upstream WebSockets to be closed', () => {
      const found = stack.echo.wsCloses.slice(closesBefore);
      return found.length === 2 ? found : null;
    });
    assert.deepEqual(closes.map((c) => c.code), [1001, 1001]);
    assert.equal(stack.echo.wsOpen, 0);
    assert.deepEqual([a.seen.navigations.length, b.seen.navigations.length], navigations, 'no reload');
    const session = await fetchInPage(a.page, '/session', { headers: { 'X-CSRF': '1' } });
    assert.equal(session.status, 401, 'the server-side session is gone');
  });

  it('runs under the SPA\'s Content-Security-Policy without a violation', () => {
    assert.deepEqual(cspErrors, []);
  });
});
