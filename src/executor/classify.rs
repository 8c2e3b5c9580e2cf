//! The one place that decides what an answer means: retry it, refresh the token and retry once,
//! give up, mark the daily quota spent, or keep the data with warnings.
//!
//! Everything the executor can see of a failed call passes through here: transport errors, HTTP
//! statuses with their bodies, bodies that do not parse, and the `errors` array of a GraphQL
//! answer. What differs between vendors is each vendor's [`Dialect`], kept in its folder
//! (`src/vendors/<vendor>/answers.rs`) and applied to its answers only: the field its errors
//! name their kind in, the kinds that leave the data usable or say to discard it, how it says a
//! quota is spent. The rules here are the ones every GraphQL server shares.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::failure::FailureKind;
use crate::transport::TransportError;

/// What to do about one attempt's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A transient failure: back off (or wait `after`, the upstream's `Retry-After`) and retry.
    /// `kind` is what the call fails with if the retry budget runs out.
    Retry {
        cause: String,
        after: Option<Duration>,
        kind: FailureKind,
    },
    /// The upstream rejected the credential: tell auth, take a fresh one, retry once.
    RefreshAndRetryOnce { cause: String },
    /// Retrying cannot help (403, 400, a validation error, a payload the vendor says to discard).
    Fatal { cause: String, kind: FailureKind },
    /// The source's daily quota is spent: fail this and every later call until the quota resets.
    QuotaExhausted { cause: String },
    /// The upstream does not know, or no longer lets us reach, the scope the call named (Roubler
    /// `Forbidden: Access denied … location …`, Retarus `FORBIDDEN` for a customer, a GraphQL
    /// `NOT_FOUND`). Retrying cannot help, but the scopes discovered earlier may be stale.
    ScopeRefused { cause: String },
}

impl Verdict {
    /// The low-cardinality `outcome` label of this verdict.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Retry { .. } => "retry",
            Verdict::RefreshAndRetryOnce { .. } => "unauthorized",
            // A refused scope is fatal for the call; the label set stays the documented one.
            Verdict::Fatal { .. } | Verdict::ScopeRefused { .. } => "fatal",
            Verdict::QuotaExhausted { .. } => "quota_exhausted",
        }
    }

    /// What a call that ends on this verdict fails with.
    pub fn kind(&self) -> FailureKind {
        match self {
            Verdict::Retry { kind, .. } | Verdict::Fatal { kind, .. } => *kind,
            Verdict::RefreshAndRetryOnce { .. } => FailureKind::Unauthorised,
            Verdict::QuotaExhausted { .. } => FailureKind::Quota,
            Verdict::ScopeRefused { .. } => FailureKind::ScopeRefused,
        }
    }
}

/// The class of a GraphQL answer that carried an `errors` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphqlClass {
    /// Keep the data; these are warnings (Altrata `unauthorized` / `deprecated`).
    Partial { warnings: Vec<String> },
    /// Do not use the data.
    Failed(Verdict),
}

/// A request that brought no usable answer (see [`crate::transport`]): no answer at all is worth
/// retrying; a redirect or an oversized answer would come back the same. The cause is the error's
/// whole chain as text: a verdict's cause is scrubbed of the attempt's secrets before it leaves
/// the executor (`secrets.rs`), which a typed chain could not be.
pub fn transport(error: &TransportError) -> Verdict {
    let cause = crate::failure::chain_text(error);
    if error.is_retryable() {
        Verdict::Retry {
            cause,
            after: None,
            kind: error.kind(),
        }
    } else {
        Verdict::Fatal {
            cause,
            kind: error.kind(),
        }
    }
}

/// How one vendor's answers are read where vendors differ. Implemented in each vendor's folder;
/// every method has the standard GraphQL reading as its default ([`Generic`]).
pub trait Dialect: Sync {
    /// The kind of one GraphQL error, in whatever field this vendor puts it (by default where
    /// GraphQL servers commonly do: [`standard_kind`]).
    fn error_kind(&self, error: &GraphqlError) -> Option<String> {
        standard_kind(error)
    }

    /// Kinds (lowercase) that leave the data usable: the errors become warnings.
    fn warning_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// Kinds (lowercase) that say the whole payload must be discarded.
    fn discard_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a 429 answer (its body summarised) says the quota is spent, rather than that the
    /// call came too soon.
    fn quota_spent(&self, _summary: &str) -> bool {
        false
    }
}

/// An error's kind where GraphQL servers commonly put it: `extensions.classification`
/// (graphql-java), `extensions.code` (Apollo and the spec's examples), `extensions.errorType`.
pub fn standard_kind(error: &GraphqlError) -> Option<String> {
    error
        .extension("classification")
        .or_else(|| error.extension("code"))
        .or_else(|| error.extension("errorType"))
}

/// The standard GraphQL and HTTP reading, with no vendor's quirks.
pub struct Generic;

impl Dialect for Generic {}

/// An answer whose status is not 2xx. `retry_after` is the parsed `Retry-After`, if any.
pub fn status(
    dialect: &dyn Dialect,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Verdict {
    let summary = summarize_body(dialect, body);
    let cause = format!("HTTP {}: {summary}", status.as_u16());
    match status.as_u16() {
        401 => Verdict::RefreshAndRetryOnce { cause },
        429 if dialect.quota_spent(&summary) => Verdict::QuotaExhausted { cause },
        429 => Verdict::Retry {
            cause,
            after: retry_after,
            kind: FailureKind::RateLimited,
        },
        408 | 425 | 500..=599 => Verdict::Retry {
            cause,
            after: retry_after,
            kind: FailureKind::UpstreamUnavailable,
        },
        300..=399 => Verdict::Fatal {
            cause: format!("{cause} (redirects are not followed; check the configured URL)"),
            kind: FailureKind::UpstreamRejected,
        },
        _ => Verdict::Fatal {
            cause,
            kind: FailureKind::UpstreamRejected,
        },
    }
}

/// A 2xx body that did not decode. Broken JSON (cut off, an HTML page from a gateway) is a
/// transient fault; valid JSON of the wrong shape means our query and their schema disagree.
pub fn undecodable(error: &serde_json::Error, body: &[u8]) -> Verdict {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => Verdict::Retry {
            cause: format!(
                "the answer is not valid JSON ({error}): {}",
                excerpt(&String::from_utf8_lossy(body))
            ),
            after: None,
            kind: FailureKind::InvalidAnswer,
        },
        Category::Data => Verdict::Fatal {
            cause: format!("the answer does not have the expected shape: {error}"),
            kind: FailureKind::SchemaMismatch,
        },
    }
}

/// One entry of a GraphQL `errors` array, with the fields the dialects we read put a kind in.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GraphqlError {
    #[serde(default)]
    pub message: Option<String>,
    /// AppSync's kind, next to `message`.
    #[serde(default, rename = "errorType")]
    pub error_type: Option<String>,
    /// A kind some servers put next to `message`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub extensions: Option<Value>,
    #[serde(default)]
    pub path: Option<Value>,
}

impl GraphqlError {
    /// The text of `extensions.<key>`, if it is text.
    pub fn extension(&self, key: &str) -> Option<String> {
        self.extensions
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn describe(&self, dialect: &dyn Dialect) -> String {
        let message = self.message.as_deref().unwrap_or("(no message)");
        match dialect.error_kind(self) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_owned(),
        }
    }
}
/// Kinds that say the request itself is wrong: fail at once.
const VALIDATION_KINDS: [&str; 9] = [
    "validationerror",
    "validation",
    "graphql_validation_failed",
    "graphql_parse_failed",
    "invalidsyntax",
    "bad_request",
    "bad_user_input",
    "malformedhttprequestexception",
    "badrequest",
];
/// Kinds that say the server failed for now.
const TRANSIENT_KINDS: [&str; 8] = [
    "internal_error",
    "internal_server_error",
    "internalfailure",
    "internalservererror",
    "serviceunavailable",
    "service_unavailable",
    "throttlingexception",
    "ratelimit",
];
/// Kinds that say the credential was refused.
const AUTH_KINDS: [&str; 4] = [
    "authentication",
    "unauthenticated",
    "unauthorizedexception",
    "unauthenticatedexception",
];
/// Kinds that say the scope the call named (a company, location or customer header or
/// argument) is unknown or out of reach: `Forbidden` ("Access denied: you do not have access to
/// location …"), a `FORBIDDEN` classification for a customer, GraphQL `NOT_FOUND` codes.
const SCOPE_KINDS: [&str; 3] = ["forbidden", "not_found", "notfound"];
/// Transient kinds that say the call came too soon (rather than that the server is failing).
const THROTTLING_KINDS: [&str; 2] = ["throttlingexception", "ratelimit"];
/// Messages of transient failures from servers that do not classify their errors.
const TRANSIENT_MESSAGES: [&str; 4] = [
    "internal server error",
    "service unavailable",
    "temporarily unavailable",
    "timed out",
];

/// Classifies a GraphQL answer with a non-empty `errors` array in `dialect`; `has_data` says
/// whether `data` came back non-null.
pub fn graphql(dialect: &dyn Dialect, errors: &[GraphqlError], has_data: bool) -> GraphqlClass {
    let described = || {
        errors
            .iter()
            .take(3)
            .map(|e| e.describe(dialect))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let kinds: Vec<Option<String>> = errors
        .iter()
        .map(|e| dialect.error_kind(e).map(|k| k.to_ascii_lowercase()))
        .collect();
    let is = |kind: &Option<String>, list: &[&str]| kind.as_deref().is_some_and(|k| list.contains(&k));

    // A kind that says "discard the whole payload", or a validation error (our query is wrong):
    // neither improves with a retry, and they win over any transient-looking error.
    if let Some(position) = kinds.iter().position(|k| is(k, dialect.discard_kinds())) {
        return GraphqlClass::Failed(Verdict::Fatal {
            cause: format!(
                "the upstream reported an error and its data must be discarded: {}",
                errors[position].describe(dialect)
            ),
            kind: FailureKind::InvalidAnswer,
        });
    }
    if kinds.iter().any(|k| is(k, &VALIDATION_KINDS)) {
        return GraphqlClass::Failed(Verdict::Fatal {
            cause: format!("the query was rejected: {}", described()),
            kind: FailureKind::SchemaMismatch,
        });
    }
    if kinds.iter().any(|k| is(k, &AUTH_KINDS)) {
        return GraphqlClass::Failed(Verdict::RefreshAndRetryOnce {
            cause: format!("the credential was refused: {}", described()),
        });
    }
    if kinds.iter().any(|k| is(k, &SCOPE_KINDS)) {
        return GraphqlClass::Failed(Verdict::ScopeRefused {
            cause: format!("the scope was refused: {}", described()),
        });
    }
    if kinds.iter().all(|k| is(k, dialect.warning_kinds())) {
        if has_data {
            return GraphqlClass::Partial {
                warnings: errors.iter().map(|e| e.describe(dialect)).collect(),
            };
        }
        return GraphqlClass::Failed(Verdict::Fatal {
            cause: format!("no data came back: {}", described()),
            kind: FailureKind::InvalidAnswer,
        });
    }
    let transient = errors.iter().zip(&kinds).any(|(error, kind)| {
        is(kind, &TRANSIENT_KINDS)
            || error.message.as_deref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                TRANSIENT_MESSAGES.iter().any(|t| m.contains(t))
            })
    });
    if transient {
        let throttled = kinds.iter().any(|k| is(k, &THROTTLING_KINDS));
        return GraphqlClass::Failed(Verdict::Retry {
            cause: format!("the upstream failed for now: {}", described()),
            after: None,
            kind: if throttled {
                FailureKind::RateLimited
            } else {
                FailureKind::UpstreamUnavailable
            },
        });
    }
    // A request-level error (no `path`) without a known kind is a validation error in the
    // reference implementation's words ("Unknown field …"); one with a path is a resolver
    // failure we cannot judge. Neither is safe to load as data.
    let request_level = errors.iter().all(|e| e.path.is_none());
    GraphqlClass::Failed(Verdict::Fatal {
        cause: format!("the upstream answered with errors: {}", described()),
        kind: if request_level {
            FailureKind::SchemaMismatch
        } else {
            FailureKind::InvalidAnswer
        },
    })
}

/// A short description of an error body: GraphQL error messages, a `message`/`error` field, or
/// the start of the text.
pub fn summarize_body(dialect: &dyn Dialect, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        errors: Option<Vec<GraphqlError>>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        error: Option<Value>,
        #[serde(default)]
        error_description: Option<String>,
    }
    if let Ok(shape) = serde_json::from_slice::<Shape>(body) {
        if let Some(errors) = shape.errors.filter(|e| !e.is_empty()) {
            return errors
                .iter()
                .take(3)
                .map(|e| e.describe(dialect))
                .collect::<Vec<_>>()
                .join("; ");
        }
        if let Some(message) = shape.message {
            return message;
        }
        if let Some(error) = shape.error {
            let error = error.as_str().map_or_else(|| error.to_string(), str::to_owned);
            return match shape.error_description {
                Some(description) => format!("{error}: {description}"),
                None => error,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        excerpt(&text)
    }
}

/// At most 200 characters of `text` on one line.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > MAX_CHARS {
        format!("{}…", flat.chars().take(MAX_CHARS).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(value: Value) -> Vec<GraphqlError> {
        serde_json::from_value(value).expect("test errors")
    }

    /// Every vendor's reading at once, so the shared rules are seen working on each dialect's
    /// fields (each vendor's own dialect is tested in its folder, `src/vendors/*/answers.rs`).
    struct Merged;

    impl Dialect for Merged {
        fn error_kind(&self, error: &GraphqlError) -> Option<String> {
            error
                .error_type
                .clone()
                .or_else(|| error.name.clone())
                .or_else(|| standard_kind(error))
        }
        fn warning_kinds(&self) -> &'static [&'static str] {
            &["unauthorized", "deprecated"]
        }
        fn discard_kinds(&self) -> &'static [&'static str] {
            &["error"]
        }
        fn quota_spent(&self, summary: &str) -> bool {
            summary.contains("Limit Exceeded")
        }
    }

    #[test]
    fn statuses_are_classified_as_the_issue_says() {
        let s = |code: u16, body: &str| {
            status(
                &Merged,
                StatusCode::from_u16(code).expect("code"),
                None,
                body.as_bytes(),
            )
        };
        assert!(matches!(
            s(401, r#"{"errors":[{"name":"Authentication","message":"no"}]}"#),
            Verdict::RefreshAndRetryOnce { .. }
        ));
        assert!(matches!(
            s(403, r#"{"message":"Forbidden"}"#),
            Verdict::Fatal { .. }
        ));
        assert!(matches!(s(400, "bad"), Verdict::Fatal { .. }));
        assert!(matches!(s(404, ""), Verdict::Fatal { .. }));
        assert!(matches!(s(503, "Service Unavailable"), Verdict::Retry { .. }));
        assert!(matches!(s(500, ""), Verdict::Retry { .. }));
        assert!(matches!(
            s(429, r#"{"message":"Too Many Requests"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            s(429, r#"{"message":"Limit Exceeded"}"#),
            Verdict::QuotaExhausted { .. }
        ));
        assert!(matches!(s(302, ""), Verdict::Fatal { .. }));
        let with_wait = status(
            &Merged,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(2)),
            b"{}",
        );
        assert_eq!(
            with_wait,
            Verdict::Retry {
                cause: "HTTP 429: {}".into(),
                after: Some(Duration::from_secs(2)),
                kind: FailureKind::RateLimited,
            }
        );
    }

    #[test]
    fn broken_json_is_retried_but_json_of_the_wrong_shape_is_not() {
        let broken = br#"{"data": {"content": [{"id": "1", "#;
        let error = serde_json::from_slice::<Value>(broken).expect_err("broken");
        assert!(matches!(undecodable(&error, broken), Verdict::Retry { .. }));
        let html = b"<html><body>502 Bad Gateway</body></html>";
        let error = serde_json::from_slice::<Value>(html).expect_err("html");
        assert!(matches!(undecodable(&error, html), Verdict::Retry { .. }));
        let error = serde_json::from_slice::<Vec<u32>>(br#"{"a": 1}"#).expect_err("shape");
        assert!(matches!(undecodable(&error, b""), Verdict::Fatal { .. }));
    }

    #[test]
    fn validation_errors_fail_in_every_dialect() {
        for body in [
            json!([{"errorType": "ValidationError", "message": "Unknown field"}]),
            json!([{"message": "Unknown field \"nope\" on type \"Query\"", "extensions": {"classification": "ValidationError"}}]),
            json!([{"message": "Unknown field \"nope\" on type \"Query\"", "locations": [{"line": 1, "column": 3}], "name": "GraphQLError"}]),
            json!([{"message": "page must not be negative", "extensions": {"classification": "BAD_REQUEST"}}]),
        ] {
            let class = graphql(&Merged, &errors(body.clone()), false);
            assert!(
                matches!(class, GraphqlClass::Failed(Verdict::Fatal { .. })),
                "{body}: {class:?}"
            );
        }
    }

    #[test]
    fn transient_graphql_errors_are_retried() {
        for body in [
            json!([{"message": "Internal server error", "extensions": {"classification": "INTERNAL_ERROR"}}]),
            json!([{"message": "Internal server error"}]),
            json!([{"errorType": "InternalFailure", "message": "oops"}]),
        ] {
            let class = graphql(&Merged, &errors(body.clone()), false);
            assert!(
                matches!(class, GraphqlClass::Failed(Verdict::Retry { .. })),
                "{body}: {class:?}"
            );
        }
    }

    #[test]
    fn a_refused_scope_is_told_apart_from_other_fatal_errors() {
        for body in [
            json!([{"name": "Forbidden", "message": "Access denied: you do not have access to location 99."}]),
            json!([{"message": "Access denied: client is not entitled to customerId \"1\"", "extensions": {"classification": "FORBIDDEN"}}]),
            json!([{"message": "no such company", "extensions": {"code": "NOT_FOUND"}}]),
        ] {
            let class = graphql(&Merged, &errors(body.clone()), false);
            assert!(
                matches!(&class, GraphqlClass::Failed(Verdict::ScopeRefused { cause }) if cause.starts_with("the scope was refused: ")),
                "{body}: {class:?}"
            );
        }
        // A plain HTTP 403 (a gateway refusing the API key) says nothing about a scope.
        assert!(matches!(
            status(
                &Merged,
                StatusCode::FORBIDDEN,
                None,
                br#"{"message":"Forbidden"}"#
            ),
            Verdict::Fatal { .. }
        ));
    }

    /// The kind a call ends with if it fails on the verdict: what `etl.runs.error_kind` records.
    #[test]
    fn every_verdict_names_the_kind_of_failure_it_ends_in() {
        use FailureKind::*;
        let s = |code: u16, body: &str| {
            status(
                &Merged,
                StatusCode::from_u16(code).expect("code"),
                None,
                body.as_bytes(),
            )
            .kind()
        };
        assert_eq!(s(429, r#"{"message":"Too Many Requests"}"#), RateLimited);
        assert_eq!(s(429, r#"{"message":"Limit Exceeded"}"#), Quota);
        assert_eq!(s(503, "Service Unavailable"), UpstreamUnavailable);
        assert_eq!(s(500, ""), UpstreamUnavailable);
        assert_eq!(s(408, ""), UpstreamUnavailable);
        assert_eq!(s(401, "no"), Unauthorised);
        assert_eq!(s(403, r#"{"message":"Forbidden"}"#), UpstreamRejected);
        assert_eq!(s(400, "bad"), UpstreamRejected);
        assert_eq!(s(302, ""), UpstreamRejected);

        let garbage = b"<html><body>502 Bad Gateway</body></html>";
        let error = serde_json::from_slice::<Value>(garbage).expect_err("html");
        assert_eq!(undecodable(&error, garbage).kind(), InvalidAnswer);
        let error = serde_json::from_slice::<Vec<u32>>(br#"{"a": 1}"#).expect_err("shape");
        assert_eq!(undecodable(&error, b"").kind(), SchemaMismatch);

        let g = |body: Value, has_data: bool| match graphql(&Merged, &errors(body), has_data) {
            GraphqlClass::Failed(verdict) => verdict.kind(),
            GraphqlClass::Partial { .. } => panic!("partial"),
        };
        // Schema drift: a field the vendor renamed or removed, in each dialect.
        assert_eq!(
            g(
                json!([{"errorType": "ValidationError", "message": "Unknown field"}]),
                false
            ),
            SchemaMismatch
        );
        assert_eq!(
            g(
                json!([{"message": "Unknown field \"nope\" on type \"Query\"", "name": "GraphQLError"}]),
                false
            ),
            SchemaMismatch
        );
        // A resolver failure (with a path) we cannot judge is an unusable answer, not drift.
        assert_eq!(
            g(json!([{"message": "boom", "path": ["events"]}]), false),
            InvalidAnswer
        );
        assert_eq!(
            g(
                json!([{"errorType": "error", "message": "discard", "path": ["events"]}]),
                false
            ),
            InvalidAnswer
        );
        assert_eq!(
            g(
                json!([{"errorType": "unauthorized", "message": "withheld"}]),
                false
            ),
            InvalidAnswer
        );
        assert_eq!(
            g(
                json!([{"errorType": "ThrottlingException", "message": "slow down"}]),
                false
            ),
            RateLimited
        );
        assert_eq!(
            g(json!([{"message": "Internal server error"}]), false),
            UpstreamUnavailable
        );
        assert_eq!(
            g(
                json!([{"name": "Authentication", "message": "Access token is missing or invalid."}]),
                false
            ),
            Unauthorised
        );
        assert_eq!(
            g(
                json!([{"name": "Forbidden", "message": "Access denied: you do not have access to location 99."}]),
                false
            ),
            ScopeRefused
        );
    }

    #[test]
    fn bodies_are_summarised_briefly() {
        assert_eq!(
            summarize_body(&Merged, br#"{"message":"Forbidden"}"#),
            "Forbidden"
        );
        assert_eq!(
            summarize_body(
                &Merged,
                br#"{"error":"invalid_token","error_description":"expired"}"#
            ),
            "invalid_token: expired"
        );
        assert_eq!(summarize_body(&Merged, b""), "(empty body)");
        assert!(
            summarize_body(&Merged, "x".repeat(1000).as_bytes())
                .chars()
                .count()
                <= 201
        );
    }
}
