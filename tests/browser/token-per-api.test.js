// A token per API (SPEC §6.2), in Chromium: the sample SPA calls two APIs through oidc-bff; the
// login's token is bound to one resource (RFC 8707, `[oidc] resource`), the /payments route
// gets a token exchanged for another (RFC 8693). The echo API reports each token's audience;
// the page never sees a token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { pageStorage, recordResponses, signInAtIdp, spaReady } from './lib/browser.js';
import { startStack } from './lib/stack.js';
import { tokenLeaks } from './lib/tokens.js';

const API = 'https://api.example.test/';
const PAYMENTS = 'https://payments.example.test/';
const AUTHENTICATED = '#authenticated:not([hidden])';

describe('one token per API', () => {
  let stack;
  let page;
  let recorder;

  before(async () => {
    stack = await startStack({
      extraOidc: `resource = ["${API}"]\nscopes = ["openid", "profile", "email", "offline_access", "read", "write"]`,
      extraRoutes: (upstream) => `
[[routes]]
prefix = "/payments"
upstream = "${upstream}"
token = "exchange"
resource = "${PAYMENTS}"
scopes = ["read"]
`,
    });
    const context = await stack.browser.newContext();
    recorder = recordResponses(context);
    page = await recorder.newPage();
  });

  after(async () => {
    if (stack) await stack.close();
  });

  async function call(button, path) {
    await page.click(button);
    await page.waitForFunction(
      (p) => document.querySelector('#api-result')?.dataset.status === '200'
        && document.querySelector('#api-result').textContent.includes(`"path": "${p}"`),
      path,
      { timeout: 10_000 },
    );
    return JSON.parse((await page.textContent('#api-result')).replace(/^HTTP \d+\n/, ''));
  }

  it('sends each API a token with its own audience', async () => {
    await page.goto(stack.app);
    await spaReady(page);
    await page.click('#login');
    await signInAtIdp(page);
    await page.waitForSelector(AUTHENTICATED, { timeout: 15_000 });

    const api = await call('#call-api', '/api/echo');
    const payments = await call('#call-payments', '/payments/echo');
    assert.equal(api.authorization.audience, API, JSON.stringify(api));
    assert.equal(payments.authorization.audience, PAYMENTS, JSON.stringify(payments));
    assert.equal(payments.authorization.scope, 'read');
    assert.notEqual(api.authorization.token_sha256, payments.authorization.token_sha256);

    const [a, p] = stack.echo.requests.slice(-2).map((r) => r.authorization);
    assert.notEqual(a, p, 'two tokens reached the two APIs');
    assert.equal((await stack.idp.events()).grants.token_exchange, 1);
    const snapshots = [await pageStorage(page)];
    await recorder.settle();
    const issued = await stack.idp.issuedTokens();
    assert.equal(issued.access_tokens.length, 2, 'the login token and the exchanged one');
    assert.deepEqual(tokenLeaks({ seen: recorder.seen, issued, app: stack.app, snapshots }), [], 'no token reached the page');
  });
});
