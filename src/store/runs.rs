//! Run records (`etl.runs`): one row per job run and scope/window, from `running` to its outcome.
//!
//! A run's final figures are written in the same transaction as its data (see the loader), so
//! a run is `succeeded` exactly when its rows are visible.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::failure::FailureKind;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Once,
    Backfill,
    Demo,
    /// `reporting-etl rebuild`: windows re-derived from the archive, no upstream call.
    Rebuild,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Once => "once",
            Trigger::Backfill => "backfill",
            Trigger::Demo => "demo",
            Trigger::Rebuild => "rebuild",
        }
    }
}

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    Skipped,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// Identifies what a run loads.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub job: &'a str,
    pub source: &'a str,
    pub dataset: &'a str,
    pub scope: &'a str,
    /// `[start, end)` in UTC; `None` for snapshots.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub trigger: Trigger,
}

/// The figures a run accumulates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFigures {
    pub rows_written: i64,
    pub pages: i32,
    /// Every request sent upstream: the sum of the four kinds below.
    pub upstream_calls: i32,
    pub retries: i32,
    pub throttled_ms: i64,
    /// Non-fatal notes (e.g. fields the subscription withholds), joined with "; ".
    pub warnings: Vec<String>,
    /// What the calls were for (see [`CallBreakdown`]).
    pub calls: CallBreakdown,
}

/// What a run's upstream requests were for. Their sum is the run's `upstream_calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallBreakdown {
    /// First attempts of requests for the dataset's records.
    pub data: i32,
    /// First attempts of scope-discovery requests (Roubler `viewer` and `locations`).
    pub discovery: i32,
    /// Token-endpoint requests.
    pub token: i32,
    /// Requests repeating an earlier attempt of a data or discovery call.
    pub retry: i32,
}

impl CallBreakdown {
    /// All of them: what `upstream_calls` records.
    pub(crate) fn total(&self) -> i32 {
        self.data
            .saturating_add(self.discovery)
            .saturating_add(self.token)
            .saturating_add(self.retry)
    }
}

impl RunFigures {
    fn warnings_text(&self) -> Option<String> {
        (!self.warnings.is_empty()).then(|| self.warnings.join("; "))
    }
}

/// Inserts a `running` record and returns its id.
pub async fn start(pool: &PgPool, instance: Uuid, run: &NewRun<'_>) -> Result<i64> {
    insert(pool, instance, run, RunStatus::Running, None).await
}

/// Records a run that did not start because the previous one of the job is still going.
pub(crate) async fn record_skipped(
    pool: &PgPool,
    instance: Uuid,
    run: &NewRun<'_>,
    reason: &str,
) -> Result<i64> {
    insert(pool, instance, run, RunStatus::Skipped, Some(reason)).await
}

async fn insert(
    pool: &PgPool,
    instance: Uuid,
    run: &NewRun<'_>,
    status: RunStatus,
    error: Option<&str>,
) -> Result<i64> {
    let (window_start, window_end) = run.window.unzip();
    let finished = (status != RunStatus::Running).then(Utc::now);
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO etl.runs (job, source, dataset, scope, window_start, window_end, trigger, status,
                               instance_id, error, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING id",
    )
    .bind(run.job)
    .bind(run.source)
    .bind(run.dataset)
    .bind(run.scope)
    .bind(window_start)
    .bind(window_end)
    .bind(run.trigger.as_str())
    .bind(status.as_str())
    .bind(instance)
    .bind(error)
    .bind(finished)
    .fetch_one(pool)
    .await
    .with_context(|| format!("recording a run of {} for scope {}", run.job, run.scope))?;
    Ok(id)
}

/// What [`finish`] did to a run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The record moved from `running` to the given outcome.
    Recorded,
    /// The record was final already (another process marked it, e.g. `interrupted` by a sweep);
    /// it was left as it was. Holds the status it keeps.
    AlreadyFinal(String),
}

/// Ends a `running` run with its figures and, unless it succeeded, why (kind and message; the
/// database refuses a failed or interrupted run without a kind). Pass the data transaction to
/// commit both together.
///
/// `ended_at` is when the window ended in the process, not when this is written: an outcome kept
/// through a database outage and written later must not make the run look as if it had held its
/// window until then (overlapping another process's run of the same window). It is never put
/// before the run's start (the two clocks may differ).
///
/// Status only moves `running → {succeeded, failed, interrupted}`: the guard is in the SQL, so a
/// record another process already made final is never overwritten (that is logged, and reported
/// as [`Finished::AlreadyFinal`] so a load can roll back instead of committing under it).
pub async fn finish<'e>(
    executor: impl PgExecutor<'e>,
    id: i64,
    status: RunStatus,
    figures: &RunFigures,
    error: Option<(FailureKind, &str)>,
    ended_at: DateTime<Utc>,
) -> Result<Finished> {
    let (error_kind, error) = error.map(|(kind, text)| (kind.as_str(), text)).unzip();
    // One statement (it may run inside the caller's transaction): the outer SELECT sees the row
    // as it was before the guarded UPDATE, so it names the status a refused update kept.
    let (recorded, current): (bool, Option<String>) = sqlx::query_as(
        "WITH updated AS (
             UPDATE etl.runs
             SET status = $2, finished_at = GREATEST($15, started_at), rows_written = $3, pages = $4,
                 upstream_calls = $5, retries = $6, throttled_ms = $7, warnings = $8, error = $9,
                 data_calls = $10, discovery_calls = $11, token_calls = $12, retry_calls = $13,
                 error_kind = $14
             WHERE id = $1 AND status = 'running'
             RETURNING id)
         SELECT EXISTS (SELECT 1 FROM updated), (SELECT status FROM etl.runs WHERE id = $1)",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(figures.rows_written)
    .bind(figures.pages)
    .bind(figures.upstream_calls)
    .bind(figures.retries)
    .bind(figures.throttled_ms)
    .bind(figures.warnings_text())
    .bind(error)
    .bind(figures.calls.data)
    .bind(figures.calls.discovery)
    .bind(figures.calls.token)
    .bind(figures.calls.retry)
    .bind(error_kind)
    .bind(ended_at)
    .fetch_one(executor)
    .await
    .with_context(|| format!("recording the outcome of run {id}"))?;
    if recorded {
        return Ok(Finished::Recorded);
    }
    let current = current.unwrap_or_else(|| "missing".into());
    tracing::warn!(
        run_id = id,
        kept = %current,
        refused = status.as_str(),
        "Run record is final already; not overwriting it."
    );
    Ok(Finished::AlreadyFinal(current))
}

/// One row of `reporting-etl runs`.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub source: String,
    pub dataset: String,
    pub scope: String,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub trigger: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows_written: i64,
    pub pages: i32,
    pub upstream_calls: i32,
    pub retries: i32,
    pub throttled_ms: i64,
    pub warnings: Option<String>,
    pub error: Option<String>,
    /// Why it failed, as stored (`etl.runs.error_kind`: a [`FailureKind`] name, or `unknown`).
    pub error_kind: Option<String>,
    pub data_calls: i32,
    pub discovery_calls: i32,
    pub token_calls: i32,
    pub retry_calls: i32,
}

// Written out, not derived: sqlx's derive macro costs every cold build a second compile of sqlx (see build.rs).
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for RunRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(Self {
            id: row.try_get("id")?,
            job: row.try_get("job")?,
            source: row.try_get("source")?,
            dataset: row.try_get("dataset")?,
            scope: row.try_get("scope")?,
            window_start: row.try_get("window_start")?,
            window_end: row.try_get("window_end")?,
            trigger: row.try_get("trigger")?,
            status: row.try_get("status")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            rows_written: row.try_get("rows_written")?,
            pages: row.try_get("pages")?,
            upstream_calls: row.try_get("upstream_calls")?,
            retries: row.try_get("retries")?,
            throttled_ms: row.try_get("throttled_ms")?,
            warnings: row.try_get("warnings")?,
            error: row.try_get("error")?,
            error_kind: row.try_get("error_kind")?,
            data_calls: row.try_get("data_calls")?,
            discovery_calls: row.try_get("discovery_calls")?,
            token_calls: row.try_get("token_calls")?,
            retry_calls: row.try_get("retry_calls")?,
        })
    }
}

/// The columns of a [`RunRow`], for `concat!` into the queries that read whole rows.
macro_rules! select_run_row {
    () => {
        "SELECT id, job, source, dataset, scope, window_start, window_end, trigger, status, started_at,
                finished_at, rows_written, pages, upstream_calls, retries, throttled_ms, warnings, error,
                error_kind, data_calls, discovery_calls, token_calls, retry_calls
         FROM etl.runs "
    };
}

/// The most recent runs, newest first, optionally of one job.
pub(crate) async fn recent(pool: &PgPool, job: Option<&str>, limit: i64) -> Result<Vec<RunRow>> {
    sqlx::query_as(concat!(
        select_run_row!(),
        "WHERE $1::text IS NULL OR job = $1
         ORDER BY id DESC
         LIMIT $2"
    ))
    .bind(job)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading recent runs")
}

/// One run by id.
pub async fn get(pool: &PgPool, id: i64) -> Result<RunRow> {
    sqlx::query_as(concat!(select_run_row!(), "WHERE id = $1"))
        .bind(id)
        .fetch_one(pool)
        .await
        .with_context(|| format!("reading run {id}"))
}

/// Every run `instance` recorded, oldest first.
pub(crate) async fn of_instance(pool: &PgPool, instance: Uuid) -> Result<Vec<RunRow>> {
    sqlx::query_as(concat!(select_run_row!(), "WHERE instance_id = $1 ORDER BY id"))
        .bind(instance)
        .fetch_all(pool)
        .await
        .context("reading this process's run records")
}

/// The last success of each job and scope.
pub(crate) async fn last_successes(pool: &PgPool) -> Result<Vec<(String, String, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT job, scope, max(finished_at) FROM etl.runs
         WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY job, scope",
    )
    .fetch_all(pool)
    .await
    .context("reading the last success of each job")
}

/// Marks `instance`'s unfinished runs `interrupted` (their transactions rolled back): the one
/// record of a stop, for `run` and `run --once` alike.
pub(crate) async fn interrupt_running(pool: &PgPool, instance: Uuid) -> Result<u64> {
    let result = sqlx::query(
        "UPDATE etl.runs SET status = 'interrupted', finished_at = now(), error_kind = $2,
                error = 'interrupted: the process was stopped before the window committed; nothing of it was written'
         WHERE instance_id = $1 AND status = 'running'",
    )
    .bind(instance)
    .bind(FailureKind::Cancelled.as_str())
    .execute(pool)
    .await
    .context("recording interrupted runs")?;
    Ok(result.rows_affected())
}

/// Windows of a job and scope already loaded successfully by runs of `trigger` (a resumed
/// backfill skips them).
pub(crate) async fn succeeded_windows(
    pool: &PgPool,
    job: &str,
    scope: &str,
    trigger: Trigger,
) -> Result<std::collections::HashSet<(DateTime<Utc>, DateTime<Utc>)>> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT window_start, window_end FROM etl.runs
         WHERE job = $1 AND scope = $2 AND trigger = $3 AND status = 'succeeded'
           AND window_start IS NOT NULL AND window_end IS NOT NULL",
    )
    .bind(job)
    .bind(scope)
    .bind(trigger.as_str())
    .fetch_all(pool)
    .await
    .with_context(|| format!("reading finished windows of {job}"))?;
    Ok(rows.into_iter().collect())
}

/// One window a job loaded: the run, its scope and window (none for a snapshot).
pub(crate) type LoadedWindow = (i64, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Per scope and window of `job`, its latest successful load (rebuilds aside), in the order they
/// were loaded; with `range`, only windows that overlap it, and snapshots (which have no window).
pub(crate) async fn latest_loads(
    pool: &PgPool,
    job: &str,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<LoadedWindow>> {
    sqlx::query_as(
        "WITH loads AS ( \
                 SELECT DISTINCT ON (scope, window_start, window_end) id, scope, window_start, window_end \
                 FROM etl.runs \
                 WHERE job = $1 AND status = 'succeeded' AND trigger <> 'rebuild' \
                   AND ($2::timestamptz IS NULL OR window_start IS NULL \
                        OR (window_start < $3 AND window_end > $2)) \
                 ORDER BY scope, window_start, window_end, id DESC) \
             SELECT id, scope, window_start, window_end FROM loads ORDER BY id",
    )
    .bind(job)
    .bind(range.map(|(from, _)| from))
    .bind(range.map(|(_, to)| to))
    .fetch_all(pool)
    .await
    .with_context(|| format!("reading the windows job {job} loaded"))
}

/// Each job's latest outcome, as "status at time" (skipped fires ignored).
pub(crate) async fn last_outcomes(pool: &PgPool) -> Result<std::collections::HashMap<String, String>> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT DISTINCT ON (job) job, status, coalesce(finished_at, started_at)
         FROM etl.runs WHERE status <> 'skipped'
         ORDER BY job, id DESC",
    )
    .fetch_all(pool)
    .await
    .context("reading the latest outcome of each job")?;
    Ok(rows
        .into_iter()
        .map(|(job, status, at)| {
            let at = at
                .map(|t| t.format(" at %Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default();
            (job, format!("{status}{at}"))
        })
        .collect())
}
