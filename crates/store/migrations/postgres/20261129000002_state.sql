-- Small named records tidegate keeps about itself (JSON text): a managed group's standing
-- members and whether it was adopted, the last audit chain head written out.
CREATE TABLE tidegate_state (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
