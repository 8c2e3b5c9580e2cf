//! A rebuild of a job (`reporting-etl rebuild`): its windows are the ones the job loaded (the
//! latest successful load of each scope and window, in the order they were loaded, so that
//! overlapping windows end as the loads left them), each re-derived from that load's archived
//! answers through the same window code as a load ([`Runner::run_window`] with a replay): the
//! same swap, short transaction, lock, deadline, progress and failure kinds, and no upstream call.
//! A window whose load kept no archive fails, naming it, and keeps its rows; the next window goes
//! on (a rebuild moves no watermark, so a failed window leaves no gap behind one).

use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime};
use tokio_util::sync::CancellationToken;

use crate::archive::{self, Replay};
use crate::catalog::DatasetInfo;
use crate::config::SourceSettings;
use crate::datasets::{ScopeTarget, Window};
use crate::failure::FailureKind;
use crate::store::runs::{RunFigures, Trigger};

use super::report::failure_kind;
use super::{JobLock, Progress, Runner, WindowReport};

impl Runner {
    /// Rebuilds the windows of `job` that overlap `range` (`[from, to)` as UTC days; every
    /// window when `None`; snapshots always) from the archive.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn rebuild_locked(
        &self,
        job: &str,
        source_name: &str,
        source: &SourceSettings,
        dataset: &'static DatasetInfo,
        range: Option<(NaiveDate, NaiveDate)>,
        cancel: &CancellationToken,
        lock: &JobLock,
    ) -> Vec<WindowReport> {
        let day = |date: NaiveDate| date.and_time(NaiveTime::MIN).and_utc();
        let range = range.map(|(from, to)| (day(from), day(to)));
        let planned = match archive::store::planned_windows(&self.pool, job, range).await {
            Ok(planned) => planned,
            Err(error) => {
                let message = format!("planning the rebuild: {error:#}");
                return vec![
                    self.record_failure(
                        job,
                        source_name,
                        dataset,
                        "all",
                        None,
                        Trigger::Rebuild,
                        (failure_kind(&error), &message),
                        RunFigures::default(),
                    )
                    .await,
                ];
            }
        };
        self.report_progress(Progress::Planned {
            job: job.to_owned(),
            windows: planned.len(),
        });
        let mut reports = Vec::new();
        for window in planned {
            if cancel.is_cancelled() {
                break;
            }
            let named = describe(&window);
            let replay = match window.scope_target.as_ref().and_then(ScopeTarget::from_json) {
                Some(scope) => Replay::open(&self.pool, Some(window.loaded_by), named.clone())
                    .await
                    .map(|replay| (scope, replay))
                    .map_err(|error| (failure_kind(&error), format!("{named}: {error:#}"))),
                None => Err((FailureKind::InvalidAnswer, archive::replay::no_archive(&named))),
            };
            let report = match replay {
                Ok((scope, replay)) => {
                    self.run_window(
                        job,
                        source_name,
                        source,
                        dataset,
                        &scope,
                        window.window.map(|(start, end)| Window::new(start, end)),
                        Trigger::Rebuild,
                        false,
                        lock,
                        None,
                        Some(Arc::new(replay)),
                    )
                    .await
                }
                Err((kind, message)) => {
                    self.record_failure(
                        job,
                        source_name,
                        dataset,
                        &window.scope,
                        window.window,
                        Trigger::Rebuild,
                        (kind, &message),
                        RunFigures::default(),
                    )
                    .await
                }
            };
            self.report_progress(Progress::Finished(report.clone()));
            reports.push(report);
        }
        reports
    }
}

/// A planned window as messages name it: "window 2026-11-01T00:00:00Z/2026-11-02T00:00:00Z of
/// scope 99999 (loaded by run 12)".
fn describe(window: &archive::store::Planned) -> String {
    let when = match window.window {
        Some((start, end)) => format!(
            "window {}/{}",
            start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "snapshot".to_owned(),
    };
    format!(
        "{when} of scope {} (loaded by run {})",
        window.scope, window.loaded_by
    )
}
