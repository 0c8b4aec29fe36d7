// Searching what a page received for tokens (SPEC §1: the browser never holds an access or
// refresh token; the only token it ever sees is the id_token_hint inside the IdP logout URL).

/** Anything shaped like a JWS compact serialisation (an ID token, a JWT access token). */
export const JWT_SHAPE = /eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}/g;

/**
 * The one permitted token: `id_token_hint` inside `logout_url` of the BFF's `POST /logout`
 * answer. Returns the body with that one value replaced, so the rest can be searched.
 */
function withoutLogoutHint(entry, app) {
  if (entry.method !== 'POST' || !entry.url.startsWith(`${app}/logout`) || !entry.body) return entry.body;
  let url;
  try {
    url = JSON.parse(entry.body).logout_url;
  } catch {
    return entry.body;
  }
  if (typeof url !== 'string') return entry.body;
  const hint = new URL(url).searchParams.get('id_token_hint');
  return hint ? entry.body.split(hint).join('<id_token_hint>') : entry.body;
}

/**
 * Every place in `entries` (from recordResponses) where one of the `issued` tokens (from the
 * IdP's /__test/issued-tokens) or a JWT-shaped string appears, in headers or bodies.
 */
export function tokensIn(entries, issued, app) {
  const secrets = [
    ...issued.access_tokens.map((t) => ['access token', t]),
    ...issued.refresh_tokens.map((t) => ['refresh token', t]),
    ...issued.id_tokens.map((t) => ['ID token', t]),
  ];
  const found = [];
  for (const entry of entries) {
    const places = [
      ['headers', JSON.stringify(entry.headers)],
      ['body', withoutLogoutHint(entry, app) ?? ''],
    ];
    for (const [where, text] of places) {
      for (const [kind, value] of secrets) {
        if (text.includes(value)) found.push(`${kind} in the ${where} of ${entry.method} ${entry.url}`);
      }
      for (const m of text.match(JWT_SHAPE) ?? []) {
        found.push(`JWT-shaped ${m.slice(0, 20)}… in the ${where} of ${entry.method} ${entry.url}`);
      }
    }
  }
  return found;
}

/** Tokens or JWT-shaped strings in any string of `value` (storage dumps, cookies). */
export function tokensInText(text, issued) {
  const all = [...issued.access_tokens, ...issued.refresh_tokens, ...issued.id_tokens];
  return [...all.filter((t) => text.includes(t)), ...(text.match(JWT_SHAPE) ?? [])];
}

/**
 * The whole check, for the end of a test file: no issued token and nothing JWT-shaped in any
 * recorded response (but the logout hint) or storage snapshot; document.cookie never shows a
 * BFF cookie; web storage stays empty. Returns the problems found (empty = pass).
 */
export function tokenLeaks({ seen, issued, app, snapshots }) {
  const problems = tokensIn(seen, issued, app);
  for (const s of snapshots) {
    if (/(^|;\s*)bff/.test(s.cookie)) problems.push(`document.cookie shows a BFF cookie: ${s.cookie}`);
    for (const t of tokensInText(JSON.stringify(s), issued)) problems.push(`token in page storage: ${t.slice(0, 12)}…`);
    if (Object.keys(s.local).length) problems.push(`localStorage is not empty: ${Object.keys(s.local)}`);
    if (Object.keys(s.session).length) problems.push(`sessionStorage is not empty: ${Object.keys(s.session)}`);
  }
  return problems;
}
