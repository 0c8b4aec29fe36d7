// A page on another site (http://127.0.0.1:PORT, cross-site to the app on http://localhost)
// in the same browser as a logged-in user: it cannot read /session, cannot log the user out
// with POST /logout, cannot make a proxied POST with the user's cookie, and a GET /logout
// without the session's sid changes nothing (SPEC §5). Every verdict is an observed fact —
// what the hostile script could read, what the upstream received, whether the user's own tab
// still has its session — and each attack has a same-site control showing it would count.
//
// No page.route / context.route here: while one is active Playwright answers CORS preflights
// itself, permissively (shared/notes/testing.md).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { fetchInPage, signInAtIdp, spaReady } from './lib/browser.js';
import { startHostileSite, startStack } from './lib/stack.js';

const AUTHENTICATED = '#authenticated:not([hidden])';
const CSRF = { 'X-CSRF': '1' };

describe('a page on another site', () => {
  let stack;
  let hostile;
  let context;
  let victim; // the user's tab of the app
  let attacker; // a tab of the hostile site, same browser profile

  const sessionStatus = async () => (await fetchInPage(victim, '/session', { headers: CSRF })).status;
  const postsUpstream = () => stack.echo.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD');

  /** Submit a real HTML form from the hostile page (a top-level cross-site POST navigation). */
  async function formPost(action) {
    const [response] = await Promise.all([
      attacker.waitForNavigation({ timeout: 10_000 }),
      attacker.evaluate((url) => {
        const form = document.createElement('form');
        form.method = 'POST';
        form.action = url;
        form.enctype = 'text/plain';
        const input = document.createElement('input');
        input.name = '{"a":"';
        input.value = '1"}';
        form.append(input);
        document.body.append(form);
        form.submit();
      }, action),
    ]);
    const answer = { status: response.status(), body: await response.text() };
    await attacker.goto(hostile.origin);
    return answer;
  }

  /** Navigate the given tab to `url`; the status of the answer. */
  async function visit(tab, url, back) {
    const response = await tab.goto(url);
    const status = response.status();
    if (back) await tab.goto(back);
    return status;
  }

  before(async () => {
    stack = await startStack();
    hostile = await startHostileSite();
    context = await stack.browser.newContext();
    victim = await context.newPage();
    await victim.goto(stack.app);
    await spaReady(victim);
    await victim.click('#login');
    await signInAtIdp(victim);
    await victim.waitForSelector(AUTHENTICATED, { timeout: 15_000 });
    attacker = await context.newPage();
    await attacker.goto(hostile.origin);
  });

  after(async () => {
    if (hostile) await hostile.close();
    if (stack) await stack.close();
  });

  it('cannot read /session', async () => {
    const url = `${stack.app}/session`;
    const withCsrf = await fetchInPage(attacker, url, { credentials: 'include', headers: CSRF });
    assert.equal(withCsrf.ok, false, `preflighted read must fail: ${JSON.stringify(withCsrf)}`);
    const simple = await fetchInPage(attacker, url, { credentials: 'include' });
    assert.equal(simple.ok, false, `CORS read must fail: ${JSON.stringify(simple)}`);
    const opaque = await fetchInPage(attacker, url, { credentials: 'include', mode: 'no-cors' });
    assert.equal(opaque.type, 'opaque');
    assert.equal(opaque.body, '', 'nothing readable');
    // Control: the app's own page reads it.
    const own = await fetchInPage(victim, '/session', { headers: CSRF });
    assert.equal(own.status, 200);
    assert.match(own.body, /"authenticated":true/);
  });

  it('cannot log the user out with POST /logout', async () => {
    const before = await stack.idp.events();
    const url = `${stack.app}/logout`;
    const preflighted = await fetchInPage(attacker, url, { method: 'POST', credentials: 'include', headers: CSRF });
    assert.equal(preflighted.ok, false, 'the preflight fails, the POST is never sent');
    const simple = await fetchInPage(attacker, url, { method: 'POST', credentials: 'include', mode: 'no-cors' });
    assert.equal(simple.type, 'opaque');
    const form = await formPost(url);
    assert.equal(form.status, 403, `a cross-site form POST is refused: ${form.body}`);
    assert.match(form.body, /"error":"csrf"/);

    assert.equal(await sessionStatus(), 200, 'the user is still logged in');
    const after = await stack.idp.events();
    assert.equal(after.revocations, before.revocations, 'no refresh token was revoked');
    assert.equal(after.end_sessions, before.end_sessions);
  });

  it('cannot make a proxied POST with the user\'s cookie', async () => {
    const url = `${stack.app}/api/echo`;
    const preflighted = await fetchInPage(attacker, url, {
      method: 'POST', credentials: 'include', headers: { ...CSRF, 'Content-Type': 'application/json' }, body: '{"pay":1}',
    });
    assert.equal(preflighted.ok, false, 'the preflight fails, the POST is never sent');
    const simple = await fetchInPage(attacker, url, {
      method: 'POST', credentials: 'include', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: 'pay=1',
    });
    assert.equal(simple.type, 'opaque');
    const form = await formPost(url);
    assert.equal(form.status, 403, `a cross-site form POST is refused: ${form.body}`);
    assert.match(form.body, /"error":"csrf"/);
    assert.deepEqual(postsUpstream(), [], 'the upstream never received a POST');

    // Control: the same POST from the app's own page reaches the upstream with the token.
    const own = await fetchInPage(victim, '/api/echo', {
      method: 'POST', headers: { ...CSRF, 'Content-Type': 'application/json' }, body: '{"pay":1}',
    });
    assert.equal(own.status, 200);
    assert.equal(postsUpstream().length, 1);
    assert.match(postsUpstream()[0].authorization ?? '', /^Bearer \S+$/);
  });

  it('does not log the user out with GET /logout without the session\'s sid', async () => {
    const before = await stack.idp.events();
    // Cross-site navigations: no sid, a guessed sid.
    assert.equal(await visit(attacker, `${stack.app}/logout`, hostile.origin), 400);
    assert.equal(await visit(attacker, `${stack.app}/logout?sid=AAAAAAAAAAAAAAAAAAAAAA`, hostile.origin), 400);
    // Same-site navigation (the cookie is sent) with a wrong sid.
    const own = await victim.context().newPage();
    assert.equal(await visit(own, `${stack.app}/logout?sid=AAAAAAAAAAAAAAAAAAAAAA`), 400);
    assert.match(await own.content(), /invalid_logout_request/);
    assert.equal(await sessionStatus(), 200, 'the user is still logged in');
    assert.equal((await stack.idp.events()).revocations, before.revocations);

    // Control: the session's own logout link (bff_logout_url from /session) does log out.
    const { bff_logout_url: link } = JSON.parse((await fetchInPage(victim, '/session', { headers: CSRF })).body);
    const response = await own.goto(`${stack.app}${link}`);
    assert.ok(response.url().startsWith(stack.idp.issuer), 'sent on to the IdP logout page');
    assert.equal(await sessionStatus(), 401, 'logged out');
    assert.equal((await stack.idp.events()).revocations, before.revocations + 1);
    await own.close();
  });
});
