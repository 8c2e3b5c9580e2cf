//! `run --once` (and backfills): build the engine (`crate::app`), run the
//! selected jobs, print a summary table, exit non-zero if any window failed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::table::Table;
use super::{InvalidArguments, RebuildArgs, RunArgs};
use crate::app::Engine;
use crate::config::Settings;
use crate::executor::CallFigures;
use crate::failure::FailureKind;
use crate::jobs::runner::{self, Progress, WindowReport};
use crate::store::runs::{RunStatus, Trigger};

/// `run --once [--job NAME]... [--from DATE --to DATE]`
///
/// SIGINT or SIGTERM stops it like the service stops: no new windows start, running ones get
/// `server.shutdown_grace_secs` to commit, the rest roll back and are recorded `interrupted`,
/// the summary is printed and the exit code is 130 (SIGINT) or 143 (SIGTERM). A second signal
/// exits at once; the runs it leaves `running` are marked `interrupted` by the next start.
pub(crate) async fn once(args: RunArgs, settings: Settings) -> Result<ExitCode> {
    let jobs = select_jobs(&settings, &args.jobs)?;
    let backfill = date_range(args.from, args.to)?;
    let trigger = if backfill.is_some() {
        Trigger::Backfill
    } else {
        Trigger::Once
    };
    run_until_signalled(settings, jobs, trigger, backfill, "run --once").await
}

/// `rebuild --job NAME [--from DATE --to DATE]`: the job's windows re-derived from the archive,
/// no upstream call, with `run --once`'s signals, progress, summary and exit codes.
pub(crate) async fn rebuild(args: RebuildArgs, settings: Settings) -> Result<ExitCode> {
    let jobs = select_jobs(&settings, std::slice::from_ref(&args.job))?;
    let range = date_range(args.from, args.to)?;
    run_until_signalled(settings, jobs, Trigger::Rebuild, range, "rebuild").await
}

/// `--from`/`--to` as a range, refused when `--from` is not before `--to`.
fn date_range(
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Result<Option<(chrono::NaiveDate, chrono::NaiveDate)>> {
    match (from, to) {
        (Some(from), Some(to)) if from >= to => {
            Err(InvalidArguments(format!("--from {from} must be before --to {to}")).into())
        }
        (Some(from), Some(to)) => Ok(Some((from, to))),
        _ => Ok(None),
    }
}

/// Runs `jobs` once with `trigger`, stopping on SIGINT/SIGTERM as `run --once` documents.
async fn run_until_signalled(
    settings: Settings,
    jobs: Vec<String>,
    trigger: Trigger,
    backfill: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
    command: &str,
) -> Result<ExitCode> {
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    // A progress line on a terminal; plain log lines (one per window) otherwise.
    let (progress, display) = if std::io::stderr().is_terminal() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Some(sender), Some(tokio::spawn(draw_progress(receiver))))
    } else {
        (None, None)
    };
    let engine = Engine::start_with(Arc::new(settings), command, progress).await?;
    let stopping = CancellationToken::new();
    let abort = CancellationToken::new();
    let signalled = Arc::new(OnceLock::new());
    tokio::spawn(watch_signals(
        grace,
        stopping.clone(),
        abort.clone(),
        signalled.clone(),
    ));
    let outcome =
        runner::run_once_until(engine.runner.clone(), jobs, trigger, backfill, stopping, abort).await;
    let Engine { store, runner } = engine;
    let mut reports = outcome.reports;
    if outcome.aborted {
        // Failures the database missed first, so they are not overwritten as `interrupted`.
        runner.record_unrecorded().await;
        match crate::service::interrupt_running(store.pool(), store.instance().id()).await {
            Ok(runs) => tracing::warn!(
                runs,
                "Rolled back the unfinished windows and recorded them as interrupted."
            ),
            Err(error) => tracing::warn!(error = %format!("{error:#}"),
                "Could not record the unfinished windows; the next start marks them interrupted."),
        }
        // The dropped jobs' reports went with them: the run records are the whole story.
        match runs_of_instance(store.pool(), store.instance().id()).await {
            Ok(recorded) => reports = recorded,
            Err(error) => tracing::warn!(error = %format!("{error:#}"),
                "Could not read this run's records; the summary shows only the jobs that ended."),
        }
    }
    drop(runner); // closes the progress channel
    if let Some(display) = display {
        let _ = display.await;
    }
    print!("{}", summary(&reports));
    store.close().await?;
    if let Some(signal) = signalled.get() {
        eprintln!(
            "Stopped by {}: run the same command again to load what is missing.",
            signal.name()
        );
        return Ok(ExitCode::from(signal.exit_code()));
    }
    let failed = reports.iter().filter(|r| r.status == RunStatus::Failed).count();
    if failed > 0 {
        eprintln!("{failed} window(s) failed; see the ERROR column and `reporting-etl runs`.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A signal that stops `run --once`.
#[derive(Debug, Clone, Copy)]
enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal's number.
    fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// First signal: record it, stop starting windows, and after `grace` abort the running ones.
/// A second signal exits the process at once.
async fn watch_signals(
    grace: Duration,
    stopping: CancellationToken,
    abort: CancellationToken,
    signalled: Arc<OnceLock<StopSignal>>,
) {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(error = %error, "Cannot catch SIGINT/SIGTERM; an interrupt stops this run at once.");
            return;
        }
    };
    let first = signals.next().await;
    let _ = signalled.set(first);
    tracing::warn!(
        signal = first.name(),
        grace_secs = grace.as_secs(),
        "Interrupted: starting no new windows; running ones may commit within the grace period. Interrupt again to stop at once."
    );
    stopping.cancel();
    tokio::select! {
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "Grace period over: rolling back the windows still running.");
            abort.cancel();
        }
        second = signals.next() => exit_now(second),
    }
    exit_now(signals.next().await);
}

/// The second signal: no summary, no records; the next start marks this process's runs
/// `interrupted` (their transactions roll back when the connections close).
fn exit_now(signal: StopSignal) -> ! {
    eprintln!(
        "\n{} again: stopping at once. Unfinished windows roll back; the next start records them as interrupted.",
        signal.name()
    );
    std::process::exit(signal.exit_code().into())
}

/// SIGINT and SIGTERM listeners.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

/// A stored run status (`etl.runs.status`) back as a [`RunStatus`].
fn run_status(stored: &str) -> RunStatus {
    [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Skipped,
    ]
    .into_iter()
    .find(|status| status.as_str() == stored)
    .unwrap_or(RunStatus::Failed)
}

/// Every run this process recorded, as window reports (after an abort dropped the jobs' own).
async fn runs_of_instance(pool: &sqlx::PgPool, instance: uuid::Uuid) -> Result<Vec<WindowReport>> {
    type Row = (
        i64,
        String,
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        String,
        i64,
        i32,
        f64,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, job, dataset, scope, window_start, window_end, status, rows_written, upstream_calls,
                extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8, error, error_kind
         FROM etl.runs WHERE instance_id = $1 ORDER BY id",
    )
    .bind(instance)
    .fetch_all(pool)
    .await
    .context("reading this process's run records")?;
    Ok(rows
        .into_iter()
        .map(
            |(id, job, dataset, scope, start, end, status, rows, calls, seconds, error, kind)| WindowReport {
                run_id: Some(id),
                job,
                dataset,
                scope,
                window: start.zip(end),
                status: run_status(&status),
                rows,
                calls: calls.into(),
                seconds,
                error,
                error_kind: kind.as_deref().and_then(FailureKind::parse),
            },
        )
        .collect())
}

/// One progress bar per job (windows done of planned, rows, calls, time throttled, failures,
/// ETA), drawn by the tracing-indicatif layer below the log lines (see `crate::telemetry`).
///
/// Calls and throttled time are read from the running windows' [`CallFigures`], which the
/// executor adds to as calls are made and rate-budget waits end, so a job held back by its
/// source's budget shows it while it waits rather than when its window ends. Redrawn on every
/// event and every [`REDRAW`].
async fn draw_progress(mut events: tokio::sync::mpsc::UnboundedReceiver<Progress>) {
    use tracing_indicatif::span_ext::IndicatifSpanExt;
    let style = indicatif::ProgressStyle::with_template(
        "{span_fields:12} {wide_bar} {pos}/{len} windows · {msg} · {elapsed} · ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut bars: std::collections::BTreeMap<String, (tracing::Span, JobProgress)> =
        std::collections::BTreeMap::new();
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            _ = redraw.tick() => None,
        };
        if let Some(event) = event {
            let job = match &event {
                Progress::Planned { job, .. } | Progress::Started { job, .. } => job.clone(),
                Progress::Finished(report) => report.job.clone(),
            };
            let (span, progress) = bars.entry(job.clone()).or_insert_with(|| {
                let span = tracing::info_span!("job", job, indicatif.pb_show = tracing::field::Empty);
                span.pb_set_style(&style);
                span.pb_set_length(0);
                span.pb_start();
                (span, JobProgress::default())
            });
            match &event {
                Progress::Planned { windows, .. } => span.pb_inc_length(*windows as u64),
                Progress::Finished(_) => span.pb_inc(1),
                Progress::Started { .. } => {}
            }
            progress.add(event);
        }
        for (span, progress) in bars.values() {
            span.pb_set_message(&progress.message());
        }
    }
}

/// How often the bars' figures are redrawn between events (a rate-budget wait ends unannounced).
const REDRAW: Duration = Duration::from_millis(250);

/// What one job's bar shows besides the window count.
#[derive(Default)]
struct JobProgress {
    rows: i64,
    failed: usize,
    /// The figures of every window started so far (running and ended).
    windows: Vec<Arc<CallFigures>>,
}

impl JobProgress {
    fn add(&mut self, event: Progress) {
        match event {
            Progress::Planned { .. } => {}
            Progress::Started { figures, .. } => self.windows.push(figures),
            Progress::Finished(report) => {
                self.rows += report.rows;
                self.failed += usize::from(report.status == RunStatus::Failed);
            }
        }
    }

    /// `12 rows · 4 calls · throttled 1.5s`, plus ` · 1 failed` once a window failed.
    fn message(&self) -> String {
        let calls: i64 = self.windows.iter().map(|f| f.calls()).sum();
        let throttled_ms: i64 = self.windows.iter().map(|f| f.throttled_ms()).sum();
        let failed = if self.failed > 0 {
            format!(" · {} failed", self.failed)
        } else {
            String::new()
        };
        format!(
            "{} rows · {calls} calls · throttled {}{failed}",
            self.rows,
            throttled(throttled_ms)
        )
    }
}

/// Time throttled, to a tenth of a second (`0.0s`, `1.5s`, `75.0s`).
fn throttled(ms: i64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

/// The named jobs (all enabled ones when none are named); an unknown name is an error.
pub(crate) fn select_jobs(settings: &Settings, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(settings
            .jobs
            .iter()
            .filter(|(_, job)| job.enabled)
            .map(|(name, _)| name.clone())
            .collect());
    }
    for name in names {
        if !settings.jobs.contains_key(name) {
            let known: Vec<&str> = settings.jobs.keys().map(String::as_str).collect();
            return Err(InvalidArguments(format!(
                "--job {name}: no such job (configured: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    Ok(names.to_vec())
}

/// The table printed after a run: one line per window.
pub(crate) fn summary(reports: &[WindowReport]) -> String {
    let mut table = Table::new([
        "JOB", "DATASET", "SCOPE", "WINDOW", "STATUS", "KIND", "ROWS", "CALLS", "SECONDS", "ERROR",
    ]);
    let mut sorted: Vec<&WindowReport> = reports.iter().collect();
    sorted.sort_by(|a, b| (&a.job, &a.scope, a.window).cmp(&(&b.job, &b.scope, b.window)));
    for report in sorted {
        let window = match report.window {
            Some((start, end)) => format!(
                "{} → {}",
                start.format("%Y-%m-%d %H:%M"),
                end.format("%Y-%m-%d %H:%M")
            ),
            None => "snapshot".into(),
        };
        table.row([
            report.job.clone(),
            report.dataset.clone(),
            report.scope.clone(),
            window,
            report.status.as_str().to_owned(),
            report
                .error_kind
                .map(FailureKind::as_str)
                .unwrap_or_default()
                .to_owned(),
            report.rows.to_string(),
            report.calls.to_string(),
            format!("{:.1}", report.seconds),
            report.error.clone().unwrap_or_default(),
        ]);
    }
    let rows: i64 = reports.iter().map(|r| r.rows).sum();
    let failed = reports.iter().filter(|r| r.status == RunStatus::Failed).count();
    let interrupted = reports
        .iter()
        .filter(|r| r.status == RunStatus::Interrupted)
        .count();
    let interrupted = if interrupted > 0 {
        format!(", {interrupted} interrupted (rolled back)")
    } else {
        String::new()
    };
    format!(
        "{}\n{} window(s), {} row(s) written, {} failed{interrupted}.\n",
        table.render(),
        reports.len(),
        rows,
        failed
    )
}
