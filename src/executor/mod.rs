//! The executor: the only code that sends upstream data requests.
//!
//! One shared `reqwest` client (rustls, connect and request timeouts, gzip, no redirects). Per
//! call it takes the source's rate-limit slot, injects the source's credential and the scope
//! header, sends, classifies the answer in one place ([`classify`]: retry / refresh-and-retry-once
//! / fail / quota spent / partial data), and adds the call's figures to the run.
//!
//! # Layout
//!
//! - This file: the public types datasets and the runner use, and the attempt loop.
//! - [`limiter`]: the per-source sliding-log rate limiter, shared by every job of a source.
//! - [`shared_budget`]: the same budget shared by every process on the database (replicas,
//!   backfills), on top of the in-process limiter.
//! - [`headers`]: `X-RateLimit-*`, `RateLimit-*` and `Retry-After` parsing.
//! - [`classify`]: what an answer means; every retry decision is made there.
//! - `instruments`: metrics and the per-run [`CallFigures`].
//!
//! Secrets: request headers are never logged or put into an error, and every message built from
//! an answer is scrubbed of the credential and API key before it leaves this module.

pub mod classify;
pub mod headers;
mod instruments;
pub mod limiter;
pub mod shared_budget;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use graphql_client::GraphQLQuery;
use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::auth::{AuthRegistry, Credential, SourceAuth};
use crate::config::{HttpUrl, Settings, SourceSettings};
use crate::failure::FailureKind;
use classify::{GraphqlClass, GraphqlError, Verdict};
use headers::RateHeaders;
use limiter::MIN_WAIT;
use shared_budget::{BudgetDatabase, RateBudget};

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, from sending to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per call, the first included (the retry budget).
pub const MAX_ATTEMPTS: u32 = 6;
/// The first backoff; each retry doubles it, up to [`BACKOFF_MAX`]. Jitter takes 0–50 % off.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The largest answer body read (after decompression). A full Retarus page of 10,000 records is
/// about 20 MB; anything far beyond that is a broken upstream (or a gzip bomb) and would otherwise
/// be held in memory whole.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// Added to `rate_budget.max_wait_secs` for a call already waiting when a block of the full cap
/// was set (by another caller's `Retry-After`), so that it is not refused for the grace alone.
pub const WAIT_CAP_GRACE: Duration = Duration::from_secs(1);

/// Which GraphQL service of a source a query goes to (Altrata has several; others have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The source's only GraphQL endpoint (`graphql_url`).
    Default,
    /// Altrata `events_url`.
    AltrataEvents,
    /// Altrata `profile_url`.
    AltrataProfile,
}

/// The per-call scope header. Roubler wants one of the two, never both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeHeader {
    None,
    /// `X-Company-ID`
    Company(String),
    /// `X-Location-ID`
    Location(String),
}

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
}

impl CallContext {
    /// A context with fresh figures and no deadline.
    pub fn new(source: impl Into<String>, dataset: impl Into<String>) -> CallContext {
        CallContext {
            source: source.into(),
            dataset: dataset.into(),
            figures: Arc::new(CallFigures::default()),
            deadline: None,
        }
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

/// Why a call failed after the executor did what it could. Messages name source, dataset and
/// cause, and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Retrying cannot help: the request, the configuration or the answer's shape is wrong
    /// (`kind` says which).
    #[error("{source_name}.{dataset}: {message}")]
    Fatal {
        source_name: String,
        dataset: String,
        message: String,
        kind: FailureKind,
    },
    /// The source's daily quota is spent; calls fail without being sent until `until`.
    #[error("{source_name}.{dataset}: the daily quota is spent until {until}: {message}")]
    QuotaExhausted {
        source_name: String,
        dataset: String,
        until: DateTime<Utc>,
        message: String,
    },
    /// The upstream refused the credential even after a refresh, or auth could not produce one
    /// (`kind`: [`FailureKind::Reauthorise`] when a person must log in again).
    #[error("{source_name}.{dataset}: not authorised: {message}")]
    Unauthorized {
        source_name: String,
        dataset: String,
        message: String,
        kind: FailureKind,
    },
    /// Every attempt of the retry budget failed with a transient error; a later run may succeed.
    /// `kind` is the last attempt's (429s, an outage, garbled bodies).
    #[error("{source_name}.{dataset}: gave up after {attempts} attempts: {message}")]
    RetriesExhausted {
        source_name: String,
        dataset: String,
        attempts: u32,
        message: String,
        kind: FailureKind,
    },
    /// The upstream asked for a longer wait than `rate_budget.max_wait_secs`; the message names
    /// the header and its value. The source is held back for the cap only, so a later run works.
    #[error("{source_name}.{dataset}: the upstream's wait is beyond the cap: {message}")]
    WaitCapped {
        source_name: String,
        dataset: String,
        message: String,
    },
    /// The run's deadline came before the call could succeed.
    #[error("{source_name}.{dataset}: the run's deadline was reached: {message}")]
    DeadlineExceeded {
        source_name: String,
        dataset: String,
        message: String,
    },
    /// The upstream does not know, or no longer lets us reach, the scope the call named (see
    /// [`Verdict::ScopeRefused`]); scopes discovered earlier may be stale.
    #[error("{source_name}.{dataset}: the upstream refused the scope: {message}")]
    ScopeRefused {
        source_name: String,
        dataset: String,
        message: String,
    },
}

impl CallError {
    /// Why the call failed, for the run record and the metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::Fatal { kind, .. }
            | CallError::Unauthorized { kind, .. }
            | CallError::RetriesExhausted { kind, .. } => *kind,
            CallError::QuotaExhausted { .. } => FailureKind::Quota,
            CallError::WaitCapped { .. } => FailureKind::RateLimited,
            CallError::DeadlineExceeded { .. } => FailureKind::Timeout,
            CallError::ScopeRefused { .. } => FailureKind::ScopeRefused,
        }
    }

    /// Whether the same call may succeed in a later run (transient trouble, a quota that resets).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::RetriesExhausted { .. }
                | CallError::DeadlineExceeded { .. }
                | CallError::WaitCapped { .. }
                | CallError::QuotaExhausted { .. }
        )
    }
}

/// Tunables of the executor; [`Default`] uses the constants above. Tests shorten them.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Bodies longer than this are refused (see [`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_attempts: MAX_ATTEMPTS,
            backoff_base: BACKOFF_BASE,
            backoff_max: BACKOFF_MAX,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Everything the executor keeps per configured source.
struct Source {
    settings: SourceSettings,
    auth: Option<Arc<SourceAuth>>,
    /// This process's limiter, plus the budget shared through the database when there is one.
    limiter: RateBudget,
    /// Altrata's `x-api-key`, sent on every GraphQL call.
    api_key: Option<SecretString>,
    /// Set when the upstream said the daily quota is spent; calls fail fast until then. Every
    /// caller of the source reads it before sending; the one that saw the 429 writes it.
    quota_spent_until: Mutex<Option<DateTime<Utc>>>,
    /// Running total of throttled time, for the seconds counter.
    throttled_ms_total: AtomicU64,
    /// `rate_budget.max_wait_secs`: no wait for this source is longer.
    max_wait: Duration,
    /// The last time a call of this source hit the wait cap, and why (for `/readyz`).
    wait_capped: Mutex<Option<(DateTime<Utc>, String)>>,
}

impl Source {
    fn note_wait_capped(&self, message: &str) {
        *self.wait_capped.lock().unwrap_or_else(|e| e.into_inner()) = Some((Utc::now(), message.to_owned()));
    }
}

/// What one attempt sends; the body is built once and reused by every attempt.
struct Outgoing<'a> {
    method: reqwest::Method,
    url: url::Url,
    query: &'a [(&'a str, String)],
    body: Option<Bytes>,
    scope: &'a ScopeHeader,
}

/// The shared executor.
pub struct Executor {
    http: reqwest::Client,
    sources: HashMap<String, Arc<Source>>,
    options: ExecutorOptions,
}

impl Executor {
    pub fn new(settings: Arc<Settings>, auth: AuthRegistry) -> anyhow::Result<Executor> {
        Executor::with_options(settings, auth, ExecutorOptions::default())
    }

    /// Like [`Executor::new`], with other timeouts or retry budget. Each source's rate limit is
    /// this process's alone: for tests and tools; the service uses [`Executor::with_shared_budget`].
    pub fn with_options(
        settings: Arc<Settings>,
        auth: AuthRegistry,
        options: ExecutorOptions,
    ) -> anyhow::Result<Executor> {
        Executor::build(settings, auth, options, None)
    }

    /// Like [`Executor::with_options`], with each source's rate budget shared by every process
    /// on `pool`'s database; `instance` is this process's `etl.instances` row.
    pub fn with_shared_budget(
        settings: Arc<Settings>,
        auth: AuthRegistry,
        options: ExecutorOptions,
        pool: sqlx::PgPool,
        instance: uuid::Uuid,
    ) -> anyhow::Result<Executor> {
        let database = BudgetDatabase::new(pool, instance, settings.rate_budget.fallback_share);
        Executor::build(settings, auth, options, Some(database))
    }

    fn build(
        settings: Arc<Settings>,
        auth: AuthRegistry,
        options: ExecutorOptions,
        budget: Option<BudgetDatabase>,
    ) -> anyhow::Result<Executor> {
        use anyhow::Context as _;
        let http = reqwest::Client::builder()
            // A redirect could carry the credential to another host; the configured URLs are final.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .gzip(true)
            .user_agent(concat!("reporting-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the upstream HTTP client")?;
        let sources = settings
            .sources
            .iter()
            .map(|(name, source)| {
                let api_key = match source {
                    SourceSettings::Altrata(s) => s.api_key.clone(),
                    _ => None,
                };
                let entry = Source {
                    settings: source.clone(),
                    auth: auth.get(name).cloned(),
                    limiter: match &budget {
                        Some(database) => RateBudget::shared(
                            name,
                            source.rate_limit(),
                            options.request_timeout,
                            settings.rate_budget.max_wait(),
                            database.clone(),
                        ),
                        None => RateBudget::local(source.rate_limit()),
                    },
                    api_key,
                    quota_spent_until: Mutex::new(None),
                    throttled_ms_total: AtomicU64::new(0),
                    max_wait: settings.rate_budget.max_wait(),
                    wait_capped: Mutex::new(None),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(Executor {
            http,
            sources,
            options,
        })
    }

    /// Runs one GraphQL query of a source.
    pub async fn execute<Q: GraphQLQuery>(
        &self,
        call: &CallContext,
        service: Service,
        scope: &ScopeHeader,
        variables: Q::Variables,
    ) -> Result<GraphqlOutcome<Q::ResponseData>, CallError> {
        let body = serde_json::to_vec(&Q::build_query(variables)).map_err(|e| {
            fatal(
                call,
                FailureKind::Internal,
                format!("could not encode the query: {e}"),
            )
        })?;
        self.post_graphql(call, service, scope, body).await
    }

    /// Runs one GraphQL query given as text, answering untyped JSON: for queries that have no
    /// `graphql_client` type, such as the introspection query of `schema pull` (the schema it
    /// fetches is what those types are generated from). Same auth, limit and retries as `execute`.
    pub async fn execute_raw(
        &self,
        call: &CallContext,
        service: Service,
        scope: &ScopeHeader,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<GraphqlOutcome<serde_json::Value>, CallError> {
        let body = serde_json::to_vec(&serde_json::json!({ "query": query, "variables": variables }))
            .map_err(|e| {
                fatal(
                    call,
                    FailureKind::Internal,
                    format!("could not encode the query: {e}"),
                )
            })?;
        self.post_graphql(call, service, scope, body).await
    }

    /// POSTs an encoded GraphQL request body to the source's `service` and decodes the answer.
    async fn post_graphql<T: DeserializeOwned>(
        &self,
        call: &CallContext,
        service: Service,
        scope: &ScopeHeader,
        body: Vec<u8>,
    ) -> Result<GraphqlOutcome<T>, CallError> {
        let source = self.source(call)?;
        let endpoint = graphql_endpoint(&source.settings, service).ok_or_else(|| {
            fatal(
                call,
                FailureKind::Config,
                format!("this source has no GraphQL service {service:?}"),
            )
        })?;
        let outgoing = Outgoing {
            method: reqwest::Method::POST,
            url: endpoint.url().clone(),
            query: &[],
            body: Some(Bytes::from(body)),
            scope,
        };
        self.run(call, &source, outgoing, decode_graphql::<T>).await
    }

    /// One REST GET (Retently), `path` relative to the source's `base_url`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        call: &CallContext,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CallError> {
        let source = self.source(call)?;
        let SourceSettings::Retently(settings) = &source.settings else {
            return Err(fatal(
                call,
                FailureKind::Config,
                "this source has no REST API (get_json is for Retently)".into(),
            ));
        };
        let url = settings
            .base_url
            .join(path)
            .map_err(|e| fatal(call, FailureKind::Config, format!("bad path `{path}`: {e}")))?;
        let outgoing = Outgoing {
            method: reqwest::Method::GET,
            url: url.url().clone(),
            query,
            body: None,
            scope: &ScopeHeader::None,
        };
        self.run(call, &source, outgoing, |body: &[u8]| {
            serde_json::from_slice::<T>(body).map_err(|e| classify::undecodable(&e, body))
        })
        .await
    }

    /// Sources whose calls hit the wait cap within the last `within`, with the reason: an
    /// upstream demanding more patience than the configuration allows needs a person.
    pub fn wait_capped_sources(&self, within: Duration) -> Vec<(String, String)> {
        let since = Utc::now() - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        let mut capped: Vec<(String, String)> = self
            .sources
            .iter()
            .filter_map(|(name, source)| {
                let guard = source.wait_capped.lock().unwrap_or_else(|e| e.into_inner());
                guard
                    .as_ref()
                    .filter(|(at, _)| *at >= since)
                    .map(|(_, why)| (name.clone(), why.clone()))
            })
            .collect();
        capped.sort();
        capped
    }

    /// What the upstream's rate-limit headers taught this process about `source`.
    pub fn learned_limit(&self, source: &str) -> Option<limiter::Learned> {
        self.sources.get(source).map(|s| s.limiter.learned())
    }

    fn source(&self, call: &CallContext) -> Result<Arc<Source>, CallError> {
        self.sources
            .get(&call.source)
            .cloned()
            .ok_or_else(|| fatal(call, FailureKind::Config, "no such source is configured".into()))
    }

    /// The attempt loop shared by GraphQL and REST: credential, slot, send, classify, and either
    /// return, wait and retry, refresh once, or fail.
    async fn run<T>(
        &self,
        call: &CallContext,
        source: &Source,
        outgoing: Outgoing<'_>,
        decode: impl Fn(&[u8]) -> Result<T, Verdict>,
    ) -> Result<T, CallError> {
        let Some(auth) = &source.auth else {
            return Err(fatal(
                call,
                FailureKind::Config,
                "no credentials are configured for this source".into(),
            ));
        };
        let max_attempts = self.options.max_attempts.max(1);
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(until) = quota_spent_until(source) {
                return Err(CallError::QuotaExhausted {
                    source_name: call.source.clone(),
                    dataset: call.dataset.clone(),
                    until,
                    message: "not sent: an earlier call was told the quota is spent".into(),
                });
            }
            if call.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(deadline(call, "before the call could be sent".into()));
            }

            // One span per attempt: its events (and the limiter's, the auth's) carry the source
            // and attempt; job, dataset, scope and window come from the runner's spans around it.
            let span = tracing::info_span!("upstream", source = %call.source, attempt);
            // The credential is chosen inside the attempt, after the rate-limit wait: a token
            // taken before it may have been replaced (and revoked) or have expired by then.
            let repeat = attempt > 1;
            let (verdict, credential) = match self
                .attempt(call, source, auth, &outgoing, &decode, repeat)
                .instrument(span.clone())
                .await
            {
                Ok(value) => return Ok(value),
                Err((Attempt::Verdict(verdict), credential)) => (verdict, credential),
                Err((Attempt::Auth(e), _)) => {
                    return Err(CallError::Unauthorized {
                        source_name: call.source.clone(),
                        dataset: call.dataset.clone(),
                        message: e.to_string(),
                        kind: e.kind(),
                    });
                }
                Err((Attempt::Deadline, _)) => {
                    return Err(deadline(call, "waiting for the rate limit would pass it".into()));
                }
                Err((Attempt::WaitCapped(message), _)) => {
                    source.note_wait_capped(&message);
                    return Err(CallError::WaitCapped {
                        source_name: call.source.clone(),
                        dataset: call.dataset.clone(),
                        message,
                    });
                }
            };
            let secrets = Secrets::new(credential.as_ref(), source.api_key.as_ref());

            match verdict {
                Verdict::Fatal { cause, kind } => return Err(fatal(call, kind, secrets.scrub(&cause))),
                Verdict::ScopeRefused { cause } => {
                    return Err(CallError::ScopeRefused {
                        source_name: call.source.clone(),
                        dataset: call.dataset.clone(),
                        message: secrets.scrub(&cause),
                    });
                }
                Verdict::QuotaExhausted { cause } => {
                    let until = next_utc_midnight(Utc::now());
                    *source.quota_spent_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                    tracing::error!(parent: &span, until = %until,
                        "The upstream's daily quota is spent; calls to this source fail until it resets.");
                    return Err(CallError::QuotaExhausted {
                        source_name: call.source.clone(),
                        dataset: call.dataset.clone(),
                        until,
                        message: secrets.scrub(&cause),
                    });
                }
                Verdict::RefreshAndRetryOnce { cause } => {
                    let cause = secrets.scrub(&cause);
                    if attempt >= max_attempts {
                        return Err(CallError::Unauthorized {
                            source_name: call.source.clone(),
                            dataset: call.dataset.clone(),
                            message: format!("{cause} (no attempt left to renew the token)"),
                            kind: FailureKind::Unauthorised,
                        });
                    }
                    // Refused a token another job has since replaced: the refusal says nothing
                    // about the current token, so it is retried without spending the one renewal.
                    if let Some(sent) = &credential
                        && auth.replaced_since(sent).await
                    {
                        tracing::info!(parent: &span, cause = %cause,
                            "Upstream refused a token that has since been replaced; retrying with the current one.");
                        instruments::retry(&call.figures, &call.source);
                        continue;
                    }
                    if refreshed {
                        return Err(CallError::Unauthorized {
                            source_name: call.source.clone(),
                            dataset: call.dataset.clone(),
                            message: format!("{cause} (also after renewing the token)"),
                            kind: FailureKind::Unauthorised,
                        });
                    }
                    refreshed = true;
                    if let Some(credential) = &credential
                        && let Err(e) = auth.rejected(credential).await
                    {
                        return Err(CallError::Unauthorized {
                            source_name: call.source.clone(),
                            dataset: call.dataset.clone(),
                            message: format!("{cause}; renewing the token failed: {e}"),
                            kind: e.kind(),
                        });
                    }
                    tracing::info!(parent: &span, cause = %cause,
                        "Upstream refused the token; retrying once with a renewed one.");
                    instruments::retry(&call.figures, &call.source);
                }
                Verdict::Retry { cause, after, kind } => {
                    let cause = secrets.scrub(&cause);
                    if attempt >= max_attempts {
                        return Err(CallError::RetriesExhausted {
                            source_name: call.source.clone(),
                            dataset: call.dataset.clone(),
                            attempts: attempt,
                            message: cause,
                            kind,
                        });
                    }
                    let backoff = self.backoff(attempt);
                    // A Retry-After holds back every caller of the source, not just this one; the
                    // next `acquire` waits for it (and counts it as throttling).
                    // `after` is already held to the wait cap (see `attempt`).
                    let wait = match after {
                        Some(after) => {
                            source.limiter.block_for(after);
                            after.max(MIN_WAIT)
                        }
                        None => backoff,
                    };
                    if call
                        .deadline
                        .is_some_and(|d| limiter::instant_after(Instant::now(), wait) >= d)
                    {
                        return Err(deadline(call, format!("not retrying: {cause}")));
                    }
                    tracing::warn!(parent: &span, wait_ms = wait.as_millis() as u64, cause = %cause,
                        "Upstream call failed; retrying.");
                    instruments::retry(&call.figures, &call.source);
                    if after.is_none() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    /// One attempt: a slot, then the credential current at that moment, the request, the whole
    /// answer, its headers (waits capped) fed to the limiter, and either the decoded value or a
    /// verdict, with the credential that was sent.
    async fn attempt<T>(
        &self,
        call: &CallContext,
        source: &Source,
        auth: &SourceAuth,
        outgoing: &Outgoing<'_>,
        decode: &impl Fn(&[u8]) -> Result<T, Verdict>,
        repeat: bool,
    ) -> Result<T, (Attempt, Option<Credential>)> {
        let started = Instant::now();
        // No wait for budget may outlast the cap: the earlier of the run's deadline and the cap
        // (plus a grace: a block of exactly the cap set just after this call began waiting).
        let capped_at = limiter::instant_after(started, source.max_wait.saturating_add(WAIT_CAP_GRACE));
        let wait_deadline = call.deadline.map_or(capped_at, |d| d.min(capped_at));
        let permit = match source.limiter.acquire(Some(wait_deadline)).await {
            Ok(permit) => permit,
            Err(_) if call.deadline.is_some_and(|d| d <= capped_at) => return Err((Attempt::Deadline, None)),
            Err(_) => {
                return Err((
                    Attempt::WaitCapped(format!(
                        "the rate budget would hold this call back longer than rate_budget.max_wait_secs ({} s)",
                        source.max_wait.as_secs()
                    )),
                    None,
                ));
            }
        };
        instruments::throttled(
            &call.figures,
            &call.source,
            started.elapsed(),
            &source.throttled_ms_total,
        );
        // Chosen now, after the wait: a token read before it may have expired or been replaced
        // (Hydra revokes the old access token on refresh) while this call waited for its slot.
        let (credential, token_requests) = crate::auth::counting_token_requests(auth.credential()).await;
        instruments::token_calls(&call.figures, token_requests);
        let credential = match credential {
            Ok(credential) => credential,
            Err(e) if e.is_retryable() => {
                let verdict = Verdict::Retry {
                    cause: e.to_string(),
                    after: None,
                    kind: e.kind(),
                };
                return Err((Attempt::Verdict(verdict), None));
            }
            Err(e) => return Err((Attempt::Auth(e), None)),
        };
        let request = self
            .request(source, outgoing, &credential)
            .map_err(|verdict| (Attempt::Verdict(verdict), Some(credential.clone())))?;

        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after_text = response.headers().get(RETRY_AFTER).map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(64)
                        .collect::<String>()
                });
                let (headers, overlong) =
                    RateHeaders::parse(response.headers(), Utc::now()).capped(source.max_wait);
                let body = read_body(response, self.options.max_body_bytes).await;
                Ok((status, headers, overlong, retry_after_text, body))
            }
            Err(e) => Err(e),
        };
        // The call has ended for the limiter once the answer is in (or failed).
        drop(permit);
        let failed = |verdict: Verdict| (Attempt::Verdict(verdict), Some(credential.clone()));

        let (status, rate, overlong, retry_after_text, body) = match answer {
            Ok((status, rate, overlong, text, Ok(Body::Complete(body)))) => {
                (status, rate, overlong, text, body)
            }
            Ok((status, rate, _, _, Ok(Body::TooLarge))) => {
                source.limiter.observe(&rate);
                // Retrying would fetch the same oversized answer again.
                let verdict = Verdict::Fatal {
                    cause: format!(
                        "HTTP {}: the answer is larger than {} bytes; it was not read",
                        status.as_u16(),
                        self.options.max_body_bytes
                    ),
                    kind: FailureKind::InvalidAnswer,
                };
                instruments::call(
                    &call.figures,
                    repeat,
                    &call.source,
                    instruments::status_class(Some(status.as_u16())),
                    verdict.outcome(),
                    self.options.max_body_bytes,
                );
                return Err(failed(verdict));
            }
            Ok((status, rate, _, _, Err(e))) => {
                source.limiter.observe(&rate);
                let verdict = classify::transport(&e);
                instruments::call(
                    &call.figures,
                    repeat,
                    &call.source,
                    instruments::status_class(Some(status.as_u16())),
                    verdict.outcome(),
                    0,
                );
                return Err(failed(verdict));
            }
            Err(e) => {
                let verdict = classify::transport(&e);
                instruments::call(
                    &call.figures,
                    repeat,
                    &call.source,
                    instruments::status_class(None),
                    verdict.outcome(),
                    0,
                );
                return Err(failed(verdict));
            }
        };
        source.limiter.observe(&rate);
        let status_label = instruments::status_class(Some(status.as_u16()));
        crate::stages::Stage::Fetch.add(started.elapsed());
        let result = if status.is_success() {
            let decoding = std::time::Instant::now();
            let decoded = decode(&body);
            crate::stages::Stage::Decode.since(decoding);
            decoded
        } else {
            Err(classify::status(status, rate.retry_after, &body))
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(verdict) => verdict.outcome(),
        };
        instruments::call(
            &call.figures,
            repeat,
            &call.source,
            status_label,
            outcome,
            body.len(),
        );
        match result {
            Ok(value) => Ok(value),
            // The upstream wants more patience than the cap allows: every caller of the source
            // is held back for the cap (no longer), and this call fails saying why.
            Err(Verdict::Retry {
                cause,
                after: Some(after),
                ..
            }) if overlong.is_some_and(|o| o.header == "Retry-After") => {
                source.limiter.block_for(after);
                Err((
                    Attempt::WaitCapped(format!(
                        "{cause}; Retry-After: {} asks for a longer wait than rate_budget.max_wait_secs ({} s); \
                         the source is held back for {} s only",
                        retry_after_text.unwrap_or_default(),
                        source.max_wait.as_secs(),
                        source.max_wait.as_secs()
                    )),
                    Some(credential),
                ))
            }
            Err(Verdict::Retry {
                cause,
                after: None,
                kind,
            }) if !status.is_success()
                && let Some(text) = retry_after_text =>
            {
                let verdict = Verdict::Retry {
                    cause: format!("{cause} (Retry-After: {text} is no delay or date; backing off instead)"),
                    after: None,
                    kind,
                };
                Err(failed(verdict))
            }
            Err(verdict) => Err(failed(verdict)),
        }
    }

    /// The request of one attempt: method, URL, query, credential, API key, scope and body.
    fn request(
        &self,
        source: &Source,
        outgoing: &Outgoing<'_>,
        credential: &Credential,
    ) -> Result<reqwest::RequestBuilder, Verdict> {
        let mut request = self
            .http
            .request(outgoing.method.clone(), outgoing.url.clone())
            .header(ACCEPT, "application/json");
        if !outgoing.query.is_empty() {
            request = request.query(outgoing.query);
        }
        let mut authorization =
            HeaderValue::from_str(&credential.authorization()).map_err(|_| Verdict::Fatal {
                cause: "the credential is not a valid header value".into(),
                kind: FailureKind::Config,
            })?;
        authorization.set_sensitive(true);
        request = request.header(AUTHORIZATION, authorization);
        if let Some(key) = &source.api_key {
            let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| Verdict::Fatal {
                cause: "the API key is not a valid header value".into(),
                kind: FailureKind::Config,
            })?;
            value.set_sensitive(true);
            request = request.header("x-api-key", value);
        }
        match outgoing.scope {
            ScopeHeader::None => {}
            ScopeHeader::Company(id) => request = request.header("X-Company-ID", id.as_str()),
            ScopeHeader::Location(id) => request = request.header("X-Location-ID", id.as_str()),
        }
        if let Some(body) = &outgoing.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        Ok(request)
    }

    /// Exponential backoff with jitter: `base × 2^(attempt-1)`, capped, minus up to half of it
    /// at random so that callers failing together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self
            .options
            .backoff_base
            .saturating_mul(1u32 << exponent)
            .min(self.options.backoff_max);
        let jitter = rand::rng().random_range(0.0..=0.5);
        full.mul_f64(1.0 - jitter).max(MIN_WAIT.min(full))
    }
}

/// A body read up to the size limit.
enum Body {
    Complete(Bytes),
    TooLarge,
}

/// Reads the answer's body chunk by chunk, stopping as soon as it exceeds `max` bytes (the
/// announced length is checked first, so an honest oversized answer is not read at all).
async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Body, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(Body::TooLarge);
    }
    // Sized from the announced length: growing by doubling held up to twice a page's size.
    let announced = response.content_length().map_or(0, |n| n as usize);
    let mut body = bytes::BytesMut::with_capacity(announced.min(max));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body.freeze()))
}

/// How one attempt ended without a value.
enum Attempt {
    Verdict(Verdict),
    /// The rate limit would not give a slot before the run's deadline.
    Deadline,
    /// The upstream (or the budget it taught) asked for a wait beyond `rate_budget.max_wait_secs`.
    WaitCapped(String),
    /// No credential could be had, and trying again will not help.
    Auth(crate::auth::AuthError),
}

/// GraphQL answer body in any vendor's dialect (see [`classify::GraphqlError`]).
#[derive(Deserialize)]
struct GraphqlBody {
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

/// A GraphQL answer decoded straight into the query's types.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct TypedGraphqlBody<T> {
    #[serde(default = "none")]
    data: Option<T>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

fn none<T>() -> Option<T> {
    None
}

fn decode_graphql<T: DeserializeOwned>(body: &[u8]) -> Result<GraphqlOutcome<T>, Verdict> {
    // Straight into the query's types: building a `serde_json::Value` tree first and converting
    // it was half the loader's CPU time and most of its memory. An answer that does not decode
    // this way takes the untyped path below, which tells garbled JSON, GraphQL errors and data
    // of the wrong shape apart.
    if let Ok(typed) = serde_json::from_slice::<TypedGraphqlBody<T>>(body) {
        let mut warnings = Vec::new();
        if let Some(errors) = typed.errors.filter(|e| !e.is_empty()) {
            match classify::graphql(&errors, typed.data.is_some()) {
                GraphqlClass::Partial { warnings: w } => warnings = w,
                GraphqlClass::Failed(verdict) => return Err(verdict),
            }
        }
        if let Some(data) = typed.data {
            return Ok(GraphqlOutcome { data, warnings });
        }
    }
    let parsed: GraphqlBody = serde_json::from_slice(body).map_err(|e| classify::undecodable(&e, body))?;
    let data = parsed.data.filter(|d| !d.is_null());
    let mut warnings = Vec::new();
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        match classify::graphql(&errors, data.is_some()) {
            GraphqlClass::Partial { warnings: w } => warnings = w,
            GraphqlClass::Failed(verdict) => return Err(verdict),
        }
    }
    let Some(data) = data else {
        return Err(Verdict::Retry {
            cause: "the answer has neither data nor errors".into(),
            after: None,
            kind: FailureKind::InvalidAnswer,
        });
    };
    let data = serde_json::from_value::<T>(data).map_err(|e| Verdict::Fatal {
        cause: format!("the data does not match the query's types: {e}"),
        kind: FailureKind::SchemaMismatch,
    })?;
    Ok(GraphqlOutcome { data, warnings })
}

fn graphql_endpoint(settings: &SourceSettings, service: Service) -> Option<&HttpUrl> {
    match (settings, service) {
        (SourceSettings::Retarus(s), Service::Default) => Some(&s.graphql_url),
        (SourceSettings::Roubler(s), Service::Default) => Some(&s.graphql_url),
        (SourceSettings::Altrata(s), Service::AltrataEvents) => Some(&s.events_url),
        (SourceSettings::Altrata(s), Service::AltrataProfile) => Some(&s.profile_url),
        _ => None,
    }
}

fn quota_spent_until(source: &Source) -> Option<DateTime<Utc>> {
    let mut guard = source.quota_spent_until.lock().unwrap_or_else(|e| e.into_inner());
    match *guard {
        Some(until) if Utc::now() < until => Some(until),
        Some(_) => {
            *guard = None;
            None
        }
        None => None,
    }
}

/// Daily quotas reset at midnight UTC.
fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    tomorrow.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn fatal(call: &CallContext, kind: FailureKind, message: String) -> CallError {
    CallError::Fatal {
        source_name: call.source.clone(),
        dataset: call.dataset.clone(),
        message,
        kind,
    }
}

fn deadline(call: &CallContext, message: String) -> CallError {
    CallError::DeadlineExceeded {
        source_name: call.source.clone(),
        dataset: call.dataset.clone(),
        message,
    }
}

/// The secret values of one attempt, to scrub from anything an answer could echo back.
struct Secrets<'a> {
    values: Vec<&'a str>,
}

impl<'a> Secrets<'a> {
    fn new(credential: Option<&'a Credential>, api_key: Option<&'a SecretString>) -> Secrets<'a> {
        let mut values = Vec::new();
        if let Some(Credential::Bearer(token) | Credential::ApiKey(token)) = credential {
            values.push(token.secret());
        }
        if let Some(key) = api_key {
            values.push(key.expose_secret());
        }
        // An empty or tiny "secret" would scrub ordinary words; nothing real is that short.
        values.retain(|v| v.len() >= 6);
        Secrets { values }
    }

    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value) {
                text = text.replace(value, "[redacted]");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AccessToken;

    #[test]
    fn secrets_echoed_by_an_upstream_are_scrubbed() {
        let credential = Credential::Bearer(AccessToken::new("ory_at_secret-token-value"));
        let key = SecretString::from("altrata-api-key-value".to_owned());
        let secrets = Secrets::new(Some(&credential), Some(&key));
        let scrubbed =
            secrets.scrub("HTTP 400: bad header Bearer ory_at_secret-token-value with altrata-api-key-value");
        assert_eq!(scrubbed, "HTTP 400: bad header Bearer [redacted] with [redacted]");
    }

    #[test]
    fn quotas_reset_at_the_next_utc_midnight() {
        let now = DateTime::parse_from_rfc3339("2025-03-30T23:59:59+00:00")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(next_utc_midnight(now).to_rfc3339(), "2025-03-31T00:00:00+00:00");
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let executor = Executor::with_options(
            Arc::new(Settings::default()),
            AuthRegistry::new(),
            ExecutorOptions::default(),
        )
        .expect("client builds");
        for attempt in 1..=10 {
            let full = BACKOFF_BASE.saturating_mul(1 << (attempt - 1)).min(BACKOFF_MAX);
            let wait = executor.backoff(attempt);
            assert!(wait <= full && wait >= full / 2, "attempt {attempt}: {wait:?}");
        }
    }

    #[test]
    fn errors_name_source_dataset_and_cause() {
        let call = CallContext::new("altrata", "events");
        let error = fatal(&call, FailureKind::UpstreamRejected, "HTTP 403: Forbidden".into());
        assert_eq!(error.to_string(), "altrata.events: HTTP 403: Forbidden");
    }
}
