//! What a call carries and how it ends: the caller's [`CallContext`] and the run's
//! [`CallFigures`], a GraphQL answer's [`GraphqlOutcome`], and the typed [`CallError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::archive::{Recorder, Replay};
use crate::failure::FailureKind;

/// Figures of one run, shared by all its calls (added up on the run record). Every call of the
/// run adds to these from whichever task it runs on, hence atomics.
#[derive(Debug, Default)]
pub struct CallFigures {
    /// Requests sent upstream (retries included).
    pub calls: AtomicI64,
    /// Attempts after the first, over all calls.
    pub retries: AtomicI64,
    /// Time spent waiting for the source's rate budget, in milliseconds.
    pub throttled_ms: AtomicI64,
    /// Bytes of answer bodies received.
    pub bytes: AtomicI64,
    /// Requests among `calls` that repeated an earlier attempt of the same call (a retry, a
    /// renewed or replaced token): `calls - repeated` are first attempts.
    pub repeated: AtomicI64,
    /// Requests to the source's token endpoint made to get these calls a credential (not in
    /// `calls`).
    pub token_calls: AtomicI64,
}

impl CallFigures {
    pub fn calls(&self) -> i64 {
        self.calls.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> i64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn throttled_ms(&self) -> i64 {
        self.throttled_ms.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> i64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn repeated(&self) -> i64 {
        self.repeated.load(Ordering::Relaxed)
    }
    pub fn token_calls(&self) -> i64 {
        self.token_calls.load(Ordering::Relaxed)
    }
}

/// Who is calling: names for errors and metrics, and where the figures go.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub source: String,
    pub dataset: String,
    pub figures: Arc<CallFigures>,
    /// When the run must be over: no attempt starts, and no wait is begun, that would end after
    /// it. `None`: no deadline.
    pub deadline: Option<Instant>,
    /// Where the answers these calls decode are archived (a window's load; see [`crate::archive`]).
    pub archive: Option<Arc<Recorder>>,
    /// Set in a rebuild: the calls send nothing and decode the window's archived answers instead.
    pub replay: Option<Arc<Replay>>,
}

impl CallContext {
    /// A context with fresh figures and no deadline.
    pub fn new(source: impl Into<String>, dataset: impl Into<String>) -> CallContext {
        CallContext {
            source: source.into(),
            dataset: dataset.into(),
            figures: Arc::new(CallFigures::default()),
            deadline: None,
            archive: None,
            replay: None,
        }
    }

    /// The same caller, archiving every answer it decodes into `recorder`.
    pub fn with_archive(mut self, recorder: Arc<Recorder>) -> CallContext {
        self.archive = Some(recorder);
        self
    }

    /// The same caller, answered from the archive by `replay` instead of the upstream.
    pub fn with_replay(mut self, replay: Arc<Replay>) -> CallContext {
        self.replay = Some(replay);
        self
    }

    /// The same caller, adding to `figures`.
    pub fn with_figures(mut self, figures: Arc<CallFigures>) -> CallContext {
        self.figures = figures;
        self
    }

    /// The same caller, with a deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> CallContext {
        self.deadline = Some(deadline);
        self
    }
}

/// A successful GraphQL answer: data plus non-fatal warnings (Altrata `unauthorized`/`deprecated`).
#[derive(Debug)]
pub struct GraphqlOutcome<T> {
    pub data: T,
    pub warnings: Vec<String>,
}

/// Why a call failed after the executor did what it could: which call (source and dataset, said
/// once) and what went wrong. Messages name source, dataset and cause, and never a secret; the
/// failure's own cause (auth's error) follows as the source (print the chain with `{:#}`).
#[derive(Debug)]
pub struct CallError {
    pub source_name: String,
    pub dataset: String,
    pub failure: CallFailure,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}: {}", self.source_name, self.dataset, self.failure)
    }
}

/// The failure is said in this error's message, so the chain goes on with the failure's cause:
/// auth's error itself (unboxed, so the runner finds it by type).
impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            CallFailure::NoCredential { error } | CallFailure::RenewalFailed { error, .. } => {
                Some(error.as_ref())
            }
            _ => None,
        }
    }
}

/// What went wrong with a call; its [`FailureKind`] is decided here, where the failure is known.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// Retrying cannot help: the request, the configuration or the answer's shape is wrong
    /// (`kind` says which).
    #[error("{message}")]
    Fatal { message: String, kind: FailureKind },
    /// The source's daily quota is spent; calls fail without being sent until `until`.
    #[error("the daily quota is spent until {until}: {message}")]
    QuotaExhausted { until: DateTime<Utc>, message: String },
    /// The upstream refused the credential even after a refresh.
    #[error("not authorised: {message}")]
    Unauthorized { message: String, kind: FailureKind },
    /// Auth could not produce a credential (its kind is the call's: [`FailureKind::Reauthorise`]
    /// when a person must log in again).
    #[error("not authorised")]
    NoCredential {
        /// Boxed: the rare case should not make every call's result larger.
        #[source]
        error: Box<crate::auth::AuthError>,
    },
    /// The upstream refused the credential (`message`, scrubbed) and renewing it failed.
    #[error("not authorised: {message}; renewing the token failed")]
    RenewalFailed {
        message: String,
        #[source]
        error: Box<crate::auth::AuthError>,
    },
    /// Every attempt of the retry budget failed with a transient error; a later run may succeed.
    /// `kind` is the last attempt's (429s, an outage, garbled bodies).
    #[error("gave up after {attempts} attempts: {message}")]
    RetriesExhausted {
        attempts: u32,
        message: String,
        kind: FailureKind,
    },
    /// The upstream asked for a longer wait than `rate_budget.max_wait_secs`; the message names
    /// the header and its value. The source is held back for the cap only, so a later run works.
    #[error("the upstream's wait is beyond the cap: {message}")]
    WaitCapped { message: String },
    /// The run's deadline came before the call could succeed.
    #[error("the run's deadline was reached: {message}")]
    DeadlineExceeded { message: String },
    /// The upstream does not know, or no longer lets us reach, the scope the call named (see
    /// [`Verdict::ScopeRefused`](super::classify::Verdict::ScopeRefused)); scopes discovered earlier may be stale.
    #[error("the upstream refused the scope: {message}")]
    ScopeRefused { message: String },
}

impl CallError {
    /// `failure` of the call `call` describes.
    pub(super) fn new(call: &CallContext, failure: CallFailure) -> CallError {
        CallError {
            source_name: call.source.clone(),
            dataset: call.dataset.clone(),
            failure,
        }
    }

    /// Why the call failed, for the run record and the metrics.
    pub fn kind(&self) -> FailureKind {
        match &self.failure {
            CallFailure::Fatal { kind, .. }
            | CallFailure::Unauthorized { kind, .. }
            | CallFailure::RetriesExhausted { kind, .. } => *kind,
            CallFailure::NoCredential { error } | CallFailure::RenewalFailed { error, .. } => error.kind(),
            CallFailure::QuotaExhausted { .. } => FailureKind::Quota,
            CallFailure::WaitCapped { .. } => FailureKind::RateLimited,
            CallFailure::DeadlineExceeded { .. } => FailureKind::Timeout,
            CallFailure::ScopeRefused { .. } => FailureKind::ScopeRefused,
        }
    }

    /// Whether the same call may succeed in a later run (transient trouble, a quota that resets).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.failure,
            CallFailure::RetriesExhausted { .. }
                | CallFailure::DeadlineExceeded { .. }
                | CallFailure::WaitCapped { .. }
                | CallFailure::QuotaExhausted { .. }
        )
    }
}

pub(super) fn fatal(call: &CallContext, kind: FailureKind, message: String) -> CallError {
    CallError::new(call, CallFailure::Fatal { message, kind })
}

pub(super) fn deadline(call: &CallContext, message: String) -> CallError {
    CallError::new(call, CallFailure::DeadlineExceeded { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_source_dataset_and_cause() {
        let call = CallContext::new("altrata", "events");
        let error = fatal(&call, FailureKind::UpstreamRejected, "HTTP 403: Forbidden".into());
        assert_eq!(error.to_string(), "altrata.events: HTTP 403: Forbidden");
    }

    #[test]
    fn an_auth_failure_stays_typed_down_the_chain_and_reads_as_one_line() {
        use crate::auth::AuthError;
        use crate::auth::endpoint::EndpointError;
        let call = CallContext::new("roubler", "shifts");
        let refused = EndpointError::Refused {
            status: 401,
            error: "invalid_client".into(),
            description: "Client authentication failed.".into(),
        };
        let auth = AuthError::Refused {
            source_name: "roubler".into(),
            cause: refused,
        };
        let error = anyhow::Error::from(CallError::new(
            &call,
            CallFailure::NoCredential {
                error: Box::new(auth),
            },
        ));
        assert_eq!(
            format!("{error:#}"),
            "roubler.shifts: not authorised: source roubler: the token endpoint refused the \
             credentials: HTTP 401 invalid_client: Client authentication failed."
        );
        assert!(error.chain().any(|cause| cause.is::<AuthError>()));
        assert!(error.chain().any(|cause| cause.is::<EndpointError>()));
        assert_eq!(
            error.downcast_ref::<CallError>().map(CallError::kind),
            Some(FailureKind::Unauthorised)
        );
    }
}
