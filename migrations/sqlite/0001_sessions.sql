-- oidc-bff schema, SQLite (SPEC §4, §5, §6). Applied at start-up and by `oidc-bff migrate`.

-- Server-side sessions. `id` is SHA-256 of the 128-bit id the cookie carries, so a copy of
-- this table does not yield cookies; `data` is the session sealed with the session key
-- (XChaCha20-Poly1305, the row id bound as associated data), so it does not yield tokens.
CREATE TABLE bff_sessions (
    id          BLOB PRIMARY KEY,
    sub         TEXT NOT NULL,
    sid         TEXT,
    created_at  INTEGER NOT NULL,   -- unix seconds
    last_seen   INTEGER NOT NULL,   -- idle expiry slides from here
    expires_at  INTEGER NOT NULL,   -- the earlier of idle and absolute expiry (clean-up)
    version     INTEGER NOT NULL,   -- compare-and-swap on token changes
    data        TEXT NOT NULL
);
CREATE INDEX bff_sessions_sid ON bff_sessions (sid);
CREATE INDEX bff_sessions_sub ON bff_sessions (sub);
CREATE INDEX bff_sessions_expires_at ON bff_sessions (expires_at);

-- Back-channel logouts in cookie mode: `sid` ends the sessions of that IdP session; `sub`
-- the sessions of that user created at or before `iat`; `sub-nosid` those of them that carry
-- no sid. `recorded_ms` is the database's clock (replicas poll by it). Kept until the longest
-- session lifetime has passed.
CREATE TABLE bff_revocations (
    kind        TEXT NOT NULL CHECK (kind IN ('sid', 'sub', 'sub-nosid')),
    value       TEXT NOT NULL,
    iat         INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, value, iat)
);
CREATE INDEX bff_revocations_recorded ON bff_revocations (recorded_ms);

-- Single-use values already spent, shared by replicas: `jti:` + a logout token's jti,
-- `state:` + SHA-256 of a completed login state (SPEC §3.2, §5).
CREATE TABLE bff_used_ids (
    id          TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

-- Refresh results shared by replicas (SPEC §6): keyed by an HMAC of the old refresh token,
-- sealed under a key derived from that token; NULL = the IdP refused it.
CREATE TABLE bff_refresh_cache (
    id          BLOB PRIMARY KEY,
    sealed      BLOB,
    expires_at  INTEGER NOT NULL
);

-- Short refresh locks: one replica spends a refresh token, the others wait for its result.
CREATE TABLE bff_locks (
    name        BLOB PRIMARY KEY,
    owner       BLOB NOT NULL,
    expires_ms  INTEGER NOT NULL
);
