// The client side of bench/refresh-memory.sh: SESSIONS logins at oidc-bff, then GET /session
// round-robin at RATE requests per second. Every access token lives EXPIRES_IN (1) second and
// each session is asked again only after it has expired, so every request refreshes (the IdP
// rotates the refresh token each time); each response's refreshed cookie replaces the old one.
// Stops after REFRESHES refresh grants or DURATION seconds, whichever comes first. Loopback only.
//   node bench/refresh-driver.mjs BFF_URL IDP_ORIGIN
const [bff, idp] = process.argv.slice(2);
const SESSIONS = Number(process.env.SESSIONS ?? 150);
const RATE = Number(process.env.RATE ?? 85);
const REFRESHES = Number(process.env.REFRESHES ?? 50000);
const DURATION = Number(process.env.DURATION ?? 600);
if (!bff?.startsWith('http://127.0.0.1:') || !idp?.startsWith('http://127.0.0.1:')) {
  console.error('usage: refresh-driver.mjs http://127.0.0.1:BFF http://127.0.0.1:IDP');
  process.exit(2);
}

/** A cookie jar for one browser: name -> value, updated from Set-Cookie. */
function absorb(jar, res) {
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (!value || attrs.some((a) => a.trim().toLowerCase() === 'max-age=0')) jar.delete(name);
    else jar.set(name, value);
  }
}
const cookie = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

async function login() {
  const jar = new Map();
  let res = await fetch(`${bff}/login`, { redirect: 'manual' });
  absorb(jar, res);
  res = await fetch(res.headers.get('location'), { redirect: 'manual' }); // the IdP: at once back
  res = await fetch(res.headers.get('location'), { redirect: 'manual', headers: { cookie: cookie(jar) } });
  absorb(jar, res);
  if (res.status !== 302) throw new Error(`callback answered ${res.status}: ${await res.text()}`);
  return jar;
}

const count = async () => (await (await fetch(`${idp}/__count`)).json()).refresh_token;

const jars = [];
for (let i = 0; i < SESSIONS; i += 1) jars.push(await login());
console.error(`driver: ${SESSIONS} sessions logged in`);
await new Promise((r) => setTimeout(r, 1500)); // every access token has expired

const started = Date.now();
const interval = 1000 / RATE;
let sent = 0;
let failed = 0;
let inflight = 0;
let next = 0;
const statuses = {};
while (Date.now() - started < DURATION * 1000) {
  if (sent % 500 === 0 && (await count()) >= REFRESHES) break;
  const due = started + sent * interval;
  const wait = due - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  if (inflight > 200) { // the BFF is not keeping up: do not pile up more
    await new Promise((r) => setTimeout(r, 5));
    continue;
  }
  const jar = jars[next];
  next = (next + 1) % jars.length;
  sent += 1;
  inflight += 1;
  fetch(`${bff}/session`, { headers: { 'x-csrf': '1', cookie: cookie(jar) } })
    .then(async (res) => {
      absorb(jar, res);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      await res.arrayBuffer();
    })
    .catch(() => { failed += 1; })
    .finally(() => { inflight -= 1; });
}
while (inflight > 0) await new Promise((r) => setTimeout(r, 10));
const seconds = (Date.now() - started) / 1000;
console.log(JSON.stringify({ sessions: SESSIONS, requests: sent, failed, statuses, refreshes: await count(), seconds }));
