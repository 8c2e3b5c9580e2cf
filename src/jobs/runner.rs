//! The runner: turns one trigger of a job into scopes × windows, and loads each window: its
//! pages are staged outside any transaction, then swapped into its table in one short
//! transaction together with its run record and watermark.
//!
//! A job never runs twice at once: in-process through [`Runner::running`], across processes
//! through a PostgreSQL advisory lock held for the job's duration. A second trigger meanwhile is
//! recorded as `skipped`. The lock lives in a database session, which a database restart ends
//! while the job runs on: a window whose lock is lost stops at once and rolls back (recorded
//! `interrupted`), a load checks the lock inside its transaction before committing, and the next
//! window re-takes the lock — or, if another process has the job meanwhile, leaves it to that
//! process. Every window logs when it enters and leaves the job's lock ("Entered the job's
//! window." / "Left the job's window."), so overlaps would show in the logs.
//!
//! Starting a run waits out a database that is restarting: connection errors while taking the
//! lock or writing the run record are retried with backoff for up to [`START_GRACE`].
//!
//! A database outage must not lose a run's outcome nor stop anything: outcomes the database
//! cannot take when they happen (a run left `running`, a fire that could not even create its
//! record) are logged, kept in [`Runner::unrecorded`] and written by the first later run that
//! reaches the database again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::AuthError;
use crate::catalog::{DatasetInfo, WindowPolicy};
use crate::config::{Settings, SourceSettings};
use crate::datasets::{self, LoadRequest, ScopeTarget, Window};
use crate::executor::{CallContext, CallError, CallFigures, Executor};
use crate::failure::{Failure, FailureKind};
use crate::jobs::window;
use crate::store::locks::{self, HeldLock, JobLocks};
use crate::store::runs::{self, CallBreakdown, Finished, NewRun, RunFigures, RunStatus, Trigger};
use crate::store::{instance, scope_cache};
use crate::store::{is_connection_error, watermarks};
use crate::vendors;

/// How long a fire waits for an unreachable database (connection errors while taking its lock
/// or writing its records) before it gives up and is recorded as failed: a restart takes
/// seconds, and an outage of half a minute still ends in a run rather than a failure.
pub const START_GRACE: Duration = Duration::from_secs(60);

/// Longest pause between two attempts while the database is unreachable.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// Why a window stopped when its job's lock was lost mid-window.
#[derive(Debug)]
struct JobLockLost;

impl std::fmt::Display for JobLockLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "interrupted: the job's lock was lost mid-window (its database session ended, e.g. in a \
             database restart); the window was rolled back so no two processes load it at once",
        )
    }
}

impl std::error::Error for JobLockLost {}

/// Why a window stopped when it outlasted its job's `window_deadline_secs`.
#[derive(Debug)]
struct WindowDeadline {
    job: String,
    secs: u64,
}

impl std::fmt::Display for WindowDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "window deadline of {} s exceeded (jobs.{}.window_deadline_secs); the window was rolled back",
            self.secs, self.job
        )
    }
}

impl std::error::Error for WindowDeadline {}

/// Why a window or a discovery failed, from the typed errors in its chain (the first one that
/// knows its kind): the runner's own deadline and lock errors, the executor's [`CallError`],
/// auth's [`AuthError`], a [`Failure`] a loader or the sink raised, the database driver's
/// errors, and JSON that did not decode. Messages are never read.
fn failure_kind(error: &anyhow::Error) -> FailureKind {
    if is_connection_error(error) {
        return FailureKind::Database;
    }
    for cause in error.chain() {
        if cause.is::<WindowDeadline>() {
            return FailureKind::Timeout;
        }
        if cause.is::<JobLockLost>() {
            return FailureKind::LockLost;
        }
        if let Some(call) = cause.downcast_ref::<CallError>() {
            return call.kind();
        }
        if let Some(auth) = cause.downcast_ref::<AuthError>() {
            return auth.kind();
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.kind;
        }
        if cause.is::<sqlx::Error>() {
            return FailureKind::Database;
        }
        if let Some(json) = cause.downcast_ref::<serde_json::Error>() {
            return match json.classify() {
                serde_json::error::Category::Data => FailureKind::SchemaMismatch,
                _ => FailureKind::InvalidAnswer,
            };
        }
    }
    FailureKind::Internal
}

/// What happened to one window (or to a job that could not start).
#[derive(Debug, Clone)]
pub struct WindowReport {
    pub run_id: Option<i64>,
    pub job: String,
    pub dataset: String,
    pub scope: String,
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub status: RunStatus,
    pub rows: i64,
    pub calls: i64,
    pub seconds: f64,
    pub error: Option<String>,
    /// Why it failed or was interrupted (`None` when it succeeded or was skipped).
    pub error_kind: Option<FailureKind>,
}

/// Runs jobs against one database and executor.
pub struct Runner {
    settings: Arc<Settings>,
    pool: PgPool,
    instance: Uuid,
    executor: Arc<Executor>,
    /// Jobs running in this process. Locked only to insert/remove a name.
    running: Mutex<HashSet<String>>,
    /// Advisory locks keeping a job to one process at a time.
    job_locks: Arc<JobLocks>,
    /// Windows loading at once. Each holds a pool connection for its staging and swap and needs more
    /// for token reads and run records, so the count stays below the pool size: otherwise
    /// concurrent windows could take every connection and wait on each other forever.
    window_slots: tokio::sync::Semaphore,
    /// Where progress goes (`run --once` draws a progress line from it); `None` in the service.
    progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    /// Outcomes waiting for the database. Shared by every job task; locked only to push entries
    /// or take them all (never across an await).
    unrecorded: Mutex<Unrecorded>,
    /// Whether this process has swept dead processes' runs yet (before its first job).
    swept: std::sync::atomic::AtomicBool,
    /// One scope discovery at a time per source, so that jobs of a source starting together
    /// share one discovery round (the later ones find it in `etl.scope_cache`). Locked only to
    /// look up or insert a source's gate.
    discovery_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// At most this many failed runs wait to be recorded; beyond it they are only logged (memory
/// stays bounded however long the database is away).
const MAX_UNRECORDED_RUNS: usize = 1000;

/// Run outcomes the database could not take when they happened.
#[derive(Default)]
struct Unrecorded {
    /// Runs whose record is still `running`: the outcome to write into it.
    finishes: Vec<(i64, RunStatus, RunFigures, FailureKind, String)>,
    /// Fires that could not create a record at all, one entry per job (so this is bounded by the
    /// configuration).
    missed: BTreeMap<String, MissedFires>,
}

/// Fires of one job that could not create a run record.
struct MissedFires {
    source: String,
    dataset: String,
    trigger: Trigger,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    fires: u32,
    error: String,
    kind: FailureKind,
}

/// Progress events of a run, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// This many windows of this job are about to be loaded (for one of its scopes).
    Planned { job: String, windows: usize },
    /// One window started; its calls add to `figures` (calls, time throttled) while it runs.
    Started { job: String, figures: Arc<CallFigures> },
    /// One window ended.
    Finished(WindowReport),
}

impl Runner {
    /// The executor every job of this runner calls through (for `/readyz`).
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    pub fn new(
        settings: Arc<Settings>,
        pool: PgPool,
        instance: Uuid,
        executor: Arc<Executor>,
        job_locks: Arc<JobLocks>,
    ) -> Runner {
        // Two connections stay free for token reads and run records.
        let window_slots = (settings.database.pool_size as usize).saturating_sub(2).max(1);
        Runner {
            job_locks,
            window_slots: tokio::sync::Semaphore::new(window_slots),
            settings,
            pool,
            instance,
            executor,
            running: Mutex::new(HashSet::new()),
            progress: None,
            unrecorded: Mutex::new(Unrecorded::default()),
            swept: std::sync::atomic::AtomicBool::new(false),
            discovery_gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate serialising scope discovery of `source`.
    fn discovery_gate(&self, source: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.discovery_gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(source.to_owned())
            .or_default()
            .clone()
    }

    /// Marks runs of dead processes `interrupted` (see [`instance::sweep_dead_instances`]). Only
    /// processes that run jobs sweep: once before their first job, and the service periodically.
    pub async fn sweep_dead_instances(&self) {
        match instance::sweep_dead_instances(&self.pool, self.instance).await {
            Ok(0) => {}
            Ok(runs) => tracing::warn!(runs, "Marked runs of processes that died mid-run as interrupted."),
            Err(error) => tracing::warn!(error = %format!("{error:#}"),
                "Could not sweep runs of dead processes; the next sweep tries again."),
        }
    }

    /// Retries `attempt` while it fails because the database is unreachable, with backoff, for up
    /// to [`START_GRACE`]; any other outcome (and the last failure) is returned as it is.
    async fn retry_while_unreachable<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + START_GRACE;
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt().await {
                Err(error) if is_connection_error(&error) && Instant::now() + backoff < deadline => {
                    tracing::info!(error = %format!("{error:#}"),
                        "Database unreachable while {what}; retrying until it answers.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
                outcome => return outcome,
            }
        }
    }

    /// Sends progress events to `progress` (see [`Progress`]).
    pub fn with_progress(mut self, progress: tokio::sync::mpsc::UnboundedSender<Progress>) -> Runner {
        self.progress = Some(progress);
        self
    }

    fn report_progress(&self, event: Progress) {
        if let Some(progress) = &self.progress {
            let _ = progress.send(event);
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs every window of one trigger of `job`. `backfill` replaces the job's window policy with
    /// an explicit date range (resuming where an earlier backfill of it stopped).
    ///
    /// Everything it logs is inside a `run` span carrying the job, dataset and trigger (and each
    /// window's events inside a `window` span), so events do not repeat them.
    #[tracing::instrument(name = "run", skip_all,
        fields(job = %job, dataset = tracing::field::Empty, trigger = %trigger.as_str()))]
    pub async fn run_job(
        &self,
        job: &str,
        trigger: Trigger,
        backfill: Option<(NaiveDate, NaiveDate)>,
        cancel: &CancellationToken,
    ) -> Vec<WindowReport> {
        let Some((job_settings, source)) = self.settings.job(job) else {
            return vec![failed_job(
                job,
                "",
                FailureKind::Config,
                format!("`{job}` is not a configured job"),
            )];
        };
        tracing::Span::current().record("dataset", tracing::field::display(&job_settings.dataset));
        let dataset = job_settings.dataset.info();
        let skip = |reason| self.record_skip(job, &job_settings.source, dataset, trigger, reason);
        if !self.lock_in_process(job) {
            return skip("the previous run of this job is still going").await;
        }
        let _in_process = Unlock { runner: self, job };
        if !self.swept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.sweep_dead_instances().await;
        }
        let lock = match self
            .retry_while_unreachable("taking the job lock", || self.lock_across_processes(job))
            .await
        {
            Ok(Some(lock)) => lock,
            Ok(None) => return skip("another process is running this job").await,
            Err(error) => {
                let message = format!("{error:#}");
                let kind = failure_kind(&error);
                self.missed(job, &job_settings.source, dataset.name, trigger, kind, &message);
                return vec![failed_job(job, dataset.name, kind, message)];
            }
        };
        let reports = self
            .run_locked(
                job,
                &job_settings.source,
                source,
                dataset,
                trigger,
                backfill,
                cancel,
                &lock,
            )
            .await;
        drop(lock); // returning the connection to the pool ends the session lock below
        // A record written just now shows the database is back: write what it missed.
        if reports.iter().any(|r| r.run_id.is_some()) {
            self.record_unrecorded().await;
        }
        reports
    }

    /// Writes the outcomes the database missed (see [`Runner::unrecorded`]); stops at the first
    /// write that fails and keeps the rest. Returns how many were written.
    pub async fn record_unrecorded(&self) -> usize {
        let Unrecorded { finishes, missed } = std::mem::take(&mut *self.lock_unrecorded());
        let mut written = 0;
        let mut finishes = finishes.into_iter();
        let mut failed_on = None;
        for (run_id, status, figures, kind, message) in finishes.by_ref() {
            match runs::finish(&self.pool, run_id, status, &figures, Some((kind, &message))).await {
                Ok(_) => written += 1,
                Err(error) => {
                    failed_on = Some(((run_id, status, figures, kind, message), error));
                    break;
                }
            }
        }
        let mut missed = missed.into_iter();
        let mut missed_back = None;
        if failed_on.is_none() {
            for (job, fires) in missed.by_ref() {
                let run = NewRun {
                    job: &job,
                    source: &fires.source,
                    dataset: &fires.dataset,
                    scope: "all",
                    window: None,
                    trigger: fires.trigger,
                };
                let message = format!(
                    "{} run(s) between {} and {} could not start: {}",
                    fires.fires, fires.first_at, fires.last_at, fires.error
                );
                match runs::start(&self.pool, self.instance, &run).await {
                    Ok(run_id) => {
                        let figures = RunFigures::default();
                        let error = Some((fires.kind, message.as_str()));
                        if let Err(error) =
                            runs::finish(&self.pool, run_id, RunStatus::Failed, &figures, error).await
                        {
                            failed_on =
                                Some(((run_id, RunStatus::Failed, figures, fires.kind, message), error));
                            break;
                        }
                        written += 1;
                    }
                    Err(_) => {
                        missed_back = Some((job, fires));
                        break;
                    }
                }
            }
        }
        let mut unrecorded = self.lock_unrecorded();
        if let Some((entry, error)) = failed_on {
            tracing::debug!(error = %format!("{error:#}"), "The database still refuses run records.");
            unrecorded.finishes.push(entry);
        }
        unrecorded.finishes.extend(finishes);
        for (job, fires) in missed_back.into_iter().chain(missed) {
            // A fire missed meanwhile started a fresh entry; the older one keeps its place.
            unrecorded.missed.entry(job).or_insert(fires);
        }
        if written > 0 {
            tracing::info!(records = written, "Recorded runs the database had missed.");
        }
        written
    }

    fn lock_unrecorded(&self) -> std::sync::MutexGuard<'_, Unrecorded> {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run record that says `running` could not be finished: keep its outcome for later.
    fn unfinished(
        &self,
        run_id: i64,
        status: RunStatus,
        figures: RunFigures,
        (kind, message): (FailureKind, &str),
        error: &anyhow::Error,
    ) {
        tracing::error!(run_id, status = status.as_str(), error = %format!("{error:#}"),
            "Could not record a run's outcome; it will be recorded when the database is back.");
        let mut unrecorded = self.lock_unrecorded();
        if unrecorded.finishes.len() < MAX_UNRECORDED_RUNS {
            unrecorded
                .finishes
                .push((run_id, status, figures, kind, message.to_owned()));
        }
    }

    /// A fire that could not create its run record: log it and count it for later.
    fn missed(
        &self,
        job: &str,
        source: &str,
        dataset: &str,
        trigger: Trigger,
        kind: FailureKind,
        error: &str,
    ) {
        tracing::warn!(error_kind = kind.as_str(), error = %error,
            "Run could not start or be recorded (database unreachable?); it will be recorded as failed when the database is back.");
        let now = Utc::now();
        let mut unrecorded = self.lock_unrecorded();
        let fires = unrecorded
            .missed
            .entry(job.to_owned())
            .or_insert_with(|| MissedFires {
                source: source.to_owned(),
                dataset: dataset.to_owned(),
                trigger,
                first_at: now,
                last_at: now,
                fires: 0,
                error: String::new(),
                kind,
            });
        fires.fires += 1;
        fires.last_at = now;
        error.clone_into(&mut fires.error);
        fires.kind = kind;
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_locked(
        &self,
        job: &str,
        source_name: &str,
        source: &SourceSettings,
        dataset: &'static DatasetInfo,
        trigger: Trigger,
        backfill: Option<(NaiveDate, NaiveDate)>,
        cancel: &CancellationToken,
        lock: &JobLock,
    ) -> Vec<WindowReport> {
        let (job_settings, _) = self.settings.job(job).expect("checked by run_job");
        // Discovery's calls are recorded on the first window's run (or on the failure record).
        let discovery_figures = Arc::new(CallFigures::default());
        let deadline_secs = job_settings.window_deadline_secs;
        let discovered = {
            let gate = self.discovery_gate(source_name);
            let _one_at_a_time = gate.lock().await;
            let deadline = tokio::time::Instant::now() + job_settings.window_deadline();
            let discovery =
                call_context(source_name, dataset.name, discovery_figures.clone()).with_deadline(deadline);
            let discover = vendors::discover_scopes_cached(
                &self.executor,
                &self.pool,
                &discovery,
                source_name,
                source,
                dataset,
                &job_settings.scope,
            );
            match tokio::time::timeout_at(deadline, discover).await {
                Ok(discovered) => discovered,
                Err(_) => Err(anyhow!(WindowDeadline {
                    job: job.to_owned(),
                    secs: deadline_secs,
                })),
            }
        };
        let scopes = match discovered {
            Ok((scopes, by)) => {
                tracing::debug!(source = source_name, scopes = scopes.len(), discovered_by = ?by,
                    "Scopes of the job.");
                scopes
            }
            Err(error) => {
                let kind = failure_kind(&error);
                let message =
                    if kind == FailureKind::Timeout && error.downcast_ref::<WindowDeadline>().is_none() {
                        format!(
                            "discovering scopes: window deadline of {deadline_secs} s exceeded \
                         (jobs.{job}.window_deadline_secs): {error:#}"
                        )
                    } else {
                        format!("discovering scopes: {error:#}")
                    };
                let figures = run_figures(
                    &CallFigures::default(),
                    Some(&discovery_figures),
                    0,
                    0,
                    Vec::new(),
                );
                let report = self
                    .record_failure(
                        job,
                        source_name,
                        dataset,
                        "all",
                        None,
                        trigger,
                        (kind, &message),
                        figures,
                    )
                    .await;
                return vec![report];
            }
        };
        let mut discovery_calls = Some(discovery_figures);
        let mut reports = Vec::new();
        let now = Utc::now();
        for scope in scopes {
            let key = scope.key();
            let range = match backfill {
                Some((from, to)) => window::backfill_range(dataset, from, to, now),
                None => {
                    let mark = match self
                        .retry_while_unreachable("reading the watermark", || {
                            watermarks::get(&self.pool, job, &key)
                        })
                        .await
                    {
                        Ok(mark) => mark,
                        Err(error) => {
                            reports.push(
                                self.record_failure(
                                    job,
                                    source_name,
                                    dataset,
                                    &key,
                                    None,
                                    trigger,
                                    (failure_kind(&error), &format!("{error:#}")),
                                    RunFigures::default(),
                                )
                                .await,
                            );
                            continue;
                        }
                    };
                    window::run_range(job_settings, dataset, mark, now)
                }
            };
            let windows: Vec<Option<Window>> = match range {
                // Reference data has no time window: a snapshot replaces it whole, even in a backfill.
                _ if dataset.default_window == WindowPolicy::Snapshot => vec![None],
                None => Vec::new(), // nothing new yet, or nothing inside the vendor's limits
                Some((start, end)) => datasets::split_windows(dataset, start, end)
                    .into_iter()
                    .map(Some)
                    .collect(),
            };
            let done = if trigger == Trigger::Backfill {
                runs::succeeded_windows(&self.pool, job, &key, Trigger::Backfill)
                    .await
                    .unwrap_or_default()
            } else {
                HashSet::new()
            };
            // Windows an earlier, interrupted backfill already loaded are skipped.
            let windows: Vec<Option<Window>> = windows
                .into_iter()
                .filter(|w| w.as_ref().is_none_or(|w| !done.contains(&(w.start, w.end))))
                .collect();
            self.report_progress(Progress::Planned {
                job: job.to_owned(),
                windows: windows.len(),
            });
            for window in windows {
                if cancel.is_cancelled() {
                    return reports;
                }
                let report = self
                    .run_window(
                        job,
                        source_name,
                        source,
                        dataset,
                        &scope,
                        window,
                        trigger,
                        backfill.is_none(),
                        lock,
                        discovery_calls.take(),
                    )
                    .await;
                let failed = report.status != RunStatus::Succeeded;
                self.report_progress(Progress::Finished(report.clone()));
                reports.push(report);
                if failed {
                    // Later windows of this scope would leave a gap behind the watermark.
                    break;
                }
            }
        }
        if let Some(discovery) = discovery_calls
            && discovery.calls() > 0
        {
            // No window ran to carry them into etl.runs; at least the log has them.
            tracing::info!(
                source = source_name,
                calls = discovery.calls(),
                token_calls = discovery.token_calls(),
                "Scope discovery made calls, but no window was due."
            );
        }
        reports
    }

    /// Loads one scope × window: data staged page by page, then data, run record and watermark
    /// swapped in one short transaction, inside the job's lock (re-taken first if its session
    /// was lost; the window stops and rolls back if the lock is lost while it runs). Its events
    /// are inside a `window` span carrying the scope, the window and the run id.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "window", skip_all, fields(
        scope = %scope.key(),
        window = %window.as_ref().map_or_else(|| "snapshot".to_owned(), |w| format!(
            "{}/{}",
            w.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            w.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        run_id = tracing::field::Empty,
    ))]
    async fn run_window(
        &self,
        job: &str,
        source_name: &str,
        source: &SourceSettings,
        dataset: &'static DatasetInfo,
        scope: &ScopeTarget,
        window: Option<Window>,
        trigger: Trigger,
        moves_watermark: bool,
        lock: &JobLock,
        discovery: Option<Arc<CallFigures>>,
    ) -> WindowReport {
        let key = scope.key();
        let bounds = window.as_ref().map(|w| (w.start, w.end));
        let new_run = NewRun {
            job,
            source: source_name,
            dataset: dataset.name,
            scope: &key,
            window: bounds,
            trigger,
        };
        let started = Instant::now();
        let run_id = match self
            .retry_while_unreachable("recording the run", || {
                runs::start(&self.pool, self.instance, &new_run)
            })
            .await
        {
            Ok(id) => id,
            Err(error) => {
                let message = format!("{error:#}");
                let kind = failure_kind(&error);
                self.missed(job, source_name, dataset.name, trigger, kind, &message);
                return failed_job(job, dataset.name, kind, message);
            }
        };
        tracing::Span::current().record("run_id", run_id);
        let report = |status, rows, calls: i32, error: Option<(FailureKind, String)>| WindowReport {
            run_id: Some(run_id),
            job: job.into(),
            dataset: dataset.name.into(),
            scope: key.clone(),
            window: bounds,
            status,
            rows,
            calls: calls.into(),
            seconds: started.elapsed().as_secs_f64(),
            error_kind: error.as_ref().map(|(kind, _)| *kind),
            error: error.map(|(_, message)| message),
        };
        let held = match self.ensure_lock(job, lock).await {
            Ok(held) => held,
            Err(message) => {
                let kind = FailureKind::LockLost;
                tracing::warn!(error_kind = kind.as_str(), reason = %message, "Window not loaded.");
                record_metrics(job, dataset.name, &key, Err(kind));
                let figures = run_figures(&CallFigures::default(), discovery.as_deref(), 0, 0, Vec::new());
                let calls = figures.upstream_calls;
                self.finish_or_keep(run_id, RunStatus::Interrupted, figures, (kind, &message))
                    .await;
                return report(RunStatus::Interrupted, 0, calls, Some((kind, message)));
            }
        };
        let figures = Arc::new(CallFigures::default());
        let (job_settings, _) = self.settings.job(job).expect("checked by run_job");
        let deadline_after = job_settings.window_deadline();
        self.report_progress(Progress::Started {
            job: job.to_owned(),
            figures: figures.clone(),
        });
        tracing::info!(lock_session = held.backend_pid, "Entered the job's window.");
        let load = async {
            let _slot = self
                .window_slots
                .acquire()
                .await
                .context("waiting for a window slot")?;
            // The deadline counts from here (a wait for a slot is not the window's doing). Calls
            // start no attempt and no wait past it, and whatever is in flight then is dropped.
            let deadline = tokio::time::Instant::now() + deadline_after;
            let call = call_context(source_name, dataset.name, figures.clone()).with_deadline(deadline);
            // The load's one connection; no transaction is open on it while the vendor is called.
            let mut sink = datasets::Sink::acquire(&self.pool).await?;
            let request = LoadRequest {
                source_name,
                source,
                dataset,
                scope,
                window,
                run_id,
                call: &call,
            };
            // Staging and the swap are timed; the commit is not, so a window is never reported
            // failed after it committed.
            let staged = async {
                let loaded = vendors::load(&self.executor, &mut sink, &request).await?;
                let (tx, rows) = sink.begin_swap().await?;
                anyhow::Ok((loaded, tx, rows))
            };
            let (loaded, mut tx, rows) = match tokio::time::timeout_at(deadline, staged).await {
                Ok(loaded) => loaded?,
                // Dropping the load (and its transaction, if the swap began) rolls the window back.
                Err(_) => {
                    return Err(WindowDeadline {
                        job: job.to_owned(),
                        secs: deadline_after.as_secs(),
                    }
                    .into());
                }
            };
            let run_figures = run_figures(
                &figures,
                discovery.as_deref(),
                rows,
                loaded.pages,
                loaded.warnings,
            );
            // The lock lives on another session: make sure it is still ours right before committing.
            if !locks::still_held(&mut *tx, job, held).await? {
                return Err(JobLockLost.into());
            }
            if let Finished::AlreadyFinal(status) =
                runs::finish(&mut *tx, run_id, RunStatus::Succeeded, &run_figures, None).await?
            {
                anyhow::bail!("run {run_id} was recorded as {status} meanwhile; its window was rolled back");
            }
            if moves_watermark && let Some((_, end)) = bounds {
                watermarks::advance(&mut tx, job, &key, end, run_id).await?;
            }
            tx.commit().await.context("committing the window")?;
            sink.finish();
            Ok::<RunFigures, anyhow::Error>(run_figures)
        };
        // A lost lock session stops the load at once: dropping it rolls its transaction back.
        let outcome = tokio::select! {
            biased; // a load that finished wins over a loss noticed in the same instant
            outcome = load => outcome,
            () = self.job_locks.lost(held) => Err(JobLockLost.into()),
        };
        tracing::info!("Left the job's window.");
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(done) => {
                record_metrics(job, dataset.name, &key, Ok(&done));
                tracing::info!(
                    rows = done.rows_written,
                    calls = done.upstream_calls,
                    seconds,
                    "Window loaded."
                );
                report(RunStatus::Succeeded, done.rows_written, done.upstream_calls, None)
            }
            Err(error) => {
                let kind = failure_kind(&error);
                // Cut off from the database (its lock session or its load connection, whichever
                // noticed first): interrupted, not failed — nothing is wrong with the window.
                let (status, message) = if error.downcast_ref::<JobLockLost>().is_some() {
                    (RunStatus::Interrupted, format!("{error:#}"))
                } else if is_connection_error(&error) {
                    let message = format!(
                        "interrupted: the database connection was lost mid-window; nothing of it was committed: {error:#}"
                    );
                    (RunStatus::Interrupted, message)
                } else if kind == FailureKind::Timeout && error.downcast_ref::<WindowDeadline>().is_none() {
                    // A call gave up early because its next attempt or wait would pass the deadline.
                    let message = format!(
                        "window deadline of {} s exceeded (jobs.{job}.window_deadline_secs); the window was rolled back: {error:#}",
                        deadline_after.as_secs()
                    );
                    (RunStatus::Failed, message)
                } else if kind == FailureKind::ScopeRefused && source.discovery_ttl().is_some() {
                    // The scope came from discovery, which may be stale: ask again next time.
                    let dropped = match scope_cache::invalidate(&self.pool, source_name).await {
                        Ok(_) => format!(
                            "; the cached scopes of source {source_name} were dropped, so the next run asks the vendor for them again"
                        ),
                        Err(drop_error) => {
                            tracing::warn!(source = source_name, error = %format!("{drop_error:#}"),
                                "Could not drop the cached scopes after a refused scope.");
                            String::new()
                        }
                    };
                    (RunStatus::Failed, format!("{error:#}{dropped}"))
                } else {
                    (RunStatus::Failed, format!("{error:#}"))
                };
                record_metrics(job, dataset.name, &key, Err(kind));
                tracing::warn!(status = status.as_str(), error_kind = kind.as_str(), error = %message,
                    "Window did not load; its previous rows are unchanged.");
                let unloaded = run_figures(&figures, discovery.as_deref(), 0, 0, Vec::new());
                let calls = unloaded.upstream_calls;
                self.finish_or_keep(run_id, status, unloaded, (kind, &message))
                    .await;
                report(status, 0, calls, Some((kind, message)))
            }
        }
    }

    /// The job's lock, as held now: re-taken first if the session that took it was lost.
    /// `Err` says why the window must not run (another process has the job now, or the database
    /// did not answer within [`START_GRACE`]).
    async fn ensure_lock(&self, job: &str, lock: &JobLock) -> Result<HeldLock, String> {
        let held = lock.held();
        if self.job_locks.is_current(held) {
            return Ok(held);
        }
        let retaken = self
            .retry_while_unreachable("re-taking the job lock", || self.job_locks.try_lock(job))
            .await;
        match retaken {
            Ok(Some(held)) => {
                tracing::warn!(
                    lock_session = held.backend_pid,
                    "Re-took the job's lock after its database session was lost."
                );
                *lock.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
                Ok(held)
            }
            Ok(None) => Err(
                "interrupted: the job's lock was lost (its database session ended) and another \
                 process holds it now; this window is left to that process"
                    .into(),
            ),
            Err(error) => Err(format!(
                "interrupted: the job's lock was lost and could not be re-taken: {error:#}"
            )),
        }
    }

    /// Moves a `running` record to its outcome, or keeps the outcome for when the database is back.
    async fn finish_or_keep(
        &self,
        run_id: i64,
        status: RunStatus,
        figures: RunFigures,
        error: (FailureKind, &str),
    ) {
        if let Err(failed) = runs::finish(&self.pool, run_id, status, &figures, Some(error)).await {
            self.unfinished(run_id, status, figures, error, &failed);
        }
    }

    /// Records a trigger that did not run because the job was already running.
    async fn record_skip(
        &self,
        job: &str,
        source_name: &str,
        dataset: &DatasetInfo,
        trigger: Trigger,
        reason: &str,
    ) -> Vec<WindowReport> {
        let run = NewRun {
            job,
            source: source_name,
            dataset: dataset.name,
            scope: "all",
            window: None,
            trigger,
        };
        let run_id = runs::record_skipped(&self.pool, self.instance, &run, reason)
            .await
            .ok();
        tracing::info!(reason, "Run skipped.");
        metrics::counter!("reporting_etl_runs_total", "job" => job.to_owned(), "dataset" => dataset.name, "outcome" => "skipped")
            .increment(1);
        vec![WindowReport {
            run_id,
            job: job.into(),
            dataset: dataset.name.into(),
            scope: "all".into(),
            window: None,
            status: RunStatus::Skipped,
            rows: 0,
            calls: 0,
            seconds: 0.0,
            error: Some(reason.into()),
            error_kind: None,
        }]
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        job: &str,
        source_name: &str,
        dataset: &DatasetInfo,
        scope: &str,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
        trigger: Trigger,
        (kind, message): (FailureKind, &str),
        figures: RunFigures,
    ) -> WindowReport {
        let calls = figures.upstream_calls;
        record_metrics(job, dataset.name, scope, Err(kind));
        let run = NewRun {
            job,
            source: source_name,
            dataset: dataset.name,
            scope,
            window,
            trigger,
        };
        let run_id = match runs::start(&self.pool, self.instance, &run).await {
            Ok(id) => {
                self.finish_or_keep(id, RunStatus::Failed, figures, (kind, message))
                    .await;
                Some(id)
            }
            Err(error) => {
                self.missed(
                    job,
                    source_name,
                    dataset.name,
                    trigger,
                    kind,
                    &format!("{message}; {error:#}"),
                );
                None
            }
        };
        tracing::warn!(scope, error_kind = kind.as_str(), error = %message, "Run failed.");
        WindowReport {
            run_id,
            job: job.into(),
            dataset: dataset.name.into(),
            scope: scope.into(),
            window,
            status: RunStatus::Failed,
            rows: 0,
            calls: calls.into(),
            seconds: 0.0,
            error: Some(message.into()),
            error_kind: Some(kind),
        }
    }

    fn lock_in_process(&self, job: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.to_owned())
    }

    /// Takes the job's advisory lock; `None` if another process holds it.
    async fn lock_across_processes(&self, job: &str) -> Result<Option<JobLock>> {
        let held = self.job_locks.try_lock(job).await?;
        Ok(held.map(|held| JobLock {
            locks: self.job_locks.clone(),
            job: job.to_owned(),
            held: Mutex::new(held),
        }))
    }
}

/// Releases the in-process guard when a job run ends, however it ends.
struct Unlock<'a> {
    runner: &'a Runner,
    job: &'a str,
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.runner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.job);
    }
}

/// A held job advisory lock; dropping it unlocks.
struct JobLock {
    locks: Arc<JobLocks>,
    job: String,
    /// The session holding it; replaced when the lock is re-taken after a lost session.
    held: Mutex<HeldLock>,
}

impl JobLock {
    fn held(&self) -> HeldLock {
        *self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        let locks = self.locks.clone();
        let job = std::mem::take(&mut self.job);
        let held = self.held();
        tokio::spawn(async move { locks.unlock(&job, held).await });
    }
}

/// Run outcomes for `/metrics` (labels: job, dataset, scope — all bounded by the config). The
/// `outcome` of a failed or interrupted run is its kind (`rate_limited`, `reauthorise`, …), so
/// that the kinds of failure are told apart without reading `etl.runs`.
fn record_metrics(job: &str, dataset: &str, scope: &str, outcome: Result<&RunFigures, FailureKind>) {
    let label = match outcome {
        Ok(_) => "succeeded",
        Err(kind) => kind.as_str(),
    };
    metrics::counter!("reporting_etl_runs_total", "job" => job.to_owned(), "dataset" => dataset.to_owned(), "outcome" => label)
        .increment(1);
    if let Ok(figures) = outcome {
        metrics::counter!("reporting_etl_rows_written_total", "job" => job.to_owned(), "dataset" => dataset.to_owned())
            .increment(figures.rows_written.max(0) as u64);
        metrics::gauge!(crate::jobs::freshness::LAST_SUCCESS, "job" => job.to_owned(), "scope" => scope.to_owned())
            .set(Utc::now().timestamp() as f64);
    }
}

fn call_context(source: &str, dataset: &str, figures: Arc<CallFigures>) -> CallContext {
    CallContext::new(source, dataset).with_figures(figures)
}

/// A run's figures from its calls' figures, plus those of the scope discovery it carries (the
/// first window of a trigger carries the discovery that preceded it).
fn run_figures(
    figures: &CallFigures,
    discovery: Option<&CallFigures>,
    rows: i64,
    pages: i32,
    warnings: Vec<String>,
) -> RunFigures {
    let count = |n: i64| i32::try_from(n.max(0)).unwrap_or(i32::MAX);
    let mut calls = CallBreakdown {
        data: count(figures.calls() - figures.repeated()),
        discovery: 0,
        token: count(figures.token_calls()),
        retry: count(figures.repeated()),
    };
    let mut retries = figures.retries();
    let mut throttled_ms = figures.throttled_ms();
    if let Some(discovery) = discovery {
        calls.discovery = count(discovery.calls() - discovery.repeated());
        calls.token = calls.token.saturating_add(count(discovery.token_calls()));
        calls.retry = calls.retry.saturating_add(count(discovery.repeated()));
        retries = retries.saturating_add(discovery.retries());
        throttled_ms = throttled_ms.saturating_add(discovery.throttled_ms());
    }
    RunFigures {
        rows_written: rows,
        pages,
        upstream_calls: calls.total(),
        retries: count(retries),
        throttled_ms,
        warnings,
        calls,
    }
}

fn failed_job(job: &str, dataset: &str, kind: FailureKind, error: String) -> WindowReport {
    WindowReport {
        run_id: None,
        job: job.into(),
        dataset: dataset.into(),
        scope: "all".into(),
        window: None,
        status: RunStatus::Failed,
        rows: 0,
        calls: 0,
        seconds: 0.0,
        error: Some(error),
        error_kind: Some(kind),
    }
}

/// Runs `jobs` once: jobs of different sources concurrently, jobs of one source one after
/// another (they share its rate limit anyway). Returns every window's report.
pub async fn run_once(
    runner: Arc<Runner>,
    jobs: Vec<String>,
    trigger: Trigger,
    backfill: Option<(NaiveDate, NaiveDate)>,
    cancel: CancellationToken,
) -> Vec<WindowReport> {
    run_once_until(runner, jobs, trigger, backfill, cancel, CancellationToken::new())
        .await
        .reports
}

/// What [`run_once_until`] finished.
pub struct OnceOutcome {
    /// Reports of every job that ran to its end (all of them unless `aborted`).
    pub reports: Vec<WindowReport>,
    /// The abort token fired: unfinished jobs were dropped, their open windows rolled back and
    /// their run records left `running` for the caller to mark `interrupted`.
    pub aborted: bool,
}

/// [`run_once`] with two stops: `stopping` lets running windows finish but starts no new ones;
/// `abort` drops every job task at once (their transactions roll back) and returns when all of
/// them are gone, so no window can commit after it returned.
pub async fn run_once_until(
    runner: Arc<Runner>,
    jobs: Vec<String>,
    trigger: Trigger,
    backfill: Option<(NaiveDate, NaiveDate)>,
    stopping: CancellationToken,
    abort: CancellationToken,
) -> OnceOutcome {
    let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
    for job in jobs {
        let source = runner
            .settings()
            .jobs
            .get(&job)
            .map(|j| j.source.clone())
            .unwrap_or_default();
        by_source.entry(source).or_default().push(job);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for jobs in by_source.into_values() {
        let runner = runner.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            let mut reports = Vec::new();
            for job in jobs {
                reports.extend(runner.run_job(&job, trigger, backfill, &stopping).await);
            }
            reports
        });
    }
    let mut reports = Vec::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => return OnceOutcome { reports, aborted: false },
                Some(Ok(done)) => reports.extend(done),
                Some(Err(error)) => reports.push(failed_job(
                    "?",
                    "",
                    FailureKind::Internal,
                    anyhow!("a job task failed: {error}").to_string(),
                )),
            },
            () = abort.cancelled() => {
                // Aborts every task and waits until each is dropped (transactions rolled back).
                tasks.shutdown().await;
                return OnceOutcome { reports, aborted: true };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_error(kind: FailureKind) -> CallError {
        CallError::RetriesExhausted {
            source_name: "retarus".into(),
            dataset: "fax_out_udr".into(),
            attempts: 6,
            message: "HTTP 429".into(),
            kind,
        }
    }

    /// The kind comes from the typed error inside the chain, however much context the layers
    /// above wrapped around it; a chain with none is `internal`, never a guess from its text.
    #[test]
    fn a_failure_is_classified_by_the_typed_error_in_its_chain() {
        let wrapped = anyhow::Error::new(call_error(FailureKind::RateLimited))
            .context("fetching page 3")
            .context("loading retarus.fax_out_udr");
        assert_eq!(failure_kind(&wrapped), FailureKind::RateLimited);

        let deadline = anyhow::Error::new(WindowDeadline {
            job: "fax".into(),
            secs: 1,
        });
        assert_eq!(failure_kind(&deadline), FailureKind::Timeout);
        assert_eq!(
            failure_kind(&anyhow::Error::new(JobLockLost)),
            FailureKind::LockLost
        );

        let reauthorise = AuthError::Reauthorize {
            source_name: "roubler".into(),
            reason: "invalid_grant".into(),
        };
        assert_eq!(
            failure_kind(&anyhow::Error::new(reauthorise).context("discovering scopes")),
            FailureKind::Reauthorise
        );
        let cycling = anyhow::Error::new(Failure::invalid_answer("pages repeat")).context("page 4");
        assert_eq!(failure_kind(&cycling), FailureKind::InvalidAnswer);

        let shape = serde_json::from_str::<Vec<u32>>(r#"{"a": 1}"#).expect_err("wrong shape");
        assert_eq!(
            failure_kind(&anyhow::Error::new(shape).context("reading data.customers")),
            FailureKind::SchemaMismatch
        );
        let broken = serde_json::from_str::<Vec<u32>>("[1, ").expect_err("cut off");
        assert_eq!(
            failure_kind(&anyhow::Error::new(broken)),
            FailureKind::InvalidAnswer
        );

        let database = anyhow::Error::new(sqlx::Error::RowNotFound).context("recording the run");
        assert_eq!(failure_kind(&database), FailureKind::Database);
        let lost = anyhow::Error::new(sqlx::Error::PoolTimedOut);
        assert_eq!(failure_kind(&lost), FailureKind::Database);

        // Words in a message decide nothing.
        let untyped = anyhow!("HTTP 429: window deadline exceeded; re-authorise; Limit Exceeded");
        assert_eq!(failure_kind(&untyped), FailureKind::Internal);
    }
}
