//! Writing run records: skips, failures and finished windows, and the outcomes the database
//! could not take when they happened (kept in memory, bounded, until a later run reaches it).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::catalog::DatasetInfo;
use crate::failure::FailureKind;
use crate::store::runs::{self, NewRun, RunFigures, RunStatus, Trigger};

use super::report::record_metrics;
use super::{Runner, WindowReport};

/// At most this many failed runs wait to be recorded; beyond it they are only logged (memory
/// stays bounded however long the database is away).
const MAX_UNRECORDED_RUNS: usize = 1000;

/// Run outcomes the database could not take when they happened.
#[derive(Default)]
pub(super) struct Unrecorded {
    /// Runs whose record is still `running`: the outcome to write into it.
    finishes: Vec<(i64, RunStatus, RunFigures, FailureKind, String, DateTime<Utc>)>,
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

impl Runner {
    /// Writes the outcomes the database missed (see [`Runner::unrecorded`]); stops at the first
    /// write that fails and keeps the rest. Returns how many were written.
    pub async fn record_unrecorded(&self) -> usize {
        let Unrecorded { finishes, missed } = std::mem::take(&mut *self.lock_unrecorded());
        let mut written = 0;
        let mut finishes = finishes.into_iter();
        let mut failed_on = None;
        for (run_id, status, figures, kind, message, ended_at) in finishes.by_ref() {
            match runs::finish(
                &self.pool,
                run_id,
                status,
                &figures,
                Some((kind, &message)),
                ended_at,
            )
            .await
            {
                Ok(_) => written += 1,
                Err(error) => {
                    failed_on = Some(((run_id, status, figures, kind, message, ended_at), error));
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
                        let ended_at = Utc::now();
                        if let Err(error) =
                            runs::finish(&self.pool, run_id, RunStatus::Failed, &figures, error, ended_at)
                                .await
                        {
                            failed_on = Some((
                                (run_id, RunStatus::Failed, figures, fires.kind, message, ended_at),
                                error,
                            ));
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
        ended_at: DateTime<Utc>,
        error: &anyhow::Error,
    ) {
        tracing::error!(run_id, status = status.as_str(), error = %format!("{error:#}"),
            "Could not record a run's outcome; it will be recorded when the database is back.");
        let mut unrecorded = self.lock_unrecorded();
        if unrecorded.finishes.len() < MAX_UNRECORDED_RUNS {
            unrecorded
                .finishes
                .push((run_id, status, figures, kind, message.to_owned(), ended_at));
        }
    }

    /// A fire that could not create its run record: log it and count it for later.
    pub(super) fn missed(
        &self,
        job: &str,
        source: &str,
        dataset: &str,
        trigger: Trigger,
        kind: FailureKind,
        error: &str,
    ) {
        tracing::warn!(error_kind = kind.as_str(), error = %error,
            "Run could not start or be recorded; it will be recorded as failed when the database takes writes again.");
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

    /// Moves a `running` record to its outcome, or keeps the outcome for when the database is back.
    pub(super) async fn finish_or_keep(
        &self,
        run_id: i64,
        status: RunStatus,
        figures: RunFigures,
        error: (FailureKind, &str),
    ) {
        // The window ended now, whenever the database takes its record.
        let ended_at = Utc::now();
        if let Err(failed) = runs::finish(&self.pool, run_id, status, &figures, Some(error), ended_at).await {
            self.unfinished(run_id, status, figures, error, ended_at, &failed);
        }
    }

    /// Records a trigger that did not run because the job was already running.
    pub(super) async fn record_skip(
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
    pub(super) async fn record_failure(
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
}
