-- Outbound deliveries (a webhook endpoint, e-mail, Slack): one event to one channel, kept
-- until delivered or given up, so a restart (or a new leader) sends what was not yet sent.
CREATE TABLE tidegate_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_at    TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state      TEXT NOT NULL DEFAULT 'pending',
    done_at    TEXT,
    UNIQUE (channel, event_id)
);
CREATE INDEX tidegate_outbox_due ON tidegate_outbox (state, next_at);
CREATE INDEX tidegate_outbox_channel ON tidegate_outbox (channel, id);
