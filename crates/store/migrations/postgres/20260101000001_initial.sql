-- Requests: the columns the queries filter and sort on, and the whole request as JSON text.
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,
    entitlement TEXT NOT NULL,
    requester   TEXT NOT NULL,
    state       TEXT NOT NULL,
    -- Request::open(): the reconciler still has work on it.
    is_open     BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX requests_created ON requests (created_at DESC, id DESC);
CREATE INDEX requests_open ON requests (created_at DESC, id DESC) WHERE is_open;
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE INDEX requests_entitlement ON requests (entitlement, created_at DESC);

-- The audit log: seq 1, 2, 3 ... without gaps, each entry hash-chained to the one before.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY CHECK (seq > 0),
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    request   TEXT,
    -- JSON text exactly as given (not jsonb, which would reformat it): it is hashed as stored.
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);

CREATE INDEX audit_request ON audit (request, seq) WHERE request IS NOT NULL;

-- The chain head: the last entry's seq and hash. Appenders lock this one row
-- (SELECT ... FOR UPDATE) for the rest of their transaction, so the chain never forks.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- API tokens, by the SHA-256 hex of their secret.
CREATE TABLE api_tokens (
    hash        TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT
);
