// bff.js — a dependency-free browser helper for SPAs behind oidc-bff (SPEC §3, §5).
// Copy it next to your app and import it as an ES module. It never sees or stores a token:
// the BFF keeps them in an HttpOnly cookie that JavaScript cannot read.
//
//   import { createBff } from './bff.js';
//   const bff = createBff({ onUnauthenticated: () => bff.login() });
//   const me = await bff.session();            // null when logged out
//   const res = await bff.fetch('/api/orders'); // X-CSRF: 1 and the cookie; 401 → onUnauthenticated
//
// API (every method that talks to the BFF returns a Promise, except events()):
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
//   bff.logout()             POST /logout, tell the other tabs (below), then navigate to the
//                            IdP's logout URL (or '/')
//   bff.events(handler)      GET /session/events (SPEC §5): calls handler({ type, data }) for
//                            each event — `session` (the /session body) at once, `refreshed`
//                            { expires_at }, `expiring` { session_expires_at }, `ended`
//                            { reason } (last: the subscription stops) — and returns
//                            { close() }. Reconnects after errors with backoff (1 s doubling
//                            to 30 s, plus jitter). A 401 ends it with reason 'anonymous'; a
//                            refusal for good (403) ends it with { type: 'error', data:
//                            { status, error } }. One stream per browser, not per tab: the tab
//                            holding the Web Lock 'oidc-bff-events' reads it and relays every
//                            event over BroadcastChannel('oidc-bff'); when it closes another
//                            tab takes over. Without navigator.locks every tab reads its own.
//   bff.onSessionEnded(cb)   cb(reason) once per end of the session, in every tab: an `ended`
//                            event (any tab's stream), or bff.logout() in another tab ('logout').
//                            Returns a function that unsubscribes
//   bff.onLogin(cb)          cb() when a login completed in another tab (re-read /session then);
//                            returns a function that unsubscribes
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

const CHANNEL = 'oidc-bff';
const LOCK = 'oidc-bff-events';
// In redirect mode a login leaves the page and comes back as a new document: this per-tab mark
// tells the next status() that the session it finds is a fresh login the other tabs should hear
// of. It says only that a login was started, nothing about the session.
const LOGIN_MARK = 'oidc-bff-login-started';
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

/** Resolve after `ms`, or at once when `signal` aborts. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    const onAbort = () => { clearTimeout(timer); resolve(); };
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Read server-sent events from a fetch body until it ends, calling onEvent(type, data) per
 * event (HTML's event-stream format: fields split on the first colon, one optional space
 * dropped, `data` lines joined with newlines, comments and unknown fields ignored, an event
 * left unfinished at the end discarded). Chunks may split lines, and a CRLF, anywhere.
 */
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let rest = '';
  let type = '';
  let data = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    const text = rest + decoder.decode(value, { stream: true });
    // A CR at the very end may be half of a CRLF: splitting there would invent an empty line,
    // which dispatches an event too early.
    const cut = text.endsWith('\r') ? text.length - 1 : text.length;
    const lines = text.slice(0, cut).split(/\r\n|\r|\n/);
    rest = lines.pop() + text.slice(cut);
    for (const line of lines) {
      if (line === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const fieldValue = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = fieldValue;
        else if (field === 'data') data.push(fieldValue);
      }
    }
  }
}

/** Report an exception from an app's callback without breaking the caller's loop. */
function report(err) {
  if (typeof reportError === 'function') reportError(err);
  else setTimeout(() => { throw err; });
}

function mark(on) {
  try {
    if (on) sessionStorage.setItem(LOGIN_MARK, '1');
    else sessionStorage.removeItem(LOGIN_MARK);
  } catch {
    // storage disabled: other tabs just learn of the login later
  }
}

function marked() {
  try {
    return sessionStorage.getItem(LOGIN_MARK) === '1';
  } catch {
    return false;
  }
}

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

  // ---- session events, shared by the tabs of this browser (SPEC §5) ----
  // HTTP/1.1 gives a browser six connections per host: a stream per tab would starve the
  // app's own requests from the seventh tab on. So one tab (the holder of a Web Lock) reads
  // the stream and relays each event over a BroadcastChannel; the lock passes on by itself
  // when that tab closes.
  const tabId = Math.random().toString(36).slice(2);
  const handlers = new Set();
  const endedCallbacks = new Set();
  const loginCallbacks = new Set();
  let channel = null;
  let run = null; // the running subscription: { ctl: AbortController, leading }
  let ended = false; // this tab has reported the end of the session it knew
  let replay = {}; // the last `session` (kept current) and `expiring`, for late subscribers

  function post(message) {
    try {
      openChannel()?.postMessage(message);
    } catch {
      // a closing page: nobody to tell
    }
  }

  function openChannel() {
    if (channel || typeof BroadcastChannel !== 'function') return channel;
    channel = new BroadcastChannel(CHANNEL);
    channel.onmessage = ({ data: msg }) => {
      if (!msg || typeof msg !== 'object') return;
      if (msg.kind === 'event' && (!msg.to || msg.to === tabId) && !run?.leading && msg.event?.type) {
        // A replay answers our hello: skip it when the live event came first.
        if (msg.to && replay[msg.event.type] !== undefined) return;
        deliver(msg.event);
      } else if (msg.kind === 'hello' && run?.leading) {
        for (const event of replayed()) post({ kind: 'event', to: msg.from, event });
      } else if (msg.kind === 'logout') {
        deliver({ type: 'ended', data: { reason: 'logout' } });
      } else if (msg.kind === 'login') {
        for (const cb of [...loginCallbacks]) {
          try { cb(); } catch (err) { report(err); }
        }
      }
    };
    return channel;
  }

  function replayed() {
    return [
      ...(replay.session ? [{ type: 'session', data: replay.session }] : []),
      ...(replay.expiring ? [{ type: 'expiring', data: replay.expiring }] : []),
    ];
  }

  function sessionEnded(reason) {
    if (ended) return;
    ended = true;
    for (const cb of [...endedCallbacks]) {
      try { cb(reason); } catch (err) { report(err); }
    }
  }

  function stop() {
    run?.ctl.abort();
    run = null;
    replay = {};
  }

  /** Hand an event to this tab's handlers (and, for `ended`, to onSessionEnded). */
  function deliver(event) {
    const { type, data } = event;
    if (type === 'session') {
      ended = false;
      replay = { session: data };
    } else if (type === 'refreshed' && replay.session) {
      replay.session = { ...replay.session, expires_at: data?.expires_at };
    } else if (type === 'expiring') {
      replay.expiring = data;
    }
    const to = [...handlers];
    const last = type === 'ended' || type === 'error';
    if (last) {
      handlers.clear();
      stop();
    }
    for (const handler of to) {
      try { handler(event); } catch (err) { report(err); }
    }
    if (type === 'ended') sessionEnded(data?.reason ?? 'unknown');
  }

  /** An event from this tab's own stream: relayed first when this tab leads. */
  function emit(owner, event) {
    if (run !== owner) return; // a stopped subscription's late event
    if (owner.leading) post({ kind: 'event', event });
    deliver(event);
  }

  async function stream(owner) {
    const { signal } = owner.ctl;
    let delay = BACKOFF_MIN_MS;
    while (!signal.aborted) {
      let res = null;
      try {
        res = await fetch(`${base}/session/events`, {
          headers: { 'X-CSRF': '1', Accept: 'text/event-stream' },
          credentials: 'same-origin',
          cache: 'no-store',
          signal,
        });
      } catch {
        // offline, or the BFF restarting: try again below
      }
      if (signal.aborted) return;
      if (res?.status === 401) {
        emit(owner, { type: 'ended', data: { reason: 'anonymous' } });
        return;
      }
      if (res?.status === 403) {
        // Retrying cannot help (the request itself is refused): stop for good.
        const body = await res.json().catch(() => ({}));
        emit(owner, { type: 'error', data: { status: 403, error: body.error ?? null } });
        return;
      }
      if (res?.ok && res.body) {
        try {
          await readEvents(res.body, (type, raw) => {
            let data;
            try {
              data = JSON.parse(raw);
            } catch {
              return; // not an event of the BFF's
            }
            delay = BACKOFF_MIN_MS; // it worked: the next drop starts the backoff afresh
            emit(owner, { type, data });
          });
        } catch {
          // the connection dropped (or this subscription stopped)
        }
      } else {
        // 503 event_streams_exhausted, a proxy's 502…: wait and try again
        res?.body?.cancel().catch(() => {});
      }
      if (signal.aborted) return;
      // Jitter, so that every browser does not come back in the same second after a restart.
      await pause(delay + Math.random() * delay / 2, signal);
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
  }

  function start() {
    const owner = { ctl: new AbortController(), leading: false };
    run = owner;
    replay = {};
    const { signal } = owner.ctl;
    if (!openChannel() || !navigator.locks) {
      stream(owner);
      return;
    }
    // A tab that joins late asks the leader for what it has missed (addressed to it alone).
    post({ kind: 'hello', from: tabId });
    navigator.locks.request(LOCK, { signal }, async () => {
      if (signal.aborted) return;
      owner.leading = true;
      await stream(owner);
    }).catch(() => {
      // AbortError: this tab stopped listening before it was its turn to lead
    });
  }

  function loggedIn() {
    ended = false;
    post({ kind: 'login' });
  }

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
        mark(false); // a login that did not complete
        ended = true; // nothing left to end: no onSessionEnded until a session is seen
        return { session: null, providers: Array.isArray(body.providers) ? body.providers : [] };
      }
      if (!res.ok) throw await failure(res);
      const session = await res.json();
      ended = false;
      // Back from a login this tab started (redirect mode): the other tabs should know.
      if (marked()) {
        mark(false);
        loggedIn();
      }
      return { session, providers: [] };
    },

    login(options) {
      const { returnTo, provider } = loginOptions(options);
      const choice = provider ? `&provider=${encodeURIComponent(provider)}` : '';
      mark(true);
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
      mark(true);
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
      mark(false);
      if (!res.ok) {
        history.replaceState(null, '', location.pathname);
        throw await failure(res);
      }
      const session = await res.json();
      loggedIn();
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
      // The other tabs show it now, not when their next call fails. This tab is leaving:
      // it stops listening without telling its own callbacks.
      post({ kind: 'logout' });
      ended = true;
      handlers.clear();
      stop();
      location.assign(url || '/');
    },

    events(handler) {
      handlers.add(handler);
      if (!run) {
        start();
      } else if (replay.session) {
        // Already listening: this subscriber gets what the others got at the start.
        const missed = replayed();
        queueMicrotask(() => {
          for (const event of missed) {
            if (handlers.has(handler)) handler(event);
          }
        });
      }
      return {
        close() {
          if (!handlers.delete(handler)) return;
          if (!handlers.size) stop();
        },
      };
    },

    onSessionEnded(cb) {
      openChannel();
      endedCallbacks.add(cb);
      return () => { endedCallbacks.delete(cb); };
    },

    onLogin(cb) {
      openChannel();
      loginCallbacks.add(cb);
      return () => { loginCallbacks.delete(cb); };
    },
  };
  return bff;
}
