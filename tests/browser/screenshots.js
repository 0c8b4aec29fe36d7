// Regenerates the README's screenshots of the sample SPA, logged out and logged in (after an
// API call), with the same real stack as the tests: `scripts/browser-test.sh --screenshots`.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { signInAtIdp, spaReady } from './lib/browser.js';
import { ROOT, startStack } from './lib/stack.js';

const out = path.join(ROOT, 'docs/screenshots');
fs.mkdirSync(out, { recursive: true });

const stack = await startStack();
try {
  const context = await stack.browser.newContext({ viewport: { width: 900, height: 380 }, locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(stack.app);
  await spaReady(page);
  await page.waitForSelector('#anonymous:not([hidden])');
  await page.screenshot({ path: path.join(out, 'spa-logged-out.png'), fullPage: true });

  await page.click('#login');
  await signInAtIdp(page);
  await page.waitForSelector('#authenticated:not([hidden])', { timeout: 15_000 });
  await page.click('#call-api');
  await page.waitForSelector('#api-result[data-status="200"]', { timeout: 10_000 });
  await page.screenshot({ path: path.join(out, 'spa-logged-in.png'), fullPage: true });
  console.log(`wrote ${path.relative(ROOT, out)}/spa-logged-out.png and spa-logged-in.png`);
} finally {
  await stack.close();
}
