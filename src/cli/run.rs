//! `run --once` (and backfills): wire store, auth, executor and runner together, run the
//! selected jobs, print a summary table, exit non-zero if any window failed.

use std::process::ExitCode;
use std::sync::Arc;

use std::io::IsTerminal;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::table::Table;
use super::{InvalidArguments, RunArgs};
use crate::auth;
use crate::config::Settings;
use crate::executor::{Executor, ExecutorOptions};
use crate::jobs::runner::{self, Progress, Runner, WindowReport};
use crate::store::Store;
use crate::store::runs::{RunStatus, Trigger};

/// The running parts of the service, built once per process.
pub struct Engine {
    pub store: Store,
    pub runner: Arc<Runner>,
}

impl Engine {
    /// Opens the store (embedded server when needed), builds auth, the executor and the runner.
    pub async fn start(settings: Arc<Settings>, command: &str) -> Result<Engine> {
        Engine::start_with(settings, command, None).await
    }

    /// Like [`Engine::start`], sending the runner's progress events to `progress`.
    pub async fn start_with(
        settings: Arc<Settings>,
        command: &str,
        progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    ) -> Result<Engine> {
        let store = Store::open(&settings.database, command).await?;
        let registry = auth::build(&settings, store.pool().clone());
        // Every process on this database spends one rate budget per source.
        let executor = Arc::new(Executor::with_shared_budget(
            settings.clone(),
            registry,
            ExecutorOptions::default(),
            store.pool().clone(),
            store.instance().id(),
        )?);
        let mut runner = Runner::new(
            settings,
            store.pool().clone(),
            store.instance().id(),
            executor,
            store.job_locks(),
        );
        if let Some(progress) = progress {
            runner = runner.with_progress(progress);
        }
        Ok(Engine {
            store,
            runner: Arc::new(runner),
        })
    }
}

/// `run --once [--job NAME]... [--from DATE --to DATE]`
pub async fn once(args: RunArgs, settings: Settings) -> Result<ExitCode> {
    let jobs = select_jobs(&settings, &args.jobs)?;
    let backfill = match (args.from, args.to) {
        (Some(from), Some(to)) if from >= to => {
            return Err(InvalidArguments(format!("--from {from} must be before --to {to}")).into());
        }
        (Some(from), Some(to)) => Some((from, to)),
        _ => None,
    };
    let trigger = if backfill.is_some() {
        Trigger::Backfill
    } else {
        Trigger::Once
    };
    // A progress line on a terminal; plain log lines (one per window) otherwise.
    let (progress, display) = if std::io::stderr().is_terminal() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Some(sender), Some(tokio::spawn(draw_progress(receiver))))
    } else {
        (None, None)
    };
    let engine = Engine::start_with(Arc::new(settings), "run --once", progress).await?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Interrupted: finishing the current windows, starting no new ones.");
            stop.cancel();
        }
    });
    let reports = runner::run_once(engine.runner.clone(), jobs, trigger, backfill, cancel).await;
    let Engine { store, runner } = engine;
    drop(runner); // closes the progress channel
    if let Some(display) = display {
        let _ = display.await;
    }
    print!("{}", summary(&reports));
    store.close().await?;
    let failed = reports.iter().filter(|r| r.status == RunStatus::Failed).count();
    if failed > 0 {
        eprintln!("{failed} window(s) failed; see the ERROR column and `reporting-etl runs`.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Redraws one status line on stderr: windows done of planned, rows, calls, elapsed and ETA.
async fn draw_progress(mut events: tokio::sync::mpsc::UnboundedReceiver<Progress>) {
    use std::io::Write;
    let started = std::time::Instant::now();
    let (mut planned, mut done, mut failed, mut rows, mut calls) = (0usize, 0usize, 0usize, 0i64, 0i64);
    while let Some(event) = events.recv().await {
        match event {
            Progress::Planned(windows) => planned += windows,
            Progress::Finished(report) => {
                done += 1;
                failed += usize::from(report.status == RunStatus::Failed);
                rows += report.rows;
                calls += report.calls;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if done > 0 && planned > done {
            format!("ETA {:.0}s", elapsed / done as f64 * (planned - done) as f64)
        } else {
            "ETA –".into()
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K[{done}/{planned} windows{}] {rows} rows · {calls} calls · {elapsed:.0}s · {eta}",
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
        let _ = stderr.flush();
    }
    eprintln!();
}

/// The named jobs (all enabled ones when none are named); an unknown name is an error.
pub fn select_jobs(settings: &Settings, names: &[String]) -> Result<Vec<String>> {
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
pub fn summary(reports: &[WindowReport]) -> String {
    let mut table = Table::new([
        "JOB", "DATASET", "SCOPE", "WINDOW", "STATUS", "ROWS", "CALLS", "SECONDS", "ERROR",
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
            report.rows.to_string(),
            report.calls.to_string(),
            format!("{:.1}", report.seconds),
            report.error.clone().unwrap_or_default(),
        ]);
    }
    let rows: i64 = reports.iter().map(|r| r.rows).sum();
    let failed = reports.iter().filter(|r| r.status == RunStatus::Failed).count();
    format!(
        "{}\n{} window(s), {} row(s) written, {} failed.\n",
        table.render(),
        reports.len(),
        rows,
        failed
    )
}
