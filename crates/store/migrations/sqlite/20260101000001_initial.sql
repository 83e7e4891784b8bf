-- Requests: the columns the queries filter and sort on, and the whole request as JSON text.
CREATE TABLE requests (
    id          TEXT PRIMARY KEY NOT NULL,
    entitlement TEXT NOT NULL,
    requester   TEXT NOT NULL,
    state       TEXT NOT NULL,
    -- Request::open(): the reconciler still has work on it.
    is_open     INTEGER NOT NULL CHECK (is_open IN (0, 1)),
    version     INTEGER NOT NULL,
    -- UTC, fixed width (YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ), so text order is time order.
    created_at  TEXT NOT NULL,
    body        TEXT NOT NULL
) STRICT;

CREATE INDEX requests_created ON requests (created_at DESC, id DESC);
CREATE INDEX requests_open ON requests (created_at DESC, id DESC) WHERE is_open = 1;
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE INDEX requests_entitlement ON requests (entitlement, created_at DESC);

-- The audit log: seq 1, 2, 3 ... without gaps, each entry hash-chained to the one before.
-- Appends run in BEGIN IMMEDIATE transactions, so one writer at a time extends the chain.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    request   TEXT,
    -- JSON text exactly as given: it is hashed as stored.
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
) STRICT;

CREATE INDEX audit_request ON audit (request, seq) WHERE request IS NOT NULL;

-- API tokens, by the SHA-256 hex of their secret.
CREATE TABLE api_tokens (
    hash        TEXT PRIMARY KEY NOT NULL,
    user_name   TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT
) STRICT;
