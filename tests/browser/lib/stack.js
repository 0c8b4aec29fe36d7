// The whole stack of a browser test, all real and all on loopback: the test IdP
// (tests/idp/server.js, oidc-provider), the oidc-bff debug binary serving the sample SPA
// (examples/spa), the upstream echo API (examples/echo-api), a hostile page on another site,
// and Debian's Chromium driven by playwright-core. Every process started here is killed when
// the test process exits, whatever the outcome; every wait is bounded.
//
// Sites: the app is http://localhost:PORT (oidc-bff listens on 127.0.0.1); the IdP and the
// hostile page are on http://127.0.0.1:OTHER_PORTS. Ports differ but hosts decide the site, so
// the IdP and the hostile page are cross-site to the app, as in production, and SameSite
// rules really apply. Chromium and what tests do with pages: browser.js.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startEcho } from '../../../examples/echo-api/echo.mjs';
import { launchChromium } from './browser.js';
import { within, sleep } from './util.js';

export { USER, sleep, within } from './util.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BFF_BIN = process.env.OIDC_BFF_BIN || path.join(ROOT, 'target/debug/oidc-bff');
export const CLIENT_ID = 'browser-spa';
export const CLIENT_SECRET = 'browser-test-secret-0123456789';

const children = new Set();
function killAll() {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'oidc-bff-browser-'));
}

/**
 * The real OpenID Provider with one confidential client for a BFF at `appOrigin`.
 * `idpConfig`: more IDP_CONFIG fields (tests/idp/README.md), e.g. `{ requirePar: true }`.
 * `backchannelLogout`: the client gets a `backchannel_logout_uri` at the BFF, so ending the
 * IdP session POSTs a logout token to it (and ID tokens carry `sid`).
 */
export async function startIdp({ appOrigin, accessTokenTtl, idpConfig = {}, backchannelLogout = false } = {}) {
  const dir = path.join(ROOT, 'tests/idp');
  if (!fs.existsSync(path.join(dir, 'node_modules/oidc-provider'))) {
    throw new Error('tests/idp/node_modules is missing: run `npm ci --prefix tests/idp` (scripts/test.sh does)');
  }
  const config = {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [`${appOrigin}/callback`, `${appOrigin}/signed-in`],
      post_logout_redirect_uris: [`${appOrigin}/`],
      // 127.0.0.1, not the app's localhost: oidc-bff listens on 127.0.0.1 only, and Node's
      // fetch in the IdP may try ::1 for localhost first.
      ...(backchannelLogout ? { backchannel_logout_uri: `http://127.0.0.1:${new URL(appOrigin).port}/backchannel-logout` } : {}),
    }],
    signingAlgs: ['ES256'], // fastest start-up
    ...(accessTokenTtl ? { accessTokenTtl } : {}),
    ...idpConfig,
  };
  const child = spawn(process.execPath, [path.join(dir, 'server.js')], {
    env: { ...process.env, IDP_CONFIG: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'], // stdin stays open: the IdP exits when it closes
  });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  const ready = await within(30_000, 'the IdP ready line', new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`the IdP exited (${code}) before it was ready:\n${stderr}`)));
  }));
  const origin = `http://127.0.0.1:${ready.port}`;
  const control = async (p, method = 'GET') => {
    const res = await within(5000, `${method} ${p}`, fetch(`${origin}/__test/${p}`, { method }));
    return res.json();
  };
  return {
    issuer: ready.issuer,
    origin,
    events: () => control('events'),
    issuedTokens: () => control('issued-tokens'),
    /** What /authorize, /par and /token received (`GET /__test/requests`), oldest first. */
    requests: () => control('requests'),
    /** Turn a test switch on or off: `switchOn('dpop-nonce')`, `switchOff('refuse-par')`. */
    switchOn: (name) => control(name, 'POST'),
    switchOff: (name) => control(name, 'DELETE'),
    /** RFC 7662 introspection, authenticated as the BFF's client. */
    async introspect(token) {
      const res = await within(5000, 'introspection', fetch(`${ready.issuer}/introspect`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token }),
      }));
      return res.json();
    },
    log: () => stderr,
    async stop() {
      child.stdin.end();
      child.kill('SIGTERM');
      children.delete(child);
    },
  };
}

/**
 * The oidc-bff binary on 127.0.0.1:`port`, public as http://localhost:`port`. `extraOidc`:
 * more `[oidc]` lines, a string or a function of the upstream's URL; `extraSession`: more
 * `[session]` lines, a string or a function of this BFF's temporary directory (where a
 * store's file can live, removed with it); `extraRoutes`: a function of the upstream's URL
 * giving more TOML after the `/api` route.
 */
export async function startBff({ port, issuer, upstream, spaMode = false, extraOidc = '', extraSession = '', extraRoutes = () => '' }) {
  if (!fs.existsSync(BFF_BIN)) {
    throw new Error(`${BFF_BIN} is missing: build it first (cargo build), or set OIDC_BFF_BIN`);
  }
  const dir = tempDir();
  const appOrigin = `http://localhost:${port}`;
  const key = crypto.randomBytes(32).toString('base64');
  const configFile = path.join(dir, 'bff.toml');
  fs.writeFileSync(configFile, `
[server]
listen = "127.0.0.1:${port}"
public_url = "${appOrigin}"
static_dir = ${JSON.stringify(path.join(ROOT, 'examples/spa'))}
shutdown_timeout_secs = 2

[oidc]
issuer = "${issuer}"
client_id = "${CLIENT_ID}"
client_secret = "${CLIENT_SECRET}"
${spaMode ? `redirect_uri = "${appOrigin}/signed-in"` : ''}
${typeof extraOidc === 'function' ? extraOidc(upstream) : extraOidc}

[session]
keys = ["${key}"]
secure = false
${typeof extraSession === 'function' ? extraSession(dir) : extraSession}

[logging]
level = "info"

[[routes]]
prefix = "/api"
upstream = "${upstream}"
${extraRoutes(upstream)}
`);
  const logFile = path.join(dir, 'bff.log');
  let child;
  let exited;

  async function launch() {
    const log = fs.openSync(logFile, 'a');
    child = spawn(BFF_BIN, ['serve', '--config', configFile], { stdio: ['ignore', log, log], cwd: ROOT });
    fs.closeSync(log);
    children.add(child);
    exited = new Promise((resolve) => { child.once('exit', (code, signal) => resolve({ code, signal })); });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`oidc-bff exited (${child.exitCode}):\n${readLog()}`);
      try {
        const res = await within(2000, 'readyz', fetch(`http://127.0.0.1:${port}/readyz`));
        if (res.status === 200) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error(`oidc-bff not ready in 30 s:\n${readLog()}`);
      await sleep(100);
    }
  }

  async function stop() {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    try {
      await within(10_000, 'oidc-bff to exit after SIGTERM', exited);
    } catch {
      child.kill('SIGKILL');
      await exited;
    }
    children.delete(child);
  }

  const readLog = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-8000) : '');
  await launch();
  return {
    origin: appOrigin,
    port,
    log: readLog,
    stop,
    /** SIGTERM, wait for the exit, start again with the same config and keys. */
    async restart() {
      await stop();
      await launch();
    },
    async close() {
      await stop();
      if (process.env.BROWSER_TEST_KEEP_LOGS) console.error(`oidc-bff config and log kept in ${dir}`);
      else fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A page on another site (http://127.0.0.1:PORT) that only serves an empty document. */
export async function startHostileSite() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><html><head><meta charset="utf-8"><title>Not your app</title></head><body><h1>A page on another site</h1></body></html>');
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((done) => { server.closeAllConnections(); server.close(() => done()); }),
  };
}

/**
 * Everything the IdP, oidc-bff and the echo API need for one test file. `idp` and `bff`
 * options pass through (`idpConfig`: more IDP_CONFIG fields; `backchannelLogout`: the IdP
 * calls the BFF's back-channel logout endpoint; `extraOidc`, `extraSession`, `extraRoutes`:
 * more oidc-bff TOML); `echoOptions` go to startEcho (e.g. `{ dpopNonce: true }`). `close()`
 * stops it all.
 */
export async function startStack({
  spaMode = false, accessTokenTtl, extraOidc, extraSession, extraRoutes, idpConfig, backchannelLogout, echoOptions,
} = {}) {
  const port = await freePort();
  const appOrigin = `http://localhost:${port}`;
  const echo = await startEcho(echoOptions);
  const idp = await startIdp({ appOrigin, accessTokenTtl, idpConfig, backchannelLogout });
  let bff;
  try {
    bff = await startBff({ port, issuer: idp.issuer, upstream: echo.url, spaMode, extraOidc, extraSession, extraRoutes });
  } catch (err) {
    await idp.stop();
    await echo.close();
    throw err;
  }
  const browser = await launchChromium();
  return {
    app: appOrigin,
    idp,
    bff,
    echo,
    browser,
    async close() {
      await browser.close().catch(() => {});
      await bff.close();
      await idp.stop();
      await echo.close();
    },
  };
}
