// Test/demo OpenID Provider for oidc-bff: panva's oidc-provider, PingOne-shaped issuer,
// loopback only. Contract (config, ready line, /__test endpoints): see README.md.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { promisify } from 'node:util';

import Provider, { errors } from 'oidc-provider';
// Deep import on purpose (the package has no "exports" map, version is pinned): the default
// in-memory store belongs to one Provider instance, but /__test/rotate-keys builds a new
// instance and must keep every session, grant, code and token. So we hand both instances
// the library's own MemoryAdapter over one store that we own (and can enumerate).
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
// Also deep, for the same reasons: the library's own DPoP proof validation (signature, typ, alg,
// htm, htu, iat, nonce) and jti replay check, which its built-in grants use through helpers that
// registerGrantType handlers do not receive. The RFC 8693 exchange below reuses them as they are.
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';

// stdout carries exactly one line (the ready line). oidc-provider prints its NOTICEs with
// console.info, so route console.log/info/debug to stderr before anything can log.
console.log = console.info = console.debug = (...args) => console.error(...args);

function die(msg) { // configuration errors: one line on stderr, exit 1
  console.error(`idp: ${msg}`);
  process.exit(1);
}
let cfg;
try { cfg = JSON.parse(process.env.IDP_CONFIG || '{}'); } catch (err) { die(`IDP_CONFIG: ${err.message}`); }
const port = cfg.port ?? 0;
const envId = cfg.envId ?? 'ENV_ID';
const accessTokenTtl = cfg.accessTokenTtl ?? 3600;
const idTokenTtl = cfg.idTokenTtl ?? 3600;
const refreshTokenTtl = cfg.refreshTokenTtl ?? 86400;
const bigClaimBytes = cfg.bigClaimBytes ?? 0;
const signingAlgs = cfg.signingAlgs ?? ['RS256'];
// Scopes an access token may carry beyond OpenID's: what resource servers (RFC 8707) offer, and
// what token exchange (RFC 8693) may down-scope to.
const apiScopes = cfg.apiScopes ?? ['read', 'write', 'payments', 'avatars', 'admin'];
const exchangeTtl = cfg.exchangeTtl ?? 600;
// RFC 9126 and RFC 9449: oidc-provider 9 enables both by default; they can be switched off.
const parEnabled = cfg.par ?? true;
const requirePar = cfg.requirePar ?? false;
const dpopEnabled = cfg.dpop ?? true;
// RFC 9207: oidc-provider always sends `iss` in authorization responses and advertises it;
// `false` makes this IdP look like one that predates the RFC (both are stripped below).
const issAuthResp = cfg.issAuthResp ?? true;
if (requirePar && !parEnabled) die('requirePar needs par');
if (cfg.dpopNonce && !dpopEnabled) die('dpopNonce needs dpop');
// Server-provided DPoP nonces (RFC 9449 §8): the secret is fixed for the process (rotate-keys
// builds a new Provider that must accept the nonces the old one handed out); whether a proof
// must carry one is switched at runtime (POST/DELETE /__test/dpop-nonce).
const dpopNonceSecret = crypto.randomBytes(32);
let dpopNonceRequired = Boolean(cfg.dpopNonce);
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const clients = (cfg.clients ?? []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token', TOKEN_EXCHANGE],
  response_types: ['code'],
  // oidc-provider puts `sid` in ID and logout tokens only when this is true.
  ...(c.backchannel_logout_uri ? { backchannel_logout_session_required: true } : {}),
  ...c,
}));
const prefix = `/${envId}/as`;
const DAY = 24 * 60 * 60;

// ---- store shared by every Provider instance --------------------------------------------
// A plain Map with expiry: the library's LRU (1000 entries) would silently evict sessions
// in a long test run.
class Store {
  map = new Map();
  get(key) {
    const e = this.map.get(key);
    if (!(e?.exp <= Date.now())) return e?.value; // exp undefined = no expiry
    this.map.delete(key);
    return undefined;
  }
  set(key, value, { maxAge } = {}) {
    this.map.set(key, { value, exp: Number.isFinite(maxAge) ? Date.now() + maxAge : undefined });
  }
  delete(key) { this.map.delete(key); }
  keys() { return [...this.map.keys()].filter((k) => this.get(k) !== undefined); }
}
const store = new Store();
class SharedAdapter extends MemoryAdapter {
  constructor(model) { super(model, store, 15); } // 15 = oidc-provider's default clockTolerance
}

// ---- signing keys ------------------------------------------------------------------------
const KEY_TYPES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  PS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
};
for (const alg of signingAlgs) {
  if (!KEY_TYPES[alg]) die(`signingAlgs: unsupported ${alg} (RS256, PS256, ES256)`);
}
const generateKeyPair = promisify(crypto.generateKeyPair);
async function generateKeys() { // in parallel: RSA generation dominates start-up time
  return Promise.all(signingAlgs.map(async (alg) => {
    const { privateKey } = await generateKeyPair(...KEY_TYPES[alg]);
    const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
    // `alg` pins each key to one algorithm (two RSA keys: one RS256, one PS256).
    return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  }));
}

// ---- accounts: every login name exists -------------------------------------------------
const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
async function findAccount(ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: cap(sub),
        given_name: cap(sub),
        family_name: 'Tester',
        preferred_username: sub,
        email: `${sub}@example.test`,
        email_verified: true,
        ...(bigClaimBytes > 0 ? { big: 'x'.repeat(bigClaimBytes) } : {}),
      };
    },
  };
}

// ---- counters for /__test/events ----------------------------------------------------------
const events = {
  grants: { authorization_code: 0, refresh_token: 0, token_exchange: 0 },
  revocations: 0, end_sessions: 0, introspections: 0,
  // Every POST to the token endpoint, whatever the answer: `grants` only sees successes, and a
  // mix-up test must prove that a code never reached the wrong IdP at all.
  token_requests: { total: 0, authorization_code: 0, refresh_token: 0, token_exchange: 0 },
};
function countTokenRequest(grantType) {
  const type = grantType === TOKEN_EXCHANGE ? 'token_exchange'
    : typeof grantType === 'string' && grantType ? grantType : 'none';
  events.token_requests.total += 1;
  events.token_requests[type] = (events.token_requests[type] ?? 0) + 1;
}
// The RFC 8707/8693 parameters of the newest 200 authorization and token requests (for
// /__test/requests): tests check what the BFF sent, not only what it received.
const requests = [];
function record(entry) {
  requests.push(entry);
  if (requests.length > 200) requests.shift();
}
// What a request to /par, /authorize or /token carried, for record(): parameter names and
// values that are not secrets, whether a DPoP proof came (and its nonce claim, decoded without
// verification) and how the client authenticated. Never a secret, code, token or proof.
function requestFacts(ctx, params, body) {
  const proof = ctx.get('DPoP');
  let dpopNonce = null;
  if (proof) {
    try {
      const claims = JSON.parse(Buffer.from(proof.split('.')[1] ?? '', 'base64url').toString('utf8'));
      dpopNonce = typeof claims.nonce === 'string' ? claims.nonce : null;
    } catch { /* not a JWS: recorded as a proof without a nonce */ }
  }
  const clientAuth = /^basic\s/i.test(ctx.get('Authorization')) ? 'basic'
    : body.client_assertion !== undefined ? 'private_key_jwt'
      : body.client_secret !== undefined ? 'post' : null;
  const endpoint = ctx.path.slice(1);
  const resource = params.resource === undefined ? [] : [params.resource].flat();
  return {
    endpoint,
    grant_type: params.grant_type ?? null,
    resource,
    query_keys: endpoint === 'authorize' ? Object.keys(ctx.query).sort() : null,
    state: endpoint !== 'token' && typeof params.state === 'string' ? params.state : null,
    dpop_jkt: typeof params.dpop_jkt === 'string' ? params.dpop_jkt : null,
    dpop_proof: Boolean(proof),
    dpop_nonce: dpopNonce,
    client_auth: clientAuth,
    // W3C trace context the BFF propagated (SPEC §7): a traceparent, never a tracestate.
    traceparent: ctx.get('traceparent') || null,
    tracestate: ctx.get('tracestate') || null,
  };
}
// JWT access tokens this IdP issued (resource-bound logins and exchanges), by their exact text:
// oidc-provider keeps no record of structured tokens, and an exchange must know its subject.
const jwtAccessTokens = new Map();
function rememberJwt(token) {
  const [, payload] = token.split('.');
  if (payload === undefined) return;
  jwtAccessTokens.set(token, JSON.parse(Buffer.from(payload, 'base64url').toString()));
  if (jwtAccessTokens.size > 1000) jwtAccessTokens.delete(jwtAccessTokens.keys().next().value);
}

// Every token the token endpoint handed out (for /__test/issued-tokens): browser tests search
// what the page received for them. The newest 1000 of each kind.
const issued = { access_tokens: [], refresh_tokens: [], id_tokens: [] };
function remember(body) {
  for (const [field, list] of [['access_token', issued.access_tokens], ['refresh_token', issued.refresh_tokens],
    ['id_token', issued.id_tokens]]) {
    if (typeof body?.[field] !== 'string') continue;
    list.push(body[field]);
    if (field === 'access_token' && body[field].split('.').length === 3) rememberJwt(body[field]);
    if (list.length > 1000) list.shift();
  }
}

// ---- our interaction (replaces devInteractions) ----------------------------------------
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function loginPage(issuer, uid, clientId, error) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-in</title></head><body>
<h1>Sign in to ${esc(clientId)}</h1>${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="${esc(`${issuer}/interaction/${uid}/login`)}">
<label>Login <input type="text" name="login" autofocus autocomplete="username"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form body too large');
  }
  return new URLSearchParams(body);
}

// Grants everything the request asked for, so no consent screen ever shows.
async function autoGrant(provider, { grantId, params, prompt }, accountId) {
  const grant = (grantId && await provider.Grant.find(grantId))
    || new provider.Grant({ accountId, clientId: params.client_id });
  const d = prompt.name === 'consent' ? prompt.details : {};
  grant.addOIDCScope(d.missingOIDCScope?.join(' ') ?? params.scope ?? 'openid');
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  // At the login prompt, consent details are not known yet: grant what the resource servers
  // (RFC 8707) were asked for now, so that no second interaction follows.
  const asked = (params.scope ?? '').split(' ').filter((s) => apiScopes.includes(s)).join(' ');
  for (const indicator of params.resource === undefined ? [] : [params.resource].flat()) {
    if (asked) grant.addResourceScope(indicator, asked);
  }
  return grant.save();
}

// Koa middleware placed before oidc-provider's router. Paths are relative to the issuer
// prefix (the prefix is stripped in the http handler below).
function interactions(provider) {
  return async (ctx, next) => {
    const m = ctx.path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (!m) return next();
    ctx.set('Cache-Control', 'no-store');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== m[1]) throw new Error('interaction uid does not match its cookie');
      const { prompt, params, session } = details;
      if (ctx.method === 'GET' && !m[2]) {
        if (prompt.name === 'consent') { // existing session: consent without a screen
          const grantId = await autoGrant(provider, details, session.accountId);
          const to = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } });
          ctx.status = 303;
          return ctx.redirect(to);
        }
        if (prompt.name !== 'login') ctx.throw(501, `prompt ${prompt.name} not implemented`);
        ctx.type = 'html';
        ctx.body = loginPage(provider.issuer, details.uid, params.client_id);
        return undefined;
      }
      if (ctx.method === 'POST' && m[2]) {
        const login = ((await readForm(ctx.req)).get('login') ?? '').trim();
        if (!login) {
          ctx.status = 400;
          ctx.type = 'html';
          ctx.body = loginPage(provider.issuer, details.uid, params.client_id, 'Enter a login name.');
          return undefined;
        }
        // Login and consent in one go: the resume then goes straight to the redirect_uri.
        const grantId = await autoGrant(provider, { ...details, grantId: undefined }, login);
        const to = await provider.interactionResult(ctx.req, ctx.res, {
          login: { accountId: login },
          consent: { grantId },
        }, { mergeWithLastSubmission: false });
        ctx.status = 303;
        return ctx.redirect(to);
      }
      ctx.throw(405);
    } catch (err) {
      ctx.status = err.status ?? 400;
      ctx.type = 'text';
      ctx.body = `interaction error: ${err.error_description ?? err.message}`;
    }
    return undefined;
  };
}

// issAuthResp: false. The library adds `iss` to every authorization response (success and
// error, each response mode) and to discovery, with no switch: take them out of the answer.
function withoutIss(ctx) {
  if (ctx.path.startsWith('/.well-known/') && ctx.body && typeof ctx.body === 'object') {
    delete ctx.body.authorization_response_iss_parameter_supported;
    return;
  }
  if (!/^\/authorize(\/|$)/.test(ctx.path)) return;
  const location = ctx.response.get('Location');
  if (location && /^https?:\/\//i.test(location)) { // query and fragment modes
    const url = new URL(location);
    const fragment = new URLSearchParams(url.hash.slice(1));
    if (!url.searchParams.has('iss') && !fragment.has('iss')) return;
    if (url.searchParams.has('iss')) url.searchParams.delete('iss');
    if (fragment.has('iss')) {
      fragment.delete('iss');
      url.hash = fragment.toString();
    }
    ctx.redirect(url.href); // keeps the status (303), redoes the "Redirecting to" body
  } else if (ctx.response.is('html') && typeof ctx.body === 'string') { // form_post
    ctx.body = ctx.body.replace(/\s*<input type="hidden" name="iss" value="[^"]*"\/>/g, '');
  }
}

// ---- Provider ---------------------------------------------------------------------------
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
let keys;

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    adapter: SharedAdapter,
    clients,
    clientDefaults: { id_token_signed_response_alg: signingAlgs[0] },
    jwks: { keys },
    cookies: { keys: cookieKeys },
    findAccount,
    scopes: ['openid', 'offline_access', ...apiScopes],
    claims: {
      openid: ['sub', ...(bigClaimBytes > 0 ? ['big'] : [])],
      profile: ['name', 'given_name', 'family_name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    conformIdTokenClaims: false, // scope claims go into the ID token even with an access token
    pkce: { required: () => true }, // S256 is the only method v9 supports
    // Default is offline_access (+ prompt=consent) only; the BFF must get one whenever allowed.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // The library default rotates for public clients always, but for confidential clients
    // only after 70% of the token's life: force rotation on every refresh.
    rotateRefreshToken: true,
    routes: {
      authorization: '/authorize',
      token: '/token',
      jwks: '/jwks',
      userinfo: '/userinfo',
      revocation: '/revoke',
      introspection: '/introspect',
      end_session: '/signoff',
      pushed_authorization_request: '/par',
    },
    // Back-channel logout POSTs go through a dispatcher that refuses special-use addresses
    // (SSRF guard), loopback included; here every RP is on loopback, so use plain fetch.
    fetch: (url, { dispatcher: _ssrfGuard, ...options }) => globalThis.fetch(url, options),
    interactions: { url: (ctx, interaction) => `${prefix}/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
      pushedAuthorizationRequests: { enabled: parEnabled, requirePushedAuthorizationRequests: requirePar },
      dPoP: dpopEnabled
        ? { enabled: true, nonceSecret: dpopNonceSecret, requireNonce: () => dpopNonceRequired }
        : { enabled: false },
      // RFC 8707: any absolute URI is a resource server offering apiScopes; its access tokens
      // are JWTs whose `aud` is that URI.
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => ({
          scope: apiScopes.join(' '),
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: signingAlgs[0] } },
        }),
      },
    },
    ttl: {
      AccessToken: accessTokenTtl,
      IdToken: idTokenTtl,
      RefreshToken: refreshTokenTtl,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: Math.max(14 * DAY, refreshTokenTtl),
      Grant: Math.max(14 * DAY, refreshTokenTtl),
    },
  });
  provider.registerGrantType(TOKEN_EXCHANGE, exchangeGrant(issuer), [
    'subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
  ]);
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type === TOKEN_EXCHANGE ? 'token_exchange' : ctx.oidc.params.grant_type;
    events.grants[type] = (events.grants[type] ?? 0) + 1;
    remember(ctx.body);
  });
  provider.on('end_session.success', () => { events.end_sessions += 1; });
  provider.on('backchannel.success', (ctx, client, sub) => {
    console.error(`back-channel logout delivered to ${client.clientId} (sub ${sub})`);
  });
  provider.on('backchannel.error', (ctx, err, client) => {
    console.error(`back-channel logout to ${client.clientId} failed: ${err.message}`);
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  // v9 emits no revocation.success / introspection.success: count answered requests.
  provider.use(async (ctx, next) => {
    await next();
    if (!issAuthResp) withoutIss(ctx);
    if (ctx.path === '/token' && ctx.method === 'POST') {
      countTokenRequest(ctx.oidc?.params?.grant_type ?? ctx.oidc?.body?.grant_type);
    }
    if (ctx.path === '/authorize' || ctx.path === '/par' || ctx.path === '/token') {
      // A PAR refused by the test switch never reached the library: its form is in ctx.state.
      const params = ctx.oidc?.params ?? ctx.state.refusedPar ?? {};
      const body = ctx.oidc?.body ?? ctx.state.refusedPar ?? {};
      record({ ...requestFacts(ctx, params, body), status: ctx.status });
    }
    // The library hands out a fresh DPoP-Nonce with every answer to a proof once nonces exist.
    // While none are demanded, successful answers carry none: a client then learns its first
    // nonce from a challenge, so the switch makes the next proof without one fail for sure.
    if (!dpopNonceRequired && ctx.status < 400) ctx.remove('DPoP-Nonce');
    if (ctx.status !== 200 || ctx.method !== 'POST') return;
    if (ctx.path === '/revoke') events.revocations += 1;
    if (ctx.path === '/introspect') events.introspections += 1;
  });
  // POST /__test/refuse-par: the PAR endpoint answers as an IdP that refuses the request.
  provider.use(async (ctx, next) => {
    if (!(refusePar && parEnabled && ctx.method === 'POST' && ctx.path === '/par')) return next();
    const form = await readForm(ctx.req);
    ctx.state.refusedPar = Object.fromEntries(form);
    ctx.status = 400;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { error: 'invalid_request', error_description: 'PAR refused (test switch)' };
    return undefined;
  });
  provider.use(interactions(provider));
  return { provider, handler: provider.callback() };
}

// ---- RFC 8693 token exchange ------------------------------------------------------------
// The subject token must be an unexpired access token this IdP issued to the same client; the
// new token is a JWT for the requested resource (or audience), with the requested scopes, each
// of which the subject token must hold (down-scoping only).
// DPoP (RFC 9449 §5): a request with a DPoP header has its proof validated exactly as the
// library's own grants do (invalid proof: 400 invalid_dpop_proof; nonce wanted: 400
// use_dpop_nonce + DPoP-Nonce; replayed jti: invalid_grant) and gets a token bound to the
// proof's key (cnf.jkt, token_type DPoP). A DPoP-bound subject token is exchanged only with a
// proof of its own key (else invalid_grant).
let refuseExchanges = false;
async function subjectOf(provider, token) {
  const opaque = await provider.AccessToken.find(token);
  if (opaque && !opaque.isExpired) {
    return {
      sub: opaque.accountId, clientId: opaque.clientId, scopes: new Set(opaque.scope.split(' ')), jkt: opaque.jkt,
    };
  }
  const jwt = jwtAccessTokens.get(token);
  if (!jwt || jwt.exp * 1000 <= Date.now()) return undefined;
  return {
    sub: jwt.sub, clientId: jwt.client_id, scopes: new Set((jwt.scope ?? '').split(' ')), jkt: jwt.cnf?.jkt,
  };
}
function exchangeGrant(iss) {
  return async (ctx) => {
    const { params, client } = ctx.oidc;
    if (refuseExchanges) throw new errors.InvalidGrant('token exchange refused (test switch)');
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('subject_token_type must be an access token');
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('only access tokens are issued');
    }
    // Before the subject token is looked at, as the library's grants do: a nonce challenge or a
    // bad proof spends nothing.
    const dPoP = await validateDpop(ctx.oidc.provider, ctx);
    const subject = await subjectOf(ctx.oidc.provider, params.subject_token ?? '');
    if (!subject || subject.clientId !== client.clientId) throw new errors.InvalidGrant('subject token is not valid');
    if (subject.jkt && !dPoP) throw new errors.InvalidGrant('the subject token is DPoP-bound: a DPoP proof is required');
    if (subject.jkt && subject.jkt !== dPoP.thumbprint) {
      throw new errors.InvalidGrant('DPoP proof key does not match the subject token\'s binding');
    }
    if (dPoP) await checkDpopReplay(ctx.oidc.provider, ctx, dPoP, client.clientId, errors.InvalidGrant);
    const asked = params.scope ? params.scope.split(' ') : [...subject.scopes].filter((s) => apiScopes.includes(s));
    const beyond = asked.filter((s) => !subject.scopes.has(s));
    if (beyond.length) throw new errors.InvalidScope('scope beyond the subject token', beyond.join(' '));
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss, sub: subject.sub, aud: params.resource ?? params.audience ?? client.clientId, client_id: client.clientId,
      scope: asked.join(' '), iat: now, exp: now + exchangeTtl, jti: crypto.randomBytes(12).toString('base64url'),
      ...(params.audience && params.resource ? { audience: params.audience } : {}),
      ...(dPoP ? { cnf: { jkt: dPoP.thumbprint } } : {}),
    };
    const accessToken = signJwt(keys[0], { typ: 'at+jwt' }, payload);
    ctx.body = {
      access_token: accessToken, issued_token_type: ACCESS_TOKEN_TYPE, token_type: dPoP ? 'DPoP' : 'Bearer',
      expires_in: exchangeTtl, scope: payload.scope,
    };
  };
}

// ---- /__test control endpoints -----------------------------------------------------------
let current; // { provider, handler }, swapped by rotate-keys
let tokenOutage = false;
let refusePar = false;
let issuer;

async function revokeRefreshTokens() {
  let revoked = 0;
  const grantIds = new Set();
  for (const key of store.keys().filter((k) => k.startsWith('RefreshToken:'))) {
    const payload = store.get(key);
    if (!payload) continue; // removed with an earlier grant in this loop
    if (!payload.consumed) revoked += 1; // count live tokens, not rotated-away ones
    if (payload.grantId) grantIds.add(payload.grantId);
    store.delete(key);
  }
  const rt = new SharedAdapter('RefreshToken');
  const grant = new SharedAdapter('Grant');
  for (const id of grantIds) {
    await rt.revokeByGrantId(id); // its access tokens and codes go too
    await grant.destroy(id);
  }
  return revoked;
}

function signJwt(key, header, payload) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = Buffer.from(`${enc({ alg: key.alg, kid: key.kid, ...header })}.${enc(payload)}`);
  const { kid: _kid, alg: _alg, use: _use, ...jwk } = key;
  const pk = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const opts = {
    RS256: pk,
    PS256: { key: pk, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
    ES256: { key: pk, dsaEncoding: 'ieee-p1363' },
  }[key.alg];
  return `${input}.${crypto.sign('sha256', input, opts).toString('base64url')}`;
}

async function control(req, res) {
  const json = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const route = `${req.method} ${req.url.split('?')[0]}`;
  switch (route) {
    case 'GET /__test/events': return json(200, events);
    case 'GET /__test/issued-tokens': return json(200, issued);
    case 'GET /__test/requests': return json(200, requests);
    // Every token exchange answered with invalid_grant until DELETE.
    case 'POST /__test/refuse-exchanges':
      refuseExchanges = true;
      return json(200, { refuse_exchanges: true });
    case 'DELETE /__test/refuse-exchanges':
      refuseExchanges = false;
      return json(200, { refuse_exchanges: false });
    // Every PAR answered 400 invalid_request until DELETE.
    case 'POST /__test/refuse-par':
      refusePar = true;
      return json(200, { refuse_par: true });
    case 'DELETE /__test/refuse-par':
      refusePar = false;
      return json(200, { refuse_par: false });
    // DPoP proofs (token endpoint, PAR, userinfo) must carry a current server nonce until DELETE.
    case 'POST /__test/dpop-nonce':
      if (!dpopEnabled) return json(409, { error: 'dpop_disabled' });
      dpopNonceRequired = true;
      return json(200, { dpop_nonce: true });
    case 'DELETE /__test/dpop-nonce':
      dpopNonceRequired = false;
      return json(200, { dpop_nonce: false });
    case 'POST /__test/rotate-keys':
      keys = await generateKeys();
      current = buildProvider(issuer);
      return json(200, { kids: keys.map((k) => k.kid) });
    case 'POST /__test/revoke-refresh-tokens':
      return json(200, { revoked: await revokeRefreshTokens() });
    // Simulated outage of the token endpoint (503), for "IdP down during refresh" tests.
    case 'POST /__test/outage':
      tokenOutage = true;
      return json(200, { outage: true });
    case 'DELETE /__test/outage':
      tokenOutage = false;
      return json(200, { outage: false });
    // Sign an arbitrary JWT with the IdP's current first key (header members may be
    // overridden): crafted logout tokens for the back-channel logout tests.
    case 'POST /__test/sign': {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const { header = {}, payload } = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      return json(200, { jwt: signJwt(keys[0], header, payload) });
    }
    case 'GET /__test/config':
      return json(200, {
        issuer, port: server.address().port, envId, accessTokenTtl, idTokenTtl, refreshTokenTtl,
        bigClaimBytes, signingAlgs, apiScopes, exchangeTtl, kids: keys.map((k) => k.kid),
        par: parEnabled, requirePar, dpop: dpopEnabled, dpopNonce: dpopNonceRequired, issAuthResp,
        clients: clients.map(({ client_secret: _secret, ...c }) => c),
      });
    default: return json(404, { error: 'not_found' });
  }
}

// ---- HTTP server ------------------------------------------------------------------------
const server = http.createServer((req, res) => {
  const { url } = req;
  if (url.startsWith('/__test/')) {
    control(req, res).catch((err) => { console.error(err); res.writeHead(500).end(); });
  } else if (tokenOutage && url.split('?')[0] === `${prefix}/token`) {
    // Never reaches the provider, but it did reach the token endpoint: count it too.
    const unavailable = (form) => {
      if (req.method === 'POST') countTokenRequest(form?.get('grant_type'));
      res.writeHead(503, { 'content-type': 'text/plain' }).end('unavailable\n');
    };
    readForm(req).then(unavailable, () => unavailable(undefined));
  } else if (current && (url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`) || url === prefix)) {
    // Mount the way express does: oidc-provider derives its mount path from
    // req.originalUrl minus req.url, so every URL it generates carries the prefix.
    req.originalUrl = url;
    req.url = url.slice(prefix.length) || '/';
    current.handler(req, res);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// A parent test process that dies closes our stdin: exit with it. Only for pipes/sockets:
// a /dev/null or file stdin (e.g. `node server.js &` in a script) ends at once.
const stdin = fs.fstatSync(0);
if (!process.stdin.isTTY && (stdin.isFIFO() || stdin.isSocket())) {
  process.stdin.on('end', shutdown).on('close', shutdown).resume();
}

server.on('error', (err) => die(`cannot listen on 127.0.0.1:${port}: ${err.message}`));
keys = await generateKeys();
server.listen(port, '127.0.0.1', async () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}${prefix}`;
  current = buildProvider(issuer); // the issuer needs the port, known only now
  try { // oidc-provider validates static clients lazily: fail now, not at the first login
    for (const { client_id: id } of clients) await current.provider.Client.find(id);
  } catch (err) {
    die(`invalid client in IDP_CONFIG: ${err.error_description ?? err.message}`);
  }
  process.stdout.write(`${JSON.stringify({ ready: true, issuer, port: actual })}\n`);
});
