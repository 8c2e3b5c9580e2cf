-- Why a run failed, as a closed set of kinds (src/failure.rs, FailureKind), next to the error
-- text: quota, re-authorisation, rate limits, outages and bad answers told apart in etl.runs,
-- etl.freshness and the metrics. Every failed or interrupted run has one; no other run has one.

ALTER TABLE etl.runs ADD COLUMN error_kind text;

-- Runs that failed before kinds existed: their kind cannot be told from the text reliably.
UPDATE etl.runs SET error_kind = 'unknown' WHERE status IN ('failed', 'interrupted');

ALTER TABLE etl.runs
    ADD CONSTRAINT runs_error_kind_known CHECK (error_kind IN ('quota', 'rate_limited', 'reauthorise', 'unauthorised', 'upstream_unavailable', 'upstream_rejected', 'scope_refused', 'timeout', 'invalid_answer', 'schema_mismatch', 'database', 'lock_lost', 'cancelled', 'process_died', 'config', 'internal', 'unknown')),
    ADD CONSTRAINT runs_error_kind_iff_failing CHECK ((status IN ('failed', 'interrupted')) = (error_kind IS NOT NULL));

COMMENT ON COLUMN etl.runs.error_kind IS 'Why a failed or interrupted run did not succeed (NULL for every other status): quota (daily quota spent), rate_limited (429s or a wait beyond rate_budget.max_wait_secs), reauthorise (run auth login), unauthorised (credentials refused), upstream_unavailable (unreachable or 5xx through the retries), upstream_rejected (HTTP 400/403/404 or a redirect), scope_refused (the scope is unknown to the vendor), timeout (window_deadline_secs), invalid_answer (an unusable answer or paging), schema_mismatch (query and vendor schema disagree), database, lock_lost, cancelled (process stopped), process_died, config, internal (unclassified: a bug), unknown (recorded before kinds existed).';

-- The latest attempt's kind, appended to the view (CREATE OR REPLACE keeps its grants and comments).
CREATE OR REPLACE VIEW etl.freshness AS
WITH last_run AS (
    SELECT DISTINCT ON (source, dataset, scope)
           source, dataset, scope, status, error, error_kind, finished_at
    FROM etl.runs
    WHERE status <> 'skipped'
    ORDER BY source, dataset, scope, started_at DESC
)
SELECT l.source, l.dataset, l.scope,
       s.finished_at AS last_success_at,
       s.window_end AS data_until,
       now() - s.finished_at AS age,
       l.status AS last_status,
       l.error AS last_error,
       l.error_kind AS last_error_kind
FROM last_run l
LEFT JOIN etl.latest_success s USING (source, dataset, scope);
COMMENT ON COLUMN etl.freshness.last_error_kind IS 'Kind of the latest attempt''s failure (etl.runs.error_kind), if it failed or was interrupted.';
