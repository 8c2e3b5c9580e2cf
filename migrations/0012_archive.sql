-- The raw archive (issue 29): every answer a window's load used, compressed, committed with the
-- window's swap, so that a mapping can be re-derived later without asking the vendor again
-- (`reporting-etl rebuild`). Expand only (docs/migrations.md): new schema, new tables, a wider
-- CHECK the previous release's writes satisfy, and views keeping their columns in order.

CREATE SCHEMA IF NOT EXISTS archive;
COMMENT ON SCHEMA archive IS 'reporting-etl''s raw archive: every upstream answer a committed window''s load used, compressed, for rebuilds (reporting-etl rebuild).';

CREATE TABLE archive.windows (
    run_id        bigint PRIMARY KEY,
    job           text NOT NULL,
    source        text NOT NULL,
    dataset       text NOT NULL,
    scope         text NOT NULL,
    scope_target  jsonb NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz,
    pages         integer NOT NULL CHECK (pages >= 0),
    raw_bytes     bigint NOT NULL CHECK (raw_bytes >= 0),
    stored_bytes  bigint NOT NULL CHECK (stored_bytes >= 0),
    archived_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (window_end IS NULL OR window_start IS NULL OR window_start < window_end)
);
CREATE INDEX windows_job_window ON archive.windows (job, scope, window_start, window_end, run_id);
CREATE INDEX windows_source_dataset ON archive.windows (source, dataset, scope);
CREATE INDEX windows_archived_at ON archive.windows (source, archived_at);
COMMENT ON TABLE archive.windows IS 'One row per committed window whose answers were archived (written in the window''s own transaction, with its pages).';
COMMENT ON COLUMN archive.windows.run_id IS 'The run that loaded the window (etl.runs.id); its data rows carried it as _run_id.';
COMMENT ON COLUMN archive.windows.job IS 'Configured job name.';
COMMENT ON COLUMN archive.windows.source IS 'Configured source name.';
COMMENT ON COLUMN archive.windows.dataset IS 'Dataset name.';
COMMENT ON COLUMN archive.windows.scope IS 'Scope id, as in etl.runs.scope.';
COMMENT ON COLUMN archive.windows.scope_target IS 'The scope as the load was given it (e.g. a Roubler location with its company and time zone), so a rebuild needs no discovery call.';
COMMENT ON COLUMN archive.windows.window_start IS 'Start of the loaded window (inclusive, UTC); NULL for snapshots.';
COMMENT ON COLUMN archive.windows.window_end IS 'End of the loaded window (exclusive, UTC); NULL for snapshots.';
COMMENT ON COLUMN archive.windows.pages IS 'Answers archived for the window (archive.pages rows).';
COMMENT ON COLUMN archive.windows.raw_bytes IS 'Bytes of the answers as received (after transport decoding).';
COMMENT ON COLUMN archive.windows.stored_bytes IS 'Bytes of the answers as stored (zstd frames).';
COMMENT ON COLUMN archive.windows.archived_at IS 'When the window committed; sources.NAME.archive.keep_days counts from here.';

CREATE TABLE archive.pages (
    run_id        bigint NOT NULL REFERENCES archive.windows (run_id) ON DELETE CASCADE,
    page          integer NOT NULL CHECK (page >= 1),
    query_name    text NOT NULL,
    query_sha256  bytea NOT NULL CHECK (length(query_sha256) = 32),
    raw_bytes     integer NOT NULL CHECK (raw_bytes >= 0),
    body          bytea NOT NULL,
    PRIMARY KEY (run_id, page)
);
-- The body is a zstd frame already: TOAST need not try to compress it again.
ALTER TABLE archive.pages ALTER COLUMN body SET STORAGE EXTERNAL;
COMMENT ON TABLE archive.pages IS 'Every upstream answer a committed window''s load used, in the order the load used them.';
COMMENT ON COLUMN archive.pages.run_id IS 'The window (archive.windows.run_id).';
COMMENT ON COLUMN archive.pages.page IS 'Order in which the load used the answer, from 1.';
COMMENT ON COLUMN archive.pages.query_name IS 'The query asked: a GraphQL operation name, or a REST method and path.';
COMMENT ON COLUMN archive.pages.query_sha256 IS 'SHA-256 of the query''s text (the GraphQL document, or the REST method and path) as compiled into the binary that asked.';
COMMENT ON COLUMN archive.pages.raw_bytes IS 'Length of the answer as received (after transport decoding).';
COMMENT ON COLUMN archive.pages.body IS 'The answer''s body as received (after transport decoding), as one zstd frame.';

-- A rebuild is recorded like a load, with its own trigger.
ALTER TABLE etl.runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE etl.runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('schedule', 'once', 'backfill', 'demo', 'rebuild')) NOT VALID;
ALTER TABLE etl.runs VALIDATE CONSTRAINT runs_trigger_check;
COMMENT ON COLUMN etl.runs.trigger IS 'What started the run: schedule, once (run --once), backfill (run --once --from/--to), demo, or rebuild (reporting-etl rebuild: re-derived from the archive, no upstream call).';

-- Freshness is about the vendor's data: a rebuild re-derives old answers and makes nothing
-- fresher, so it is neither a latest success nor a latest attempt. The archive's size per
-- dataset and scope is appended.
CREATE OR REPLACE VIEW etl.latest_success AS
SELECT DISTINCT ON (source, dataset, scope)
       source, dataset, scope, job, id AS run_id, window_start, window_end,
       rows_written, finished_at
FROM etl.runs
WHERE status = 'succeeded' AND trigger <> 'rebuild'
ORDER BY source, dataset, scope, finished_at DESC;

CREATE OR REPLACE VIEW etl.freshness AS
WITH last_run AS (
    SELECT DISTINCT ON (source, dataset, scope)
           source, dataset, scope, status, error, error_kind, finished_at
    FROM etl.runs
    WHERE status <> 'skipped' AND trigger <> 'rebuild'
    ORDER BY source, dataset, scope, started_at DESC
),
archived AS (
    SELECT source, dataset, scope, sum(stored_bytes)::bigint AS archive_bytes
    FROM archive.windows
    GROUP BY source, dataset, scope
)
SELECT l.source, l.dataset, l.scope,
       s.finished_at AS last_success_at,
       s.window_end AS data_until,
       now() - s.finished_at AS age,
       l.status AS last_status,
       l.error AS last_error,
       l.error_kind AS last_error_kind,
       coalesce(a.archive_bytes, 0) AS archive_bytes
FROM last_run l
LEFT JOIN etl.latest_success s USING (source, dataset, scope)
LEFT JOIN archived a USING (source, dataset, scope);
COMMENT ON VIEW etl.latest_success IS 'The latest successful load of each dataset and scope (rebuilds excluded: they re-derive old answers).';
COMMENT ON VIEW etl.freshness IS 'Per dataset and scope: when it last loaded successfully, how old that is, how the latest attempt went (rebuilds excluded), and the size of its archive.';
COMMENT ON COLUMN etl.freshness.archive_bytes IS 'Bytes the archive holds for this dataset and scope (compressed answers, archive.windows.stored_bytes).';

-- The archive's size per dataset, in `etl` beside the run records: `reporting-etl runs` and
-- /metrics read it, also with a role that may read `etl` only (a view reads with its owner's
-- rights).
CREATE VIEW etl.archive_sizes AS
SELECT source, dataset,
       count(*) AS windows,
       coalesce(sum(pages), 0)::bigint AS pages,
       coalesce(sum(raw_bytes), 0)::bigint AS raw_bytes,
       coalesce(sum(stored_bytes), 0)::bigint AS stored_bytes,
       max(archived_at) AS last_archived_at
FROM archive.windows
GROUP BY source, dataset;
COMMENT ON VIEW etl.archive_sizes IS 'Per source and dataset: how much of the raw archive (archive.windows, archive.pages) it holds.';
COMMENT ON COLUMN etl.archive_sizes.source IS 'Configured source name.';
COMMENT ON COLUMN etl.archive_sizes.dataset IS 'Dataset name.';
COMMENT ON COLUMN etl.archive_sizes.windows IS 'Committed windows whose answers are archived.';
COMMENT ON COLUMN etl.archive_sizes.pages IS 'Answers archived.';
COMMENT ON COLUMN etl.archive_sizes.raw_bytes IS 'Bytes of those answers as received.';
COMMENT ON COLUMN etl.archive_sizes.stored_bytes IS 'Bytes of those answers as stored (compressed).';
COMMENT ON COLUMN etl.archive_sizes.last_archived_at IS 'When the latest of those windows committed.';
