-- The service's own tables: instances, run records, tokens and watermarks, plus analyst views.

CREATE SCHEMA IF NOT EXISTS etl;
COMMENT ON SCHEMA etl IS 'reporting-etl''s own bookkeeping: run records, tokens, watermarks and freshness views.';

CREATE TABLE etl.instances (
    id            uuid PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    command       text NOT NULL,
    lock_key      integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
COMMENT ON TABLE etl.instances IS 'One row per reporting-etl process that used this database. A live process holds the advisory lock (x''45544c00'', lock_key).';
COMMENT ON COLUMN etl.instances.id IS 'Random id of the process, referenced by etl.runs.instance_id.';
COMMENT ON COLUMN etl.instances.hostname IS 'Host the process ran on.';
COMMENT ON COLUMN etl.instances.pid IS 'Operating-system process id.';
COMMENT ON COLUMN etl.instances.version IS 'reporting-etl version of the process.';
COMMENT ON COLUMN etl.instances.command IS 'The CLI command the process ran (run, run --once, demo, ...).';
COMMENT ON COLUMN etl.instances.lock_key IS 'Second key of the session advisory lock the live process holds; a free lock means the process is gone.';
COMMENT ON COLUMN etl.instances.started_at IS 'When the process started.';
COMMENT ON COLUMN etl.instances.stopped_at IS 'When the process stopped cleanly; NULL while running or after a crash.';

CREATE TABLE etl.runs (
    id              bigserial PRIMARY KEY,
    job             text NOT NULL,
    source          text NOT NULL,
    dataset         text NOT NULL,
    scope           text NOT NULL,
    window_start    timestamptz,
    window_end      timestamptz,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'once', 'backfill', 'demo')),
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted', 'skipped')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    rows_written    bigint NOT NULL DEFAULT 0,
    pages           integer NOT NULL DEFAULT 0,
    upstream_calls  integer NOT NULL DEFAULT 0,
    retries         integer NOT NULL DEFAULT 0,
    throttled_ms    bigint NOT NULL DEFAULT 0,
    warnings        text,
    error           text,
    instance_id     uuid NOT NULL REFERENCES etl.instances (id),
    CHECK (window_end IS NULL OR window_start IS NULL OR window_start < window_end)
);
CREATE INDEX runs_job_started ON etl.runs (job, started_at DESC);
CREATE INDEX runs_dataset_scope ON etl.runs (source, dataset, scope, finished_at DESC) WHERE status = 'succeeded';
CREATE INDEX runs_running ON etl.runs (instance_id) WHERE status = 'running';

COMMENT ON TABLE etl.runs IS 'One row per job run and scope/window: what was loaded, when, how, and with what outcome.';
COMMENT ON COLUMN etl.runs.id IS 'Run id; every loaded data row carries it as _run_id.';
COMMENT ON COLUMN etl.runs.job IS 'Configured job name.';
COMMENT ON COLUMN etl.runs.source IS 'Configured source (upstream account) name.';
COMMENT ON COLUMN etl.runs.dataset IS 'Dataset name, e.g. fax_out_udr.';
COMMENT ON COLUMN etl.runs.scope IS 'Scope loaded: a Retarus customer id, a Roubler company or location id, an Altrata id list, or "all".';
COMMENT ON COLUMN etl.runs.window_start IS 'Start of the loaded window (inclusive, UTC); NULL for snapshots.';
COMMENT ON COLUMN etl.runs.window_end IS 'End of the loaded window (exclusive, UTC); NULL for snapshots.';
COMMENT ON COLUMN etl.runs.trigger IS 'What started the run: schedule, once (run --once), backfill (run --once --from/--to) or demo.';
COMMENT ON COLUMN etl.runs.status IS 'running, succeeded, failed, interrupted (process stopped or died mid-run; nothing of it was committed) or skipped (previous run still going).';
COMMENT ON COLUMN etl.runs.started_at IS 'When the run started.';
COMMENT ON COLUMN etl.runs.finished_at IS 'When the run ended; NULL while running.';
COMMENT ON COLUMN etl.runs.rows_written IS 'Rows written to the dataset table for this scope and window.';
COMMENT ON COLUMN etl.runs.pages IS 'Pages fetched from the upstream.';
COMMENT ON COLUMN etl.runs.upstream_calls IS 'HTTP calls sent to the upstream (retries included, token requests excluded).';
COMMENT ON COLUMN etl.runs.retries IS 'Calls repeated after a transient fault.';
COMMENT ON COLUMN etl.runs.throttled_ms IS 'Milliseconds spent waiting for rate-limit budget.';
COMMENT ON COLUMN etl.runs.warnings IS 'Non-fatal upstream notes, e.g. fields withheld by the subscription.';
COMMENT ON COLUMN etl.runs.error IS 'Why the run failed or was interrupted; never contains secrets.';
COMMENT ON COLUMN etl.runs.instance_id IS 'The process that ran it (etl.instances.id).';

CREATE TABLE etl.tokens (
    source                  text PRIMARY KEY,
    flow                    text NOT NULL,
    access_token            text,
    access_expires_at       timestamptz,
    refresh_token           bytea,
    refresh_token_encrypted boolean NOT NULL DEFAULT false,
    version                 bigint NOT NULL DEFAULT 0,
    chain_started_at        timestamptz,
    last_refresh_at         timestamptz,
    status                  text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'reauthorize')),
    status_reason           text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE etl.tokens IS 'Current tokens per source, shared by every process on this database. Secret: never expose to analysts.';
COMMENT ON COLUMN etl.tokens.source IS 'Configured source name.';
COMMENT ON COLUMN etl.tokens.flow IS 'Auth flow that produced the token.';
COMMENT ON COLUMN etl.tokens.access_token IS 'Current access token (secret).';
COMMENT ON COLUMN etl.tokens.access_expires_at IS 'When the access token expires.';
COMMENT ON COLUMN etl.tokens.refresh_token IS 'Current refresh token (secret; encrypted when a token key is configured).';
COMMENT ON COLUMN etl.tokens.refresh_token_encrypted IS 'Whether refresh_token is encrypted (ChaCha20-Poly1305).';
COMMENT ON COLUMN etl.tokens.version IS 'Incremented on every change; lets a process tell whether another one replaced the token.';
COMMENT ON COLUMN etl.tokens.chain_started_at IS 'When the refresh-token chain began (the last authorisation).';
COMMENT ON COLUMN etl.tokens.last_refresh_at IS 'When the token was last refreshed or fetched.';
COMMENT ON COLUMN etl.tokens.status IS 'ok, or reauthorize when the vendor refused the refresh token and a person must run auth login.';
COMMENT ON COLUMN etl.tokens.status_reason IS 'Why re-authorisation is needed.';
COMMENT ON COLUMN etl.tokens.updated_at IS 'Last change.';

CREATE TABLE etl.watermarks (
    job            text NOT NULL,
    scope          text NOT NULL,
    high_water     timestamptz NOT NULL,
    state_version  integer NOT NULL DEFAULT 1,
    last_run_id    bigint REFERENCES etl.runs (id),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, scope)
);
COMMENT ON TABLE etl.watermarks IS 'Per job and scope: everything before high_water has been loaded by the forward (incremental) schedule.';
COMMENT ON COLUMN etl.watermarks.job IS 'Configured job name.';
COMMENT ON COLUMN etl.watermarks.scope IS 'Scope id.';
COMMENT ON COLUMN etl.watermarks.high_water IS 'End (exclusive, UTC) of the last window loaded.';
COMMENT ON COLUMN etl.watermarks.state_version IS 'Format version of this state, so a future change can migrate it.';
COMMENT ON COLUMN etl.watermarks.last_run_id IS 'Run that moved the watermark.';
COMMENT ON COLUMN etl.watermarks.updated_at IS 'Last change.';

CREATE VIEW etl.latest_success AS
SELECT DISTINCT ON (source, dataset, scope)
       source, dataset, scope, job, id AS run_id, window_start, window_end,
       rows_written, finished_at
FROM etl.runs
WHERE status = 'succeeded'
ORDER BY source, dataset, scope, finished_at DESC;
COMMENT ON VIEW etl.latest_success IS 'The latest successful load of each dataset and scope.';

CREATE VIEW etl.freshness AS
WITH last_run AS (
    SELECT DISTINCT ON (source, dataset, scope)
           source, dataset, scope, status, error, finished_at
    FROM etl.runs
    WHERE status <> 'skipped'
    ORDER BY source, dataset, scope, started_at DESC
)
SELECT l.source, l.dataset, l.scope,
       s.finished_at AS last_success_at,
       s.window_end AS data_until,
       now() - s.finished_at AS age,
       l.status AS last_status,
       l.error AS last_error
FROM last_run l
LEFT JOIN etl.latest_success s USING (source, dataset, scope);
COMMENT ON VIEW etl.freshness IS 'Per dataset and scope: when it last loaded successfully, how old that is, and how the latest attempt went.';
COMMENT ON COLUMN etl.latest_success.source IS 'Configured source name.';
COMMENT ON COLUMN etl.latest_success.dataset IS 'Dataset name.';
COMMENT ON COLUMN etl.latest_success.scope IS 'Scope id.';
COMMENT ON COLUMN etl.latest_success.job IS 'Job that ran the load.';
COMMENT ON COLUMN etl.latest_success.run_id IS 'The run (etl.runs.id); data rows carry it as _run_id.';
COMMENT ON COLUMN etl.latest_success.window_start IS 'Start of the loaded window (UTC); NULL for snapshots.';
COMMENT ON COLUMN etl.latest_success.window_end IS 'End of the loaded window (UTC, exclusive); NULL for snapshots.';
COMMENT ON COLUMN etl.latest_success.rows_written IS 'Rows the load wrote.';
COMMENT ON COLUMN etl.latest_success.finished_at IS 'When the load committed.';
COMMENT ON COLUMN etl.freshness.source IS 'Configured source name.';
COMMENT ON COLUMN etl.freshness.dataset IS 'Dataset name.';
COMMENT ON COLUMN etl.freshness.scope IS 'Scope id.';
COMMENT ON COLUMN etl.freshness.last_success_at IS 'When the latest successful load committed; NULL if none yet.';
COMMENT ON COLUMN etl.freshness.data_until IS 'End of the window the latest successful load covered (UTC).';
COMMENT ON COLUMN etl.freshness.age IS 'Time since the latest successful load.';
COMMENT ON COLUMN etl.freshness.last_status IS 'Outcome of the latest attempt (skipped runs ignored).';
COMMENT ON COLUMN etl.freshness.last_error IS 'Error of the latest attempt, if it failed.';
