//! The runner: turns one trigger of a job into scopes × windows, and loads each window in one
//! transaction together with its run record and watermark.
//!
//! A job never runs twice at once: in-process through [`Runner::running`], across processes
//! through a PostgreSQL advisory lock held for the job's duration. A second trigger meanwhile is
//! recorded as `skipped`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Settings, SourceSettings};
use crate::datasets::{self, DatasetInfo, LoadRequest, ScopeTarget, Window};
use crate::executor::{CallContext, CallFigures, Executor};
use crate::jobs::window;
use crate::store::runs::{self, NewRun, RunFigures, RunStatus, Trigger};
use crate::store::watermarks;

/// First key of job advisory locks ("ETL\x01"); the second is `hashtext(job name)`.
pub const JOB_LOCK_CLASS: i32 = 0x4554_4c01;

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
}

/// Runs jobs against one database and executor.
pub struct Runner {
    settings: Arc<Settings>,
    pool: PgPool,
    instance: Uuid,
    executor: Arc<Executor>,
    /// Jobs running in this process. Locked only to insert/remove a name.
    running: Mutex<HashSet<String>>,
    /// Where progress goes (`run --once` draws a progress line from it); `None` in the service.
    progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
}

/// Progress events of a run, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// This many windows are about to be loaded (for one job and scope).
    Planned(usize),
    /// One window ended.
    Finished(WindowReport),
}

impl Runner {
    pub fn new(settings: Arc<Settings>, pool: PgPool, instance: Uuid, executor: Arc<Executor>) -> Runner {
        Runner {
            settings,
            pool,
            instance,
            executor,
            running: Mutex::new(HashSet::new()),
            progress: None,
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
    pub async fn run_job(
        &self,
        job: &str,
        trigger: Trigger,
        backfill: Option<(NaiveDate, NaiveDate)>,
        cancel: &CancellationToken,
    ) -> Vec<WindowReport> {
        let Some((job_settings, source)) = self.settings.job(job) else {
            return vec![failed_job(job, "", format!("`{job}` is not a configured job"))];
        };
        let Some(dataset) = datasets::find(source.kind(), &job_settings.dataset) else {
            return vec![failed_job(job, &job_settings.dataset, "unknown dataset".into())];
        };
        let skip = |reason| self.record_skip(job, &job_settings.source, dataset, trigger, reason);
        if !self.lock_in_process(job) {
            return skip("the previous run of this job is still going").await;
        }
        let _in_process = Unlock { runner: self, job };
        let lock = match self.lock_across_processes(job).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return skip("another process is running this job").await,
            Err(error) => return vec![failed_job(job, dataset.name, format!("{error:#}"))],
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
            )
            .await;
        drop(lock); // returning the connection to the pool ends the session lock below
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
    ) -> Vec<WindowReport> {
        let (job_settings, _) = self.settings.job(job).expect("checked by run_job");
        let discovery = call_context(source_name, dataset.name, Arc::new(CallFigures::default()));
        let scopes = match datasets::discover_scopes(
            &self.executor,
            &discovery,
            source_name,
            source,
            dataset,
            &job_settings.scope,
        )
        .await
        {
            Ok(scopes) => scopes,
            Err(error) => {
                let report = self
                    .record_failure(
                        job,
                        source_name,
                        dataset,
                        "all",
                        None,
                        trigger,
                        &format!("discovering scopes: {error:#}"),
                    )
                    .await;
                return vec![report];
            }
        };
        let mut reports = Vec::new();
        let now = Utc::now();
        for scope in scopes {
            let key = scope.key();
            let range = match backfill {
                Some((from, to)) => window::backfill_range(dataset, from, to, now),
                None => {
                    let mark = match watermarks::get(&self.pool, job, &key).await {
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
                                    &format!("{error:#}"),
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
                _ if dataset.default_window == crate::config::WindowPolicyName::Snapshot => vec![None],
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
            self.report_progress(Progress::Planned(windows.len()));
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
        reports
    }

    /// Loads one scope × window: data, run record and watermark in one transaction.
    #[allow(clippy::too_many_arguments)]
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
        let run_id = match runs::start(&self.pool, self.instance, &new_run).await {
            Ok(id) => id,
            Err(error) => return failed_job(job, dataset.name, format!("{error:#}")),
        };
        let figures = Arc::new(CallFigures::default());
        let call = call_context(source_name, dataset.name, figures.clone());
        let outcome: Result<RunFigures> = async {
            let mut tx = self.pool.begin().await.context("opening the load transaction")?;
            let request = LoadRequest {
                source_name,
                source,
                dataset,
                scope,
                window,
                run_id,
                call: &call,
            };
            let loaded = datasets::load(&self.executor, &mut tx, &request).await?;
            let run_figures = run_figures(&figures, loaded.rows, loaded.pages, loaded.warnings);
            runs::finish(&mut *tx, run_id, RunStatus::Succeeded, &run_figures, None).await?;
            if moves_watermark && let Some((_, end)) = bounds {
                watermarks::advance(&mut tx, job, &key, end, run_id).await?;
            }
            tx.commit().await.context("committing the window")?;
            Ok(run_figures)
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        record_metrics(job, dataset.name, &key, outcome.as_ref().ok());
        match outcome {
            Ok(done) => {
                tracing::info!(job, dataset = dataset.name, scope = %key, rows = done.rows_written,
                    calls = done.upstream_calls, seconds, "Window loaded.");
                WindowReport {
                    run_id: Some(run_id),
                    job: job.into(),
                    dataset: dataset.name.into(),
                    scope: key,
                    window: bounds,
                    status: RunStatus::Succeeded,
                    rows: done.rows_written,
                    calls: done.upstream_calls.into(),
                    seconds,
                    error: None,
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(job, dataset = dataset.name, scope = %key, error = %message, "Window failed; its previous rows are unchanged.");
                let failed = run_figures(&figures, 0, 0, Vec::new());
                if let Err(record) =
                    runs::finish(&self.pool, run_id, RunStatus::Failed, &failed, Some(&message)).await
                {
                    tracing::error!(run_id, error = %record, "Could not record a failed run.");
                }
                WindowReport {
                    run_id: Some(run_id),
                    job: job.into(),
                    dataset: dataset.name.into(),
                    scope: key,
                    window: bounds,
                    status: RunStatus::Failed,
                    rows: 0,
                    calls: failed.upstream_calls.into(),
                    seconds,
                    error: Some(message),
                }
            }
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
        tracing::info!(job, reason, "Run skipped.");
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
        message: &str,
    ) -> WindowReport {
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
                let _ = runs::finish(
                    &self.pool,
                    id,
                    RunStatus::Failed,
                    &RunFigures::default(),
                    Some(message),
                )
                .await;
                Some(id)
            }
            Err(_) => None,
        };
        tracing::warn!(job, dataset = dataset.name, scope, error = %message, "Run failed.");
        WindowReport {
            run_id,
            job: job.into(),
            dataset: dataset.name.into(),
            scope: scope.into(),
            window,
            status: RunStatus::Failed,
            rows: 0,
            calls: 0,
            seconds: 0.0,
            error: Some(message.into()),
        }
    }

    fn lock_in_process(&self, job: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.to_owned())
    }

    /// Takes the job's session advisory lock on a dedicated connection; `None` if another
    /// process holds it. The lock lives as long as the returned connection.
    async fn lock_across_processes(&self, job: &str) -> Result<Option<JobLock>> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection for the job lock")?;
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(JOB_LOCK_CLASS)
            .bind(job)
            .fetch_one(&mut *connection)
            .await
            .context("taking the job lock")?;
        Ok(locked.then(|| JobLock {
            connection: Some(connection),
            job: job.to_owned(),
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

/// A held job advisory lock. Dropping it unlocks (the connection returns to the pool).
struct JobLock {
    connection: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    job: String,
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let job = std::mem::take(&mut self.job);
            tokio::spawn(async move {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                    .bind(JOB_LOCK_CLASS)
                    .bind(job)
                    .execute(&mut *connection)
                    .await;
            });
        }
    }
}

/// Run outcomes for `/metrics` (labels: job, dataset, scope — all bounded by the config).
fn record_metrics(job: &str, dataset: &str, scope: &str, succeeded: Option<&RunFigures>) {
    let outcome = if succeeded.is_some() {
        "succeeded"
    } else {
        "failed"
    };
    metrics::counter!("reporting_etl_runs_total", "job" => job.to_owned(), "dataset" => dataset.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(figures) = succeeded {
        metrics::counter!("reporting_etl_rows_written_total", "job" => job.to_owned(), "dataset" => dataset.to_owned())
            .increment(figures.rows_written.max(0) as u64);
        metrics::gauge!("reporting_etl_last_success_timestamp_seconds", "job" => job.to_owned(), "scope" => scope.to_owned())
            .set(Utc::now().timestamp() as f64);
    }
}

fn call_context(source: &str, dataset: &str, figures: Arc<CallFigures>) -> CallContext {
    CallContext::new(source, dataset).with_figures(figures)
}

fn run_figures(figures: &CallFigures, rows: i64, pages: i32, warnings: Vec<String>) -> RunFigures {
    RunFigures {
        rows_written: rows,
        pages,
        upstream_calls: figures.calls().try_into().unwrap_or(i32::MAX),
        retries: figures.retries().try_into().unwrap_or(i32::MAX),
        throttled_ms: figures.throttled_ms(),
        warnings,
    }
}

fn failed_job(job: &str, dataset: &str, error: String) -> WindowReport {
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
    let tasks: Vec<_> = by_source
        .into_values()
        .map(|jobs| {
            let runner = runner.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut reports = Vec::new();
                for job in jobs {
                    reports.extend(runner.run_job(&job, trigger, backfill, &cancel).await);
                }
                reports
            })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        match task.await {
            Ok(done) => reports.extend(done),
            Err(error) => reports.push(failed_job(
                "?",
                "",
                anyhow!("a job task failed: {error}").to_string(),
            )),
        }
    }
    reports
}
