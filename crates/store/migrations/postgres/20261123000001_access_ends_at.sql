-- Request::access_ends_at(): when access applied in the tailnet must be gone (an active
-- grant's expiry, a finished one's end); NULL when nothing is applied or its removal is
-- verified. Written on every insert and update; counts overdue revocations without reading
-- every open request.
ALTER TABLE requests ADD COLUMN access_ends_at TIMESTAMPTZ;

-- Rows stored before this column existed, computed from their JSON the way access_ends_at()
-- does.
UPDATE requests SET access_ends_at = CAST(
    CASE WHEN state IN ('pending', 'approved', 'active')
         THEN body::jsonb ->> 'expires_at'
         ELSE coalesce(body::jsonb ->> 'ended_at', body::jsonb ->> 'created_at')
    END AS TIMESTAMPTZ)
WHERE is_open
  AND body::jsonb -> 'tailnet' ->> 'applied_at' IS NOT NULL
  AND body::jsonb -> 'tailnet' ->> 'removal_verified_at' IS NULL;

CREATE INDEX requests_access_ends ON requests (access_ends_at) WHERE is_open;
