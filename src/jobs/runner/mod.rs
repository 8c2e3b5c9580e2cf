//! The runner: turns one trigger of a job into scopes × windows, and loads each window: its
//! pages are staged outside any transaction, then swapped into its table in one short
//! transaction together with its run record and watermark (and the window's archived answers,
//! see [`crate::archive`]). A rebuild (`rebuild`) takes its scopes and windows from what the job
//! loaded and archived, and loads each from the archive through the same window code.
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::{DatasetInfo, WindowPolicy};
use crate::config::{Settings, SourceSettings};
use crate::datasets::{self, Window};
use crate::executor::{CallFigures, Executor};
use crate::failure::FailureKind;
use crate::jobs::window;
use crate::store::instance;
use crate::store::locks::{HeldLock, JobLocks};
use crate::store::runs::{self, RunFigures, RunStatus, Trigger};
use crate::store::{is_connection_error, watermarks};
use crate::vendors;

mod load;
mod once;
mod rebuild;
mod records;
mod report;

use load::call_context;
pub use once::{OnceOutcome, run_once, run_once_until};
use records::Unrecorded;
pub use report::WindowReport;
use report::{WindowDeadline, catching_panics, failed_job, failure_kind, run_figures};

/// Jobs whose next window panics on purpose: a test hook (built with the `sandbox` feature the
/// tests use, absent from the production build), since no input is known to make a window panic
/// any more, yet a bug one day might, and its run must still end recorded.
#[cfg(feature = "sandbox")]
static PANIC_IN_NEXT_WINDOW: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes the next window of `job` panic inside its load (see [`PANIC_IN_NEXT_WINDOW`]).
#[cfg(feature = "sandbox")]
pub fn panic_in_next_window(job: &str) {
    PANIC_IN_NEXT_WINDOW
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(job.to_owned());
}

/// Panics if a test asked for it for `job` (see [`panic_in_next_window`]).
#[cfg(feature = "sandbox")]
fn injected_panic(job: &str) {
    let mut jobs = PANIC_IN_NEXT_WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = jobs.iter().position(|j| j == job) {
        jobs.remove(at);
        drop(jobs);
        panic!("injected panic in a window of job {job}");
    }
}

/// Jobs whose windows derive a column differently, as a changed mapping would: a test hook
/// (`sandbox` feature only) for showing what a rebuild does after a mapping change.
#[cfg(feature = "sandbox")]
static REMAPPED: Mutex<Vec<(String, datasets::sink::Remap)>> = Mutex::new(Vec::new());

/// Makes every later window of `job` derive `remap.column` with `remap.derive` (until
/// [`clear_remap`]).
#[cfg(feature = "sandbox")]
pub fn remap_column(job: &str, remap: datasets::sink::Remap) {
    let mut jobs = REMAPPED.lock().unwrap_or_else(|e| e.into_inner());
    jobs.retain(|(j, _)| j != job);
    jobs.push((job.to_owned(), remap));
}

/// Undoes [`remap_column`] for `job`.
#[cfg(feature = "sandbox")]
pub fn clear_remap(job: &str) {
    REMAPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(j, _)| j != job);
}

/// The changed mapping a test set for `job`, if any.
#[cfg(feature = "sandbox")]
fn remapped(job: &str) -> Option<datasets::sink::Remap> {
    REMAPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(j, _)| j == job)
        .map(|(_, remap)| *remap)
}

/// How long a fire waits for an unreachable database (connection errors while taking its lock
/// or writing its records) before it gives up and is recorded as failed: a restart takes
/// seconds, and an outage of half a minute still ends in a run rather than a failure.
pub const START_GRACE: Duration = Duration::from_secs(60);

/// Longest pause between two attempts while the database is unreachable.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

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
        let run = self.run_locked(
            job,
            &job_settings.source,
            source,
            dataset,
            trigger,
            backfill,
            cancel,
            &lock,
        );
        // Windows and discovery record their own panics; this catches one in the runner itself,
        // so that the task (and the service) goes on and the metric counts it.
        let reports = match catching_panics(async { anyhow::Ok(run.await) }).await {
            Ok(reports) => reports,
            Err(error) => {
                let message = format!("{error:#}");
                tracing::error!(error = %message, "The job's run panicked.");
                report::record_metrics(job, dataset.name, "all", Err(FailureKind::Internal));
                vec![failed_job(job, dataset.name, FailureKind::Internal, message)]
            }
        };
        drop(lock); // returning the connection to the pool ends the session lock below
        // A record written just now shows the database is back: write what it missed.
        if reports.iter().any(|r| r.run_id.is_some()) {
            self.record_unrecorded().await;
        }
        reports
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
        if trigger == Trigger::Rebuild {
            return self
                .rebuild_locked(job, source_name, source, dataset, backfill, cancel, lock)
                .await;
        }
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
            match tokio::time::timeout_at(deadline, catching_panics(discover)).await {
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
                        None,
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
