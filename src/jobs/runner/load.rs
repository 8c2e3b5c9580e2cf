//! One scope × window of a job: its pages staged, then swapped into the table with its run
//! record and watermark in one short transaction, inside the job's lock (re-taken if its
//! session was lost) and within the job's window deadline.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::archive::{Recorder, Replay};
use crate::catalog::DatasetInfo;
use crate::config::SourceSettings;
use crate::datasets::{self, LoadRequest, ScopeTarget, Window};
use crate::executor::{CallContext, CallFigures};
use crate::failure::FailureKind;
use crate::store::locks::{self, HeldLock};
use crate::store::runs::{self, Finished, NewRun, RunFigures, RunStatus, Trigger};
use crate::store::scope_cache;
use crate::store::{is_connection_error, watermarks};
use crate::vendors;

use super::report::{
    JobLockLost, WindowDeadline, catching_panics, failed_job, failure_kind, record_metrics, run_figures,
};
use super::{JobLock, Progress, Runner, WindowReport};

impl Runner {
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
    pub(super) async fn run_window(
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
        replay: Option<Arc<Replay>>,
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
            let mut call = call_context(source_name, dataset.name, figures.clone()).with_deadline(deadline);
            #[cfg(feature = "sandbox")]
            super::injected_panic(job);
            // The load's one connection; no transaction is open on it while the vendor is called.
            let mut sink = datasets::Sink::acquire(&self.pool).await?;
            #[cfg(feature = "sandbox")]
            if let Some(remap) = super::remapped(job) {
                sink.remap(remap);
            }
            // A rebuild's calls are answered from the archive; a load's answers are archived
            // with its rows (unless its source keeps no archive).
            let recorder = match &replay {
                Some(replay) => {
                    call = call.with_replay(replay.clone());
                    None
                }
                None if source.archive().keeps_answers() => {
                    let recorder = Arc::new(Recorder::new());
                    call = call.with_archive(recorder.clone());
                    Some(recorder)
                }
                None => None,
            };
            let request = LoadRequest {
                source_name,
                source,
                dataset,
                scope,
                window,
                run_id,
                call: &call,
            };
            if let Some(recorder) = recorder {
                sink.archive(recorder, request.archive_window(job));
            }
            // Staging and the swap are timed; the commit is not, so a window is never reported
            // failed after it committed.
            let staged = async {
                let loaded = vendors::load(&self.executor, &mut sink, &request).await?;
                if let Some(replay) = &replay {
                    replay.check_all_used()?;
                }
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
            if let Finished::AlreadyFinal(status) = runs::finish(
                &mut *tx,
                run_id,
                RunStatus::Succeeded,
                &run_figures,
                None,
                chrono::Utc::now(),
            )
            .await?
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
        // A panic inside it (a bug, or a value from outside that slipped its bounds) fails the
        // window like any other error.
        let outcome = tokio::select! {
            biased; // a load that finished wins over a loss noticed in the same instant
            outcome = catching_panics(load) => outcome,
            () = self.job_locks.lost(held) => Err(JobLockLost.into()),
        };
        tracing::info!("Left the job's window.");
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(done) if trigger == Trigger::Rebuild => {
                // Counted, but no freshness: a rebuild re-derives old answers.
                metrics::counter!("reporting_etl_runs_total", "job" => job.to_owned(),
                    "dataset" => dataset.name, "outcome" => "succeeded")
                .increment(1);
                tracing::info!(
                    rows = done.rows_written,
                    seconds,
                    "Window rebuilt from the archive."
                );
                report(RunStatus::Succeeded, done.rows_written, done.upstream_calls, None)
            }
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
}

pub(super) fn call_context(source: &str, dataset: &str, figures: Arc<CallFigures>) -> CallContext {
    CallContext::new(source, dataset).with_figures(figures)
}
