// Chromium (Debian's /usr/bin/chromium, never a downloaded build) driven by playwright-core,
// and what the tests do with its pages: record responses, sign in at the IdP, read the page's
// storage, fetch from inside a page.
import * as fs from 'node:fs';

import { chromium } from 'playwright-core';

import { USER, within } from './util.js';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (Debian package: chromium)`);
  return within(30_000, 'Chromium to start', chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage', // containers often have a tiny /dev/shm
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Nothing but loopback: pages that reach for web fonts get NXDOMAIN at once.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
    ],
  }));
}

/**
 * Record every response the pages of `context` receive — URL, method, status, headers and
 * body — to prove that no token ever reached them. The bodies are taken through the DevTools
 * Fetch domain at the response stage, before the page gets them: reading them afterwards
 * (Playwright's response.body()) loses any response whose page navigates away at once, such
 * as POST /logout's. Responses pass on unchanged; each appears twice in `seen`, once with its
 * body and once with its complete headers. Event streams are recorded by their headers only
 * (their response is not intercepted: it ends only with the session). Create pages with the
 * returned `newPage()`
 * so that recording starts before their first request. Not for CORS tests: with
 * interception on, preflights take another path through Chromium.
 */
export function recordResponses(context) {
  const seen = [];
  const pending = new Set();
  async function attach(page) {
    const cdp = await context.newCDPSession(page);
    cdp.on('Fetch.requestPaused', (ev) => {
      // Paused at the request stage (no response yet): ask to see its response too — except
      // for an event stream (GET /session/events), whose response never completes while the
      // session lives. Chromium can crash when a paused, still-streaming response is cancelled
      // by a reload; such a response is left alone, and recorded by its headers only.
      if (ev.responseStatusCode === undefined && ev.responseErrorReason === undefined) {
        const stream = new URL(ev.request.url).pathname.endsWith('/session/events');
        cdp.send('Fetch.continueRequest', { requestId: ev.requestId, interceptResponse: !stream }).catch(() => {});
        return;
      }
      const job = (async () => {
        const status = ev.responseStatusCode ?? 0;
        const headers = {};
        for (const { name, value } of ev.responseHeaders ?? []) {
          const k = name.toLowerCase();
          headers[k] = k in headers ? `${headers[k]}\n${value}` : value;
        }
        let body = null;
        if (status < 300 || status >= 400) {
          try {
            const r = await cdp.send('Fetch.getResponseBody', { requestId: ev.requestId });
            body = r.base64Encoded ? Buffer.from(r.body, 'base64').toString('utf8') : r.body;
          } catch { /* no body (HEAD, 204) */ }
        }
        seen.push({ url: ev.request.url, method: ev.request.method, status, headers, body });
        await cdp.send('Fetch.continueRequest', { requestId: ev.requestId }).catch(() => {});
      })();
      pending.add(job);
      job.finally(() => pending.delete(job));
    });
    await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*', requestStage: 'Request' }] });
  }
  // The Fetch domain leaves Set-Cookie out of its headers: take every response's full
  // headers from Playwright too (they survive navigation; bodies do not).
  context.on('response', (response) => {
    const job = response.allHeaders().then((headers) => {
      seen.push({ url: response.url(), method: response.request().method(), status: response.status(), headers, body: null });
    }, () => {});
    pending.add(job);
    job.finally(() => pending.delete(job));
  });
  return {
    seen,
    async newPage() {
      const page = await context.newPage();
      await attach(page);
      return page;
    },
    /** Wait (bounded) until every response seen so far is recorded. */
    settle: () => within(10_000, 'response bodies', Promise.allSettled([...pending])),
  };
}

/** Sign in at the IdP's login page (any user name is an account there). */
export async function signInAtIdp(page, user = USER) {
  const input = page.locator('input[name="login"]');
  await input.waitFor({ timeout: 15_000 });
  await input.fill(user);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The sample SPA has finished its start-up (session read, or login completed). */
export async function spaReady(page) {
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
}

/** What the app's page can read of its own storage: document.cookie and web storage. */
export function pageStorage(page) {
  return page.evaluate(() => {
    const dump = (s) => Object.fromEntries(Array.from({ length: s.length }, (_, i) => [s.key(i), s.getItem(s.key(i))]));
    return { cookie: document.cookie, local: dump(localStorage), session: dump(sessionStorage) };
  });
}

/** fetch() from inside `page`, returning what the page's own script would see. */
export function fetchInPage(page, url, init = {}) {
  return page.evaluate(async ([u, i]) => {
    try {
      const res = await fetch(u, i);
      let body = null;
      try { body = await res.text(); } catch { /* opaque */ }
      return { ok: true, status: res.status, type: res.type, body };
    } catch (err) {
      return { ok: false, error: String(err) };
    }
  }, [url, init]);
}
