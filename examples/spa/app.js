// The sample SPA: everything it knows about the user comes from GET /session, and its API
// calls go through oidc-bff, which adds the access token. It never sees a token. All calls
// go through bff.js (X-CSRF: 1, same-origin credentials, 401 handling). Works in both login
// modes: redirect mode (the IdP returns to the BFF's /callback) and SPA mode (the IdP returns
// to a page of this app, which hands the URL to POST /login/end).
import { createBff } from './bff.js';

const $ = (id) => document.getElementById(id);
const show = (id, on) => { $(id).hidden = !on; };
const text = (id, value) => { $(id).textContent = value; };

let session = null;
// The IdPs the BFF offers (SPEC §3.7), as an anonymous GET /session lists them: empty with
// only one, which the plain "Log in" button uses.
let providers = [];

const bff = createBff({
  // A 401 from an API call: the session ended (logged out elsewhere, refresh refused).
  onUnauthenticated: () => {
    const notice = 'Your session has ended. Log in again to continue.';
    render(null, notice);
    // A page that started logged in never learnt which IdPs there are: ask now.
    load(notice).catch(fail);
  },
});

function fail(err) {
  text('error', err.code ? `${err.message} [${err.code}]` : String(err.message || err));
  show('error', true);
}

function relative(unix) {
  const s = Math.round(unix - Date.now() / 1000);
  if (s <= 0) return '(expired)';
  if (s < 120) return `(in ${s} s)`;
  if (s < 7200) return `(in ${Math.round(s / 60)} min)`;
  return `(in ${Math.round(s / 3600)} h)`;
}

function tick() {
  if (!session) return;
  text('expires-in', relative(session.expires_at));
  text('session-expires-in', relative(session.session_expires_at));
}

function loginButton(name) {
  const button = document.createElement('button');
  button.type = 'button';
  button.id = `login-${name}`; // provider names are [a-z0-9-]
  button.dataset.provider = name;
  button.textContent = `Log in with ${name}`;
  button.addEventListener('click', () => bff.login({ provider: name }));
  return button;
}

function renderLogin() {
  const several = providers.length > 1;
  show('login', !several);
  show('providers', several);
  const shown = [...$('providers').children].map((b) => b.dataset.provider);
  if (shown.join('\n') !== providers.join('\n')) $('providers').replaceChildren(...providers.map(loginButton));
}

function render(s, notice) {
  session = s;
  document.body.dataset.state = s ? 'authenticated' : 'anonymous';
  show('anonymous', !s);
  show('authenticated', Boolean(s));
  text('notice', notice || '');
  show('notice', Boolean(notice));
  if (!s) {
    text('status', 'Not logged in');
    renderLogin();
    return;
  }
  const c = s.claims || {};
  text('status', `Logged in as ${c.name || s.sub}`);
  text('name', c.name || c.preferred_username || s.sub);
  text('sub', s.sub);
  text('email', c.email || '—');
  text('provider', s.provider || '—');
  text('provider-issuer', c.iss ? `(${c.iss})` : '');
  text('expires', new Date(s.expires_at * 1000).toLocaleString());
  $('expires').dataset.unix = String(s.expires_at);
  text('session-expires', new Date(s.session_expires_at * 1000).toLocaleString());
  text('claims', JSON.stringify(c, null, 2));
  tick();
}

// Each API button calls its own path: /api with the login's token, /payments with a token the
// BFF exchanged for that API alone (`token = "exchange"` in config/demo.toml).
async function callApi(path) {
  show('error', false);
  text('api-result', 'Calling…');
  delete $('api-result').dataset.status;
  const res = await bff.fetch(path);
  if (res.status === 401) return; // onUnauthenticated has rendered the logged-out view
  const body = await res.text();
  let shown = body;
  try {
    shown = JSON.stringify(JSON.parse(body), null, 2);
  } catch {
    // not JSON: show it as received
  }
  text('api-result', `HTTP ${res.status}\n${shown}`);
  $('api-result').classList.toggle('muted', false);
  $('api-result').dataset.status = String(res.status);
  // The call may have refreshed the access token: show the new expiry.
  await load();
}

async function load(notice) {
  const status = await bff.status();
  providers = status.providers;
  render(status.session, notice);
}

async function start() {
  if (bff.isLoginCallback()) {
    // SPA mode: the IdP redirected to this page; hand its URL to the BFF.
    try {
      render(await bff.completeLogin());
      return;
    } catch (err) {
      fail(err); // and offer the login again, with every IdP
    }
  }
  await load();
}

$('login').addEventListener('click', () => bff.login());
$('logout').addEventListener('click', () => bff.logout().catch(fail));
for (const id of ['call-api', 'call-payments']) {
  $(id).addEventListener('click', () => callApi($(id).dataset.path).catch(fail));
}
setInterval(tick, 1000);
start()
  .catch((err) => { render(null); fail(err); })
  .finally(() => { document.body.dataset.ready = 'true'; });
