-- What a stored secret is (an API token or a web session) and when it was last used, so
-- people can list and revoke their own. Sessions were told apart by their description.
ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
ALTER TABLE api_tokens ADD COLUMN last_used_at TEXT;
UPDATE api_tokens SET kind = 'session' WHERE description = 'web session';
CREATE INDEX api_tokens_user ON api_tokens (user_name);
