// The sample SPA: everything it knows about the user comes from GET /session, and its API
// calls go through oidc-bff, which adds the access token. It never sees a token. All calls
// go through bff.js (X-CSRF: 1, same-origin credentials, 401 handling). Works in both login
// modes: redirect mode (the IdP returns to the BFF's /callback) and SPA mode (the IdP returns
// to a page of this app, which hands the URL to POST /login/end).
//
// While logged in it listens to GET /session/events (through bff.events, one stream for all
// the tabs of the browser): a refresh by any tab updates the shown expiry, `expiring` shows a
// banner, and an end of the session — logout in another tab, at the IdP, expiry — shows the
// logged-out view in every tab at once, without a reload. A login in another tab is picked up
// too. The "Live WebSocket" panel opens /ws/tick through oidc-bff.
import { createBff } from './bff.js';

const $ = (id) => document.getElementById(id);
const show = (id, on) => { $(id).hidden = !on; };
const text = (id, value) => { $(id).textContent = value; };

let session = null;
// The IdPs the BFF offers (SPEC §3.7), as an anonymous GET /session lists them: empty with
// only one, which the plain "Log in" button uses.
let providers = [];
// The session-event subscription, while logged in.
let events = null;
let socket = null;

// Why a session ended, as `ended` events say it (SPEC §5); 'anonymous' says nothing more.
const ENDED = {
  logout: 'you logged out',
  backchannel: 'you were logged out at the identity provider',
  revoked: 'it was revoked',
  expired: 'it expired',
  refresh_failed: 'it could not be renewed',
};

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
  const warned = Number($('expiring').dataset.unix);
  if (warned) text('expiring', `Your session ends at ${new Date(warned * 1000).toLocaleTimeString()} ${relative(warned)}: save your work, you will have to log in again.`);
}

function showExpiry() {
  text('expires', new Date(session.expires_at * 1000).toLocaleString());
  $('expires').dataset.unix = String(session.expires_at);
  text('session-expires', new Date(session.session_expires_at * 1000).toLocaleString());
  $('session-expires').dataset.unix = String(session.session_expires_at);
  tick();
}

function warnExpiring(unix) {
  if (unix) $('expiring').dataset.unix = String(unix);
  else delete $('expiring').dataset.unix;
  show('expiring', Boolean(unix));
  tick();
}

function onEvent({ type, data }) {
  if (type === 'ended' || type === 'error') {
    events = null; // the subscription is over; onSessionEnded renders an end
    return;
  }
  if (!session) return;
  if (type === 'session' && data.authenticated) {
    session = { ...session, expires_at: data.expires_at, session_expires_at: data.session_expires_at };
    // An idle expiry that slid past the warning: the warning no longer holds.
    if (Number($('expiring').dataset.unix) < data.session_expires_at) warnExpiring(null);
    showExpiry();
  } else if (type === 'refreshed') {
    session = { ...session, expires_at: data.expires_at };
    showExpiry();
  } else if (type === 'expiring') {
    warnExpiring(data.session_expires_at);
  }
}

// One subscription while logged in; bff.js shares its stream with the other tabs.
function listen(on) {
  if (on && !events) events = bff.events(onEvent);
  if (!on && events) {
    events.close();
    events = null;
  }
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
  listen(Boolean(s));
  show('live', Boolean(s) || $('live').dataset.used === 'true');
  syncSocket();
  if (!s) {
    text('status', 'Not logged in');
    warnExpiring(null);
    renderLogin();
    return;
  }
  delete document.body.dataset.ended;
  const c = s.claims || {};
  text('status', `Logged in as ${c.name || s.sub}`);
  text('name', c.name || c.preferred_username || s.sub);
  text('sub', s.sub);
  text('email', c.email || '—');
  text('provider', s.provider || '—');
  text('provider-issuer', c.iss ? `(${c.iss})` : '');
  text('claims', JSON.stringify(c, null, 2));
  showExpiry();
}

// ---- the live WebSocket panel ----

function syncSocket() {
  const open = socket?.readyState === WebSocket.OPEN;
  $('ws-connect').disabled = Boolean(socket) || !session;
  $('ws-disconnect').disabled = !socket;
  $('ws-message').disabled = !open;
  $('ws-send').disabled = !open;
}

function socketStatus(state, line) {
  $('ws-status').dataset.state = state;
  text('ws-status', line);
}

function connectSocket() {
  // Same origin as the page: the browser sends the session cookie and an Origin the BFF accepts.
  const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws/tick`);
  socket = ws;
  $('live').dataset.used = 'true';
  delete $('ws-status').dataset.code;
  delete $('ws-status').dataset.reason;
  socketStatus('connecting', 'connecting…');
  syncSocket();
  ws.addEventListener('open', () => {
    socketStatus('open', 'open');
    syncSocket();
  });
  ws.addEventListener('message', ({ data }) => {
    if (typeof data !== 'string') return; // the page sends text only
    let tick;
    try {
      tick = JSON.parse(data).tick;
    } catch {
      // not JSON: an echo
    }
    if (Number.isInteger(tick)) {
      text('ws-tick', String(tick));
      $('ws-tick').dataset.tick = String(tick);
    } else {
      text('ws-echo', data);
    }
  });
  ws.addEventListener('close', ({ code, reason }) => {
    if (socket === ws) socket = null;
    $('ws-status').dataset.code = String(code);
    $('ws-status').dataset.reason = reason;
    socketStatus('closed', `closed ${code}${reason ? ` ${reason}` : ''}`);
    syncSocket();
  });
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

// Every tab hears of an end, whichever tab or server learnt of it first.
bff.onSessionEnded((reason) => {
  const notice = `Your session has ended${ENDED[reason] ? `: ${ENDED[reason]}` : ''}. Log in again to continue.`;
  render(null, notice);
  document.body.dataset.ended = reason;
  load(notice).catch(fail);
});
bff.onLogin(() => { load().catch(fail); });

$('login').addEventListener('click', () => bff.login());
$('logout').addEventListener('click', () => bff.logout().catch(fail));
$('ws-connect').addEventListener('click', connectSocket);
$('ws-disconnect').addEventListener('click', () => socket?.close(1000, 'bye'));
$('ws-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (socket?.readyState !== WebSocket.OPEN || !$('ws-message').value) return;
  socket.send($('ws-message').value);
  $('ws-message').value = '';
});
for (const id of ['call-api', 'call-payments']) {
  $(id).addEventListener('click', () => callApi($(id).dataset.path).catch(fail));
}
setInterval(tick, 1000);
start()
  .catch((err) => { render(null); fail(err); })
  .finally(() => { document.body.dataset.ready = 'true'; });
