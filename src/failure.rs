//! Why a run failed, as a closed set of kinds: decided where the failure is known (the
//! executor's answer classification, auth, the pagers' answer checks, the sink, the runner's
//! deadline and lock), carried in the error types, and stored in `etl.runs.error_kind`, shown by
//! `etl.freshness` and `reporting-etl runs`, and used as the `outcome` label of
//! `reporting_etl_runs_total`.
//!
//! A leaf module: it knows no other module, so every layer can name a kind. Errors that are
//! `anyhow` chains by the time they reach the runner keep their kind in a typed error inside the
//! chain ([`Failure`], or a module's own thiserror enum with a `kind()`), never in the message.

use std::fmt;

/// Why a run did not succeed. The stored names ([`FailureKind::as_str`]) are stable: dashboards,
/// alerts and the `etl.runs.error_kind` CHECK constraint (migration 0008) use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The source's daily quota is spent (Altrata "Limit Exceeded"); calls fail until it resets.
    Quota,
    /// The upstream kept answering 429 through the retry budget, or asked for a longer wait
    /// (`Retry-After`, a reset) than `rate_budget.max_wait_secs` allows.
    RateLimited,
    /// The vendor no longer accepts the stored authorisation (a refused refresh token, consent
    /// revoked): a person must run `reporting-etl auth login SOURCE`.
    Reauthorise,
    /// The upstream or its token endpoint refused our credentials (a wrong client secret or API
    /// key, a 401 even after renewing the token).
    Unauthorised,
    /// The upstream or its token endpoint could not be reached or kept failing (connection
    /// errors, request timeouts, 5xx, transient GraphQL errors) through the retry budget.
    UpstreamUnavailable,
    /// The upstream refused the request itself (HTTP 400, 403, 404, a redirect): retrying cannot
    /// help; check the configured URLs and the account's rights.
    UpstreamRejected,
    /// The upstream does not know, or no longer lets us reach, the scope the call named (a
    /// Roubler company or location, a Retarus customer).
    ScopeRefused,
    /// The window (or scope discovery) outlasted `jobs.NAME.window_deadline_secs`.
    Timeout,
    /// An answer we cannot use: not JSON (after retries), larger than the body limit, no data,
    /// pages that repeat or disagree with the announced total, a payload the vendor says to
    /// discard.
    InvalidAnswer,
    /// Our query and the vendor's schema disagree: the query was rejected as invalid (a field
    /// renamed or removed), or the answer's data does not match the query's types.
    SchemaMismatch,
    /// The database failed or refused: unreachable, a lost connection, a failed statement, a
    /// table not shaped as the loader expects.
    Database,
    /// The job's advisory lock was lost mid-window (its database session ended), or another
    /// process took the job meanwhile; the window was rolled back (status `interrupted`).
    LockLost,
    /// The process was asked to stop (SIGTERM, Ctrl-C) before the window committed (status
    /// `interrupted`).
    Cancelled,
    /// The process running it died; a later process found it gone and marked the run (status
    /// `interrupted`).
    ProcessDied,
    /// The configuration cannot work for this call (no credentials for the source, a credential
    /// that is not a valid header value, a dataset the source does not offer).
    Config,
    /// A failure no layer classified: a bug to report, with the run's `error`.
    Internal,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 16] = [
        FailureKind::Quota,
        FailureKind::RateLimited,
        FailureKind::Reauthorise,
        FailureKind::Unauthorised,
        FailureKind::UpstreamUnavailable,
        FailureKind::UpstreamRejected,
        FailureKind::ScopeRefused,
        FailureKind::Timeout,
        FailureKind::InvalidAnswer,
        FailureKind::SchemaMismatch,
        FailureKind::Database,
        FailureKind::LockLost,
        FailureKind::Cancelled,
        FailureKind::ProcessDied,
        FailureKind::Config,
        FailureKind::Internal,
    ];

    /// The stable snake_case name stored in `etl.runs.error_kind` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Quota => "quota",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Reauthorise => "reauthorise",
            FailureKind::Unauthorised => "unauthorised",
            FailureKind::UpstreamUnavailable => "upstream_unavailable",
            FailureKind::UpstreamRejected => "upstream_rejected",
            FailureKind::ScopeRefused => "scope_refused",
            FailureKind::Timeout => "timeout",
            FailureKind::InvalidAnswer => "invalid_answer",
            FailureKind::SchemaMismatch => "schema_mismatch",
            FailureKind::Database => "database",
            FailureKind::LockLost => "lock_lost",
            FailureKind::Cancelled => "cancelled",
            FailureKind::ProcessDied => "process_died",
            FailureKind::Config => "config",
            FailureKind::Internal => "internal",
        }
    }

    /// The kind stored as `name`, if it is one.
    pub(crate) fn parse(name: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure whose kind its origin knows, for code that returns `anyhow` chains (the dataset
/// loaders' answer checks, the sink): the runner finds it in the chain by type.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// An upstream answer the loader cannot use (see [`FailureKind::InvalidAnswer`]).
    pub(crate) fn invalid_answer(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::InvalidAnswer, message)
    }
}

/// `error` and its `source()` chain as one line (`outer: inner: innermost`), each cause left out
/// when the text before already says it (reqwest and hyper repeat their inner errors). For the
/// few places that must hand a typed chain on as text: a message scrubbed of secrets
/// (`executor::secrets`), a log field. Everywhere else errors travel typed, with `#[source]`, and
/// are printed once, at the end, with anyhow's `{:#}`.
pub fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_reads_outer_to_inner_and_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the tokens")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("connection reset"));
        assert_eq!(chain_text(&error), "reading the tokens: connection reset");
    }

    #[test]
    fn names_are_unique_snake_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in FailureKind::ALL {
            let name = kind.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
            assert_eq!(FailureKind::parse(name), Some(kind));
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(FailureKind::parse("failed"), None);
    }

    /// The database refuses a kind its CHECK does not list: every kind the code can record must
    /// be in migration 0008's list (which also has `unknown`, for runs recorded before it).
    #[test]
    fn the_migration_allows_exactly_these_kinds() {
        let migration = include_str!("../migrations/0008_error_kind.sql");
        let list = migration
            .split("error_kind IN (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("0008 has an `error_kind IN (…)` check");
        let mut allowed: Vec<&str> = list
            .split(',')
            .map(|name| name.trim().trim_matches('\''))
            .collect();
        allowed.sort_unstable();
        let mut expected: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        expected.push("unknown");
        expected.sort_unstable();
        assert_eq!(allowed, expected);
    }
}
