-- Request::access_ends_at(): when access applied in the tailnet must be gone (an active
-- grant's expiry, a finished one's end); NULL when nothing is applied or its removal is
-- verified. Written on every insert and update; counts overdue revocations without reading
-- every open request.
ALTER TABLE requests ADD COLUMN access_ends_at TEXT;

-- Rows stored before this column existed, computed from their JSON the way access_ends_at()
-- does (times in the JSON are RFC 3339 to the second).
UPDATE requests SET access_ends_at = strftime('%Y-%m-%dT%H:%M:%S.000000000Z',
    CASE WHEN state IN ('pending', 'approved', 'active')
         THEN json_extract(body, '$.expires_at')
         ELSE coalesce(json_extract(body, '$.ended_at'), json_extract(body, '$.created_at'))
    END)
WHERE is_open = 1
  AND json_extract(body, '$.tailnet.applied_at') IS NOT NULL
  AND json_extract(body, '$.tailnet.removal_verified_at') IS NULL;

CREATE INDEX requests_access_ends ON requests (access_ends_at) WHERE is_open = 1;
