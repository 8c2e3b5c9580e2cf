//! `run --once` (and backfills): build the engine (`crate::app`), run the
//! selected jobs, print a summary table, exit non-zero if any window failed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::table::Table;
use super::{InvalidArguments, RebuildArgs, RunArgs};
use crate::app::Engine;
use crate::config::Settings;
use crate::executor::CallFigures;
use crate::failure::FailureKind;
use crate::jobs::runner::{self, Progress, WindowReport};
use crate::shutdown::{self, Shutdown};
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
    let shutdown = Shutdown::watch(grace);
    let outcome = runner::run_once_until(
        engine.runner.clone(),
        jobs,
        trigger,
        backfill,
        shutdown.stopping.clone(),
        shutdown.abort.clone(),
    )
    .await;
    if outcome.aborted {
        shutdown::record_stop(&engine).await;
    }
    let Engine { store, runner } = engine;
    let mut reports = outcome.reports;
    if outcome.aborted {
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
    if let Some(signal) = shutdown.signalled() {
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
    let now = chrono::Utc::now();
    Ok(crate::store::runs::of_instance(pool, instance)
        .await?
        .into_iter()
        .map(|run| WindowReport {
            run_id: Some(run.id),
            seconds: (run.finished_at.unwrap_or(now) - run.started_at).as_seconds_f64(),
            job: run.job,
            dataset: run.dataset,
            scope: run.scope,
            window: run.window_start.zip(run.window_end),
            status: run_status(&run.status),
            rows: run.rows_written,
            calls: run.upstream_calls.into(),
            error: run.error,
            error_kind: run.error_kind.as_deref().and_then(FailureKind::parse),
        })
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
