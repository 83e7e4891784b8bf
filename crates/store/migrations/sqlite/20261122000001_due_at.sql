-- Request::due_at(): when the reconciler must next look at the request (UTC, fixed width like
-- created_at); NULL once nothing is left to do. Written on every insert and update.
ALTER TABLE requests ADD COLUMN due_at TEXT;

-- Rows stored before this column existed: due at once, so the reconciler looks at each open one
-- and its next write stores the real value.
UPDATE requests SET due_at = created_at WHERE is_open = 1;

-- The due filter (is_open AND due_at <= ?) and next_due (min(due_at) of the open rows).
CREATE INDEX requests_due ON requests (due_at, id) WHERE is_open = 1;
