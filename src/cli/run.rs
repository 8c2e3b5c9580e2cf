//! `run --once` (and backfills): wire store, auth, executor and runner together, run the
//! selected jobs, print a summary table, exit non-zero if any window failed.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, bail};
use tokio_util::sync::CancellationToken;

use super::RunArgs;
use super::table::Table;
use crate::auth;
use crate::config::Settings;
use crate::executor::Executor;
use crate::jobs::runner::{self, Runner, WindowReport};
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
        let store = Store::open(&settings.database, command).await?;
        let registry = auth::build(&settings, store.pool().clone());
        let executor = Arc::new(Executor::new(settings.clone(), registry)?);
        let runner = Arc::new(Runner::new(
            settings,
            store.pool().clone(),
            store.instance().id(),
            executor,
        ));
        Ok(Engine { store, runner })
    }
}

/// `run --once [--job NAME]... [--from DATE --to DATE]`
pub async fn once(args: RunArgs, settings: Settings) -> Result<ExitCode> {
    let jobs = select_jobs(&settings, &args.jobs)?;
    let backfill = match (args.from, args.to) {
        (Some(from), Some(to)) if from >= to => bail!("--from {from} must be before --to {to}"),
        (Some(from), Some(to)) => Some((from, to)),
        _ => None,
    };
    let trigger = if backfill.is_some() {
        Trigger::Backfill
    } else {
        Trigger::Once
    };
    let engine = Engine::start(Arc::new(settings), "run --once").await?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Interrupted: finishing the current windows, starting no new ones.");
            stop.cancel();
        }
    });
    let reports = runner::run_once(engine.runner.clone(), jobs, trigger, backfill, cancel).await;
    print!("{}", summary(&reports));
    engine.store.close().await?;
    let failed = reports.iter().filter(|r| r.status == RunStatus::Failed).count();
    if failed > 0 {
        eprintln!("{failed} window(s) failed; see the ERROR column and `reporting-etl runs`.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
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
            bail!("--job {name}: no such job (configured: {})", known.join(", "));
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
