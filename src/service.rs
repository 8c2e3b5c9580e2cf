//! `reporting-etl run`: the long-running service. Schedules every enabled job, serves
//! `/healthz`, `/readyz` and `/metrics`, and shuts down gracefully on SIGTERM/SIGINT.
//!
//! Scheduling uses tokio-cron-scheduler as the timer, but computes every fire time itself
//! ([`crate::jobs::schedule::next_fire`]) in the job's time zone and schedules one one-shot job
//! per fire: tokio-cron-scheduler would freeze a zone into a fixed offset at creation and fire
//! an hour off after a DST change. The next fire is scheduled before the current one runs, so a
//! slow run never delays its schedule; a fire during a run is recorded as `skipped`.
//!
//! Shutdown (`crate::shutdown`, shared with `run --once`): no new runs start; running windows get
//! `server.shutdown_grace_secs` to commit; then they are dropped (their transactions roll back)
//! and recorded as `interrupted`.
//!
//! A database restart does not make this process look dead: its liveness lock and job locks are
//! re-taken on fresh connections when the database answers (see [`crate::store::instance`] and
//! [`crate::jobs::runner`]). A database outage stops nothing here: the timers need no database, runs fail and are recorded
//! when it returns (see [`crate::jobs::runner`]), `/readyz` answers "not ready" within
//! [`READYZ_TIMEOUT`] instead of waiting for the pool, and a shutdown during an outage still exits
//! cleanly, logging what it could not record.

use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::Engine;
use crate::config::Settings;
use crate::jobs::runner::Runner;
use crate::jobs::schedule::next_fire;
use crate::shutdown::{self, Shutdown};
use crate::store::instance::LIVENESS_GRACE;
use crate::store::runs::Trigger;

/// How long `/readyz` waits for the database before answering "not ready" (a probe must get an
/// answer well before the pool's 10-second acquire timeout).
const READYZ_TIMEOUT: Duration = Duration::from_secs(2);

/// What every scheduled fire needs (shared by all jobs' timers).
#[derive(Clone)]
struct Fire {
    runner: Arc<Runner>,
    settings: Arc<Settings>,
    /// Cancelled at shutdown: no new runs, and running jobs stop between windows.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over: running windows are dropped (rolled back).
    abort: CancellationToken,
    /// Every running job task, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<ExitCode> {
    let metrics = install_metrics();
    let settings = Arc::new(settings);
    let engine = Engine::start(settings.clone(), "run").await?;
    let shutdown = Shutdown::watch(Duration::from_secs(settings.server.shutdown_grace_secs));
    let context = Fire {
        runner: engine.runner.clone(),
        settings: settings.clone(),
        stopping: shutdown.stopping.clone(),
        abort: shutdown.abort.clone(),
        tasks: TaskTracker::new(),
    };

    let http = serve_http(
        settings.server.listen,
        HttpState {
            pool: engine.store.pool().clone(),
            metrics,
            executor: engine.runner.executor().clone(),
            max_wait: settings.rate_budget.max_wait(),
        },
        context.stopping.clone(),
    )
    .await?;
    let mut scheduler = JobScheduler::new().await.context("creating the scheduler")?;
    let now = Utc::now();
    let mut scheduled = 0;
    for (name, job) in settings.jobs.iter().filter(|(_, job)| job.enabled) {
        schedule_next(scheduler.clone(), context.clone(), name.clone(), now).await?;
        if let Some(next) = next_fire(&job.schedule, job.time_zone, now) {
            tracing::info!(job = %name, next = %next, time_zone = %job.time_zone, "Scheduled.");
        }
        scheduled += 1;
    }
    crate::jobs::freshness::publish_expected_intervals(&settings);
    if let Err(error) = crate::jobs::freshness::publish_recorded_successes(engine.store.pool()).await {
        tracing::warn!(error = %format!("{error:#}"), "Could not read the last successes for /metrics.");
    }
    scheduler.start().await.context("starting the scheduler")?;
    // Runs of processes that died while this one runs are found by a periodic sweep (a dead
    // process counts as dead only after the liveness grace period, so one sweep at start-up
    // would miss a process killed just before).
    let sweeper = tokio::spawn(sweep_periodically(engine.runner.clone()));
    let retention = tokio::spawn(retain_periodically(engine.store.pool().clone(), settings.clone()));
    tracing::info!(jobs = scheduled, listen = %settings.server.listen, "Service running.");

    shutdown.stopping.cancelled().await;
    tracing::info!("Shutting down: no new runs; waiting for running windows to commit.");
    sweeper.abort();
    retention.abort();
    let _ = scheduler.shutdown().await;
    context.tasks.close();
    // The running windows end by themselves, or are dropped when the grace period is over
    // (the shutdown cancels `abort` then).
    context.tasks.wait().await;
    shutdown::record_stop(&engine).await;
    http.abort();
    if let Err(error) = engine.store.close().await {
        tracing::warn!(error = %format!("{error:#}"), "Could not record this process as stopped.");
    }
    tracing::info!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Adds a one-shot job for the first fire of `job` after `after`; when it fires it schedules
/// the following one, then runs the job.
fn schedule_next(
    scheduler: JobScheduler,
    context: Fire,
    job: String,
    after: DateTime<Utc>,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> {
    Box::pin(async move {
        let Some(settings) = context.settings.jobs.get(&job) else {
            return Ok(());
        };
        let Some(fire_at) = next_fire(&settings.schedule, settings.time_zone, after) else {
            return Ok(());
        };
        let delay = (fire_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let instant = std::time::Instant::now() + delay;
        let timer_scheduler = scheduler.clone();
        let one_shot = Job::new_one_shot_at_instant_async(instant, move |_, _| {
            let scheduler = timer_scheduler.clone();
            let context = context.clone();
            let job = job.clone();
            Box::pin(async move {
                if context.stopping.is_cancelled() {
                    return;
                }
                if let Err(error) = schedule_next(scheduler, context.clone(), job.clone(), fire_at).await {
                    tracing::error!(job = %job, error = %format!("{error:#}"), "Could not schedule the next run.");
                }
                let task_context = context.clone();
                context.tasks.spawn(async move {
                    let runner = task_context.runner.clone();
                    tokio::select! {
                        reports = runner.run_job(&job, Trigger::Schedule, None, &task_context.stopping) => {
                            let failed = reports.iter().filter(|r| r.error.is_some() && r.rows == 0).count();
                            tracing::debug!(job = %job, windows = reports.len(), failed, "Scheduled run finished.");
                        }
                        () = task_context.abort.cancelled() => {
                            tracing::warn!(job = %job, "Run dropped at shutdown; its window rolled back.");
                        }
                    }
                });
            })
        })
        .context("creating a timer")?;
        scheduler.add(one_shot).await.context("adding a timer")?;
        Ok(())
    })
}

/// Sweeps dead processes' runs every [`LIVENESS_GRACE`] (the runner sweeps once before its first job).
async fn sweep_periodically(runner: Arc<Runner>) {
    loop {
        tokio::time::sleep(LIVENESS_GRACE).await;
        runner.sweep_dead_instances().await;
    }
}

/// Deletes archived answers older than their source's `archive.keep_days`, at start-up and every
/// [`crate::archive::store::RETENTION_INTERVAL`].
async fn retain_periodically(pool: PgPool, settings: Arc<Settings>) {
    let sources: Vec<(String, u32)> = settings
        .sources
        .iter()
        .map(|(name, source)| (name.clone(), source.archive().keep_days))
        .collect();
    loop {
        crate::archive::store::enforce_all(&pool, &sources).await;
        tokio::time::sleep(crate::archive::store::RETENTION_INTERVAL).await;
    }
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
    /// For sources an upstream told to wait longer than `rate_budget.max_wait_secs`.
    executor: Arc<crate::executor::Executor>,
    /// `rate_budget.max_wait_secs`: how long such a source stays "not ready" after the answer
    /// (no block is kept longer than that).
    max_wait: Duration,
}

async fn serve_http(
    listen: std::net::SocketAddr,
    state: HttpState,
    stopping: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (server.listen)"))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .await;
    }))
}

/// Ready when the database answers and takes writes, no source waits for a person to
/// re-authorise it, and no upstream told a source to wait longer than
/// `rate_budget.max_wait_secs` within that time.
///
/// A database that answers but refuses writes (`default_transaction_read_only`, a hot standby
/// after a failover) cannot record a single run: that is not ready either.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let query = async {
        let read_only = crate::store::read_only(&state.pool).await?;
        let reauthorise = crate::auth::store::awaiting_login(&state.pool).await?;
        anyhow::Ok((read_only, reauthorise))
    };
    let checked = tokio::time::timeout(READYZ_TIMEOUT, query).await;
    let mut problems = match checked {
        Err(_) | Ok(Err(_)) => vec!["the database is unreachable".to_owned()],
        Ok(Ok((read_only, reauthorise))) => {
            let mut problems = Vec::new();
            if read_only {
                problems.push(
                    "database read-only: PostgreSQL refuses writes (default_transaction_read_only, \
                     or a standby), so no run can be recorded"
                        .to_owned(),
                );
            }
            if !reauthorise.is_empty() {
                problems.push(format!(
                    "re-authorise {} with `reporting-etl auth login`",
                    reauthorise.join(", ")
                ));
            }
            problems
        }
    };
    for (source, why) in state.executor.wait_capped_sources(state.max_wait) {
        problems.push(format!("{source}: {why}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics_text(State(state): State<HttpState>) -> impl IntoResponse {
    // Token states change in other processes too (`auth login`): read them at every scrape.
    let reauthorization = crate::jobs::freshness::publish_reauthorization(&state.pool);
    if let Ok(Err(error)) = tokio::time::timeout(READYZ_TIMEOUT, reauthorization).await {
        tracing::debug!(error = %format!("{error:#}"), "Could not read token states for /metrics.");
    }
    // Every process writes the archive: its size is read at every scrape too.
    let archive = crate::archive::store::publish_sizes(&state.pool);
    if let Ok(Err(error)) = tokio::time::timeout(READYZ_TIMEOUT, archive).await {
        tracing::debug!(error = %format!("{error:#}"), "Could not read the archive's size for /metrics.");
    }
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; version=0.0.4")],
            "# metrics recorder not installed\n".to_owned(),
        ),
    }
}
