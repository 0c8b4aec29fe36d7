// bff.js — a dependency-free browser helper for SPAs behind oidc-bff (SPEC §3, §5).
// Copy it next to your app and import it as an ES module. It never sees or stores a token:
// the BFF keeps them in an HttpOnly cookie that JavaScript cannot read.
//
//   import { createBff } from './bff.js';
//   const bff = createBff({ onUnauthenticated: () => bff.login() });
//   const me = await bff.session();            // null when logged out
//   const res = await bff.fetch('/api/orders'); // X-CSRF: 1 and the cookie; 401 → onUnauthenticated
//
// API (every method that talks to the BFF returns a Promise):
//   createBff({ base = '', onUnauthenticated })   base = the BFF's server.base_path
//   bff.fetch(path, init)    fetch() with `X-CSRF: 1` and same-origin credentials; a 401 calls
//                            onUnauthenticated(response) (if given), then resolves as usual
//   bff.session()            GET /session: the session object, or null when anonymous
//   bff.status()             GET /session: { session, providers }; session as above, providers
//                            the IdPs to offer when anonymous and the BFF has several ([] else)
//   bff.login(returnTo)      navigate to GET /login (redirect mode; default: this page); or
//                            bff.login({ returnTo, provider }) to choose the IdP (SPEC §3.7)
//   bff.startLogin(returnTo) POST /login/start, then navigate to the authorization URL; also
//                            takes { returnTo, provider }
//   bff.isLoginCallback()    does this page's URL carry the IdP's answer (state + code/error)?
//   bff.completeLogin()      POST /login/end with this page's URL (SPA mode: redirect_uri is an
//                            SPA page); resolves to the session (with `return_to`); the code is
//                            removed from the address bar whatever happens
//   bff.logout()             POST /logout, then navigate to the IdP's logout URL (or '/')
// Failures reject with a BffError carrying `status` and the BFF's error `code`.

export class BffError extends Error {
  constructor(status, code, description) {
    super(description || `oidc-bff answered ${status}${code ? ` (${code})` : ''}`);
    this.name = 'BffError';
    this.status = status;
    this.code = code || null;
  }
}

const here = () => location.pathname + location.search + location.hash;

// login() and startLogin() take a returnTo string, as they always have, or an options object.
function loginOptions(arg) {
  const { returnTo = here(), provider } = typeof arg === 'string' ? { returnTo: arg } : (arg ?? {});
  return { returnTo, provider };
}

async function failure(res) {
  let body = {};
  try {
    body = await res.json();
  } catch {
    // not JSON: keep the status alone
  }
  return new BffError(res.status, body.error, body.error_description);
}

export function createBff({ base = '', onUnauthenticated } = {}) {
  const call = (path, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set('X-CSRF', '1');
    return fetch(path, { ...init, headers, credentials: 'same-origin' });
  };

  const bff = {
    async fetch(path, init) {
      const res = await call(path, init);
      if (res.status === 401 && onUnauthenticated) onUnauthenticated(res);
      return res;
    },

    async session() {
      return (await bff.status()).session;
    },

    // One request for both: an anonymous answer is where the BFF lists its IdPs.
    async status() {
      const res = await call(`${base}/session`, { cache: 'no-store' });
      if (res.status === 401) {
        let body = {};
        try {
          body = await res.json();
        } catch {
          // not JSON: anonymous all the same
        }
        return { session: null, providers: Array.isArray(body.providers) ? body.providers : [] };
      }
      if (!res.ok) throw await failure(res);
      return { session: await res.json(), providers: [] };
    },

    login(options) {
      const { returnTo, provider } = loginOptions(options);
      const choice = provider ? `&provider=${encodeURIComponent(provider)}` : '';
      location.assign(`${base}/login?return_to=${encodeURIComponent(returnTo)}${choice}`);
    },

    async startLogin(options) {
      const { returnTo, provider } = loginOptions(options);
      const res = await call(`${base}/login/start`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(provider ? { return_to: returnTo, provider } : { return_to: returnTo }),
      });
      if (!res.ok) throw await failure(res);
      const { authorization_url: url } = await res.json();
      location.assign(url);
    },

    isLoginCallback(url = location.href) {
      const q = new URL(url).searchParams;
      return q.has('state') && (q.has('code') || q.has('error'));
    },

    async completeLogin(url = location.href) {
      const res = await call(`${base}/login/end`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ url }),
      });
      if (!res.ok) {
        history.replaceState(null, '', location.pathname);
        throw await failure(res);
      }
      const session = await res.json();
      const to = session.return_to || '/';
      // A relative return_to stays in this page; an absolute one (an allowed origin) is left to.
      if (to.startsWith('/')) history.replaceState(null, '', to);
      else location.assign(to);
      return session;
    },

    async logout() {
      const res = await call(`${base}/logout`, { method: 'POST' });
      if (!res.ok) throw await failure(res);
      const { logout_url: url } = await res.json();
      location.assign(url || '/');
    },
  };
  return bff;
}
