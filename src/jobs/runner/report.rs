//! What a window ended as: its [`WindowReport`], its run figures, the `/metrics` it counts, and
//! the classification of its failure into a [`FailureKind`] from the typed errors in its chain.

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::auth::AuthError;
use crate::executor::{CallError, CallFigures};
use crate::failure::{Failure, FailureKind};
use crate::store::is_connection_error;
use crate::store::runs::{CallBreakdown, RunFigures, RunStatus};

/// Why a window stopped when its job's lock was lost mid-window.
#[derive(Debug)]
pub(super) struct JobLockLost;

impl std::fmt::Display for JobLockLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "interrupted: the job's lock was lost mid-window (its database session ended, e.g. in a \
             database restart); the window was rolled back so no two processes load it at once",
        )
    }
}

impl std::error::Error for JobLockLost {}

/// Why a window stopped when it outlasted its job's `window_deadline_secs`.
#[derive(Debug)]
pub(super) struct WindowDeadline {
    pub(super) job: String,
    pub(super) secs: u64,
}

impl std::fmt::Display for WindowDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "window deadline of {} s exceeded (jobs.{}.window_deadline_secs); the window was rolled back",
            self.secs, self.job
        )
    }
}

impl std::error::Error for WindowDeadline {}

/// A window, a discovery or a job whose task panicked: a bug, recorded as a failure of kind
/// `internal` with the panic's message (the run is never left `running`, and the service goes on).
#[derive(Debug)]
pub(super) struct Panicked(pub(super) String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "internal error (a bug; please report it with this message): the task panicked: {}",
            self.0
        )
    }
}

impl std::error::Error for Panicked {}

/// Runs `future`, turning a panic inside it into a [`Panicked`] error. Whatever the future held
/// is dropped while unwinding: an open transaction rolls back, so a window that panicked keeps
/// its previous rows. Every lock the runner shares is taken with `unwrap_or_else(into_inner)`,
/// so a panic poisons nothing that later runs need.
pub(super) async fn catching_panics<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(future).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => Err(Panicked(panic_message(payload.as_ref())).into()),
    }
}

/// The text a panic was raised with (`panic!("…")`, an `expect`, an overflow), if it has one.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Why a window or a discovery failed, from the typed errors in its chain (the first one that
/// knows its kind): the runner's own deadline and lock errors, the executor's [`CallError`],
/// auth's [`AuthError`], a [`Failure`] a loader or the sink raised, the database driver's
/// errors, and JSON that did not decode. Messages are never read.
pub(super) fn failure_kind(error: &anyhow::Error) -> FailureKind {
    if is_connection_error(error) {
        return FailureKind::Database;
    }
    for cause in error.chain() {
        if cause.is::<Panicked>() {
            return FailureKind::Internal;
        }
        if cause.is::<WindowDeadline>() {
            return FailureKind::Timeout;
        }
        if cause.is::<JobLockLost>() {
            return FailureKind::LockLost;
        }
        if let Some(call) = cause.downcast_ref::<CallError>() {
            return call.kind();
        }
        if let Some(auth) = cause.downcast_ref::<AuthError>() {
            return auth.kind();
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.kind;
        }
        if let Some(sqlx::Error::Database(error)) = cause.downcast_ref::<sqlx::Error>()
            && error.code().is_some_and(|code| code.starts_with("22"))
        {
            // SQLSTATE class 22, data exception: a value the upstream sent that its column cannot
            // hold (a timestamp in year 0 or 300000, a number past the column's range), found
            // while its page was staged. The answer is at fault, not the database.
            return FailureKind::InvalidAnswer;
        }
        if cause.is::<sqlx::Error>() {
            return FailureKind::Database;
        }
        if let Some(json) = cause.downcast_ref::<serde_json::Error>() {
            return match json.classify() {
                serde_json::error::Category::Data => FailureKind::SchemaMismatch,
                _ => FailureKind::InvalidAnswer,
            };
        }
    }
    FailureKind::Internal
}

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
    /// Why it failed or was interrupted (`None` when it succeeded or was skipped).
    pub error_kind: Option<FailureKind>,
}

/// Run outcomes for `/metrics` (labels: job, dataset, scope — all bounded by the config). The
/// `outcome` of a failed or interrupted run is its kind (`rate_limited`, `reauthorise`, …), so
/// that the kinds of failure are told apart without reading `etl.runs`.
pub(super) fn record_metrics(
    job: &str,
    dataset: &str,
    scope: &str,
    outcome: Result<&RunFigures, FailureKind>,
) {
    let label = match outcome {
        Ok(_) => "succeeded",
        Err(kind) => kind.as_str(),
    };
    metrics::counter!("reporting_etl_runs_total", "job" => job.to_owned(), "dataset" => dataset.to_owned(), "outcome" => label)
        .increment(1);
    if let Ok(figures) = outcome {
        metrics::counter!("reporting_etl_rows_written_total", "job" => job.to_owned(), "dataset" => dataset.to_owned())
            .increment(figures.rows_written.max(0) as u64);
        metrics::gauge!(crate::jobs::freshness::LAST_SUCCESS, "job" => job.to_owned(), "scope" => scope.to_owned())
            .set(Utc::now().timestamp() as f64);
    }
}

/// A run's figures from its calls' figures, plus those of the scope discovery it carries (the
/// first window of a trigger carries the discovery that preceded it).
pub(super) fn run_figures(
    figures: &CallFigures,
    discovery: Option<&CallFigures>,
    rows: i64,
    pages: i32,
    warnings: Vec<String>,
) -> RunFigures {
    let count = |n: i64| i32::try_from(n.max(0)).unwrap_or(i32::MAX);
    let mut calls = CallBreakdown {
        data: count(figures.calls() - figures.repeated()),
        discovery: 0,
        token: count(figures.token_calls()),
        retry: count(figures.repeated()),
    };
    let mut retries = figures.retries();
    let mut throttled_ms = figures.throttled_ms();
    if let Some(discovery) = discovery {
        calls.discovery = count(discovery.calls() - discovery.repeated());
        calls.token = calls.token.saturating_add(count(discovery.token_calls()));
        calls.retry = calls.retry.saturating_add(count(discovery.repeated()));
        retries = retries.saturating_add(discovery.retries());
        throttled_ms = throttled_ms.saturating_add(discovery.throttled_ms());
    }
    RunFigures {
        rows_written: rows,
        pages,
        upstream_calls: calls.total(),
        retries: count(retries),
        throttled_ms,
        warnings,
        calls,
    }
}

pub(super) fn failed_job(job: &str, dataset: &str, kind: FailureKind, error: String) -> WindowReport {
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
        error_kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    fn call_error(kind: FailureKind) -> CallError {
        CallError {
            source_name: "retarus".into(),
            dataset: "fax_out_udr".into(),
            failure: crate::executor::CallFailure::RetriesExhausted {
                attempts: 6,
                message: "HTTP 429".into(),
                kind,
            },
        }
    }

    /// The kind comes from the typed error inside the chain, however much context the layers
    /// above wrapped around it; a chain with none is `internal`, never a guess from its text.
    #[test]
    fn a_failure_is_classified_by_the_typed_error_in_its_chain() {
        let wrapped = anyhow::Error::new(call_error(FailureKind::RateLimited))
            .context("fetching page 3")
            .context("loading retarus.fax_out_udr");
        assert_eq!(failure_kind(&wrapped), FailureKind::RateLimited);

        let deadline = anyhow::Error::new(WindowDeadline {
            job: "fax".into(),
            secs: 1,
        });
        assert_eq!(failure_kind(&deadline), FailureKind::Timeout);
        assert_eq!(
            failure_kind(&anyhow::Error::new(JobLockLost)),
            FailureKind::LockLost
        );

        let reauthorise = AuthError::Reauthorize {
            source_name: "roubler".into(),
            reason: "invalid_grant".into(),
        };
        assert_eq!(
            failure_kind(&anyhow::Error::new(reauthorise).context("discovering scopes")),
            FailureKind::Reauthorise
        );
        let cycling = anyhow::Error::new(Failure::invalid_answer("pages repeat")).context("page 4");
        assert_eq!(failure_kind(&cycling), FailureKind::InvalidAnswer);

        let shape = serde_json::from_str::<Vec<u32>>(r#"{"a": 1}"#).expect_err("wrong shape");
        assert_eq!(
            failure_kind(&anyhow::Error::new(shape).context("reading data.customers")),
            FailureKind::SchemaMismatch
        );
        let broken = serde_json::from_str::<Vec<u32>>("[1, ").expect_err("cut off");
        assert_eq!(
            failure_kind(&anyhow::Error::new(broken)),
            FailureKind::InvalidAnswer
        );

        let database = anyhow::Error::new(sqlx::Error::RowNotFound).context("recording the run");
        assert_eq!(failure_kind(&database), FailureKind::Database);
        let lost = anyhow::Error::new(sqlx::Error::PoolTimedOut);
        assert_eq!(failure_kind(&lost), FailureKind::Database);

        // Words in a message decide nothing.
        let untyped = anyhow!("HTTP 429: window deadline exceeded; re-authorise; Limit Exceeded");
        assert_eq!(failure_kind(&untyped), FailureKind::Internal);
    }
}
