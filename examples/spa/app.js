// The sample SPA: everything it knows about the user comes from GET /session; it never sees
// a token. Every fetch to the BFF carries X-CSRF: 1 (SPEC §5).
'use strict';

const bff = (path, init = {}) =>
  fetch(path, { ...init, credentials: 'same-origin', headers: { 'X-CSRF': '1', ...(init.headers || {}) } });

const show = (id, on) => { document.getElementById(id).hidden = !on; };
const text = (id, value) => { document.getElementById(id).textContent = value; };
const when = (unix) => new Date(unix * 1000).toLocaleString();

async function refresh() {
  const res = await bff('/session');
  if (res.status === 401) {
    show('anonymous', true);
    show('authenticated', false);
    return;
  }
  if (!res.ok) {
    text('error', `The BFF answered ${res.status}.`);
    show('error', true);
    return;
  }
  const s = await res.json();
  text('name', s.claims.name || s.sub);
  text('sub', s.sub);
  text('expires', when(s.expires_at));
  text('session-expires', when(s.session_expires_at));
  text('claims', JSON.stringify(s.claims, null, 2));
  show('anonymous', false);
  show('authenticated', true);
}

document.getElementById('login').addEventListener('click', () => {
  const here = location.pathname + location.search;
  location.assign('/login?return_to=' + encodeURIComponent(here));
});

document.getElementById('logout').addEventListener('click', async () => {
  const res = await bff('/logout', { method: 'POST' });
  const { logout_url } = res.ok ? await res.json() : {};
  location.assign(logout_url || '/');
});

refresh().catch((e) => { text('error', String(e)); show('error', true); });
