//! Running a set of jobs once (`run --once`, the demo): one task per source, with a graceful
//! stop and an abort.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::anyhow;
use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use crate::failure::FailureKind;
use crate::store::runs::Trigger;

use super::report::failed_job;
use super::{Runner, WindowReport};

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
