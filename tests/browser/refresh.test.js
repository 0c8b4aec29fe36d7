// Access-token expiry (SPEC §6): with a 5 s access-token lifetime at the IdP, the first API
// call after expiry is refreshed by oidc-bff on the way through — one refresh_token grant, a
// new bearer token upstream, the refreshed cookie stored by the browser — and the user sees
// nothing but the answer.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { sleep, startStack } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const TTL = 5;

const bearerOf = (req) => /^Bearer (\S+)$/.exec(req?.authorization ?? '')?.[1];

describe('access-token expiry', () => {
  let stack;
  let context;
  let page;
  let recorder;
  const snapshots = [];

  before(async () => {
    stack = await startStack({ accessTokenTtl: TTL, extraOidc: 'refresh_margin_secs = 1' });
    context = await stack.browser.newContext();
    recorder = recordResponses(context);
    page = await recorder.newPage();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  it('refreshes transparently on the next API call after the access token expired', async () => {
    await page.goto(stack.app);
    await spaReady(page);
    await page.click('#login');
    await signInAtIdp(page);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
    const [firstToken] = (await stack.idp.issuedTokens()).access_tokens;
    const firstExpiry = Number(await page.getAttribute('#expires', 'data-unix'));
    assert.ok(firstExpiry - Date.now() / 1000 <= TTL + 1, `the access token lives ${TTL} s`);

    // Let it expire (bounded: TTL + 3 s at most).
    const wait = (firstExpiry + 1) * 1000 - Date.now();
    assert.ok(wait < (TTL + 3) * 1000);
    await sleep(Math.max(0, wait));
    const before = await stack.idp.events();
    const navigations = [];
    page.on('request', (r) => { if (r.isNavigationRequest()) navigations.push(r.url()); });
    const calls = stack.echo.requests.length;

    const answered = page.waitForResponse((r) => r.url().startsWith(`${stack.app}/api/echo`), { timeout: 10_000 });
    await page.click('#call-api');
    await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });

    const after = await stack.idp.events();
    assert.equal(after.grants.refresh_token, before.grants.refresh_token + 1, 'exactly one refresh');
    assert.equal(after.grants.authorization_code, before.grants.authorization_code, 'no new login');
    assert.deepEqual(navigations, [], 'the page never left');
    const token = bearerOf(stack.echo.requests[calls]);
    assert.ok(token && token !== firstToken, 'the upstream got a new access token');
    assert.equal((await stack.idp.introspect(token)).active, true);
    assert.equal((await stack.idp.introspect(firstToken)).active, false, 'the old one has expired');
    // The page shows the new expiry (from /session, read after the call).
    await page.waitForFunction((t) => Number(document.getElementById('expires').dataset.unix) > t, firstExpiry,
      { timeout: 5000 });
    // The refreshed session reached the browser as Set-Cookie on the proxied answer.
    assert.match(await (await answered).headerValue('set-cookie') ?? '', /(^|\n)bff=/);
    snapshots.push(await pageStorage(page));

    // The browser stored it: the next call uses the new token without another refresh.
    await page.click('#call-api');
    await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });
    assert.equal(stack.echo.requests.length, calls + 2);
    assert.equal(bearerOf(stack.echo.requests[calls + 1]), token);
    assert.equal((await stack.idp.events()).grants.refresh_token, after.grants.refresh_token);
  });

  it('never lets the page see a token, refreshed ones included', async () => {
    await recorder.settle();
    const issued = await stack.idp.issuedTokens();
    assert.ok(issued.access_tokens.length >= 2 && issued.refresh_tokens.length >= 2);
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app: stack.app, snapshots }), []);
  });
});
