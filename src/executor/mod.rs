//! The executor: the only code that sends upstream data requests.
//!
//! Requests go out through the one [`Transport`] (timeouts, no redirects, the body size limit,
//! the same for token requests). Per call it takes the source's rate-limit slot, injects the source's credential and the scope
//! header, sends, classifies the answer in one place ([`classify`]: retry / refresh-and-retry-once
//! / fail / quota spent / partial data), and adds the call's figures to the run.
//!
//! # Layout
//!
//! - This file: the [`Executor`] (client and per-source state built once) and its entry points.
//! - `call`: what datasets and the runner pass and get back ([`CallContext`], [`CallFigures`],
//!   [`GraphqlOutcome`], [`CallError`]).
//! - `attempt`: the attempt loop (credential, slot, send, classify, retry), backoff, quota stop.
//! - `body`: answers read within the size limit and GraphQL answers decoded.
//! - `secrets`: scrubbing the attempt's secrets from messages built from an answer.
//! - [`limiter`]: the per-source sliding-log rate limiter, shared by every job of a source.
//! - [`shared_budget`]: the same budget shared by every process on the database (replicas,
//!   backfills), on top of the in-process limiter.
//! - [`headers`]: `X-RateLimit-*`, `RateLimit-*` and `Retry-After` parsing.
//! - [`classify`]: what an answer means; every retry decision is made there.
//! - `instruments`: metrics and the per-run [`CallFigures`].
//! - `replay`: a rebuild's calls, answered from the archive ([`crate::archive`]) instead of sent.
//!
//! Archive: a call whose context carries a recorder hands it every answer it decoded, as
//! received; one whose context carries a replay sends nothing (see [`crate::archive`]).
//!
//! Secrets: request headers are never logged or put into an error, and every message built from
//! an answer is scrubbed of the credential and API key before it leaves this module.

mod attempt;
mod body;
mod call;
pub mod classify;
pub mod headers;
mod instruments;
pub mod limiter;
mod replay;
mod secrets;
pub mod shared_budget;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use graphql_client::GraphQLQuery;
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use crate::archive::QueryId;
use crate::auth::{AuthRegistry, SourceAuth};
use crate::config::{HttpUrl, Settings};
use crate::failure::FailureKind;
use crate::transport::{Limits, Transport};
use shared_budget::{BudgetDatabase, RateBudget};

use attempt::Outgoing;
pub(crate) use body::Nullable;
use body::decode_graphql;
use call::fatal;
pub use call::{CallContext, CallError, CallFailure, CallFigures, GraphqlOutcome};

pub use crate::transport::{CONNECT_TIMEOUT, MAX_BODY_BYTES, REQUEST_TIMEOUT};
/// Attempts per call, the first included (the retry budget).
pub const MAX_ATTEMPTS: u32 = 6;
/// The first backoff; each retry doubles it, up to [`BACKOFF_MAX`]. Jitter takes 0–50 % off.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Added to `rate_budget.max_wait_secs` for a call already waiting when a block of the full cap
/// was set (by another caller's `Retry-After`), so that it is not refused for the grace alone.
pub const WAIT_CAP_GRACE: Duration = Duration::from_secs(1);

/// Which GraphQL service of a source a query goes to, by the name its vendor gives it (most
/// vendors have one, [`Service::DEFAULT`]; a vendor with several names its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Service(pub &'static str);

impl Service {
    /// The source's only GraphQL endpoint (`graphql_url`).
    pub const DEFAULT: Service = Service("graphql");

    /// The name (`schema pull --service NAME`, messages).
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// What the executor needs of a source's vendor, handed over by its configuration section (see
/// `config::Section::parts`): where its GraphQL services and REST API are, the API key it sends
/// on every call, and how its answers are read.
pub struct CallSetup {
    /// Each GraphQL service with its endpoint.
    pub graphql: Vec<(Service, HttpUrl)>,
    /// The base of a REST API ([`Executor::get_json`]), if the vendor has one.
    pub rest_base: Option<HttpUrl>,
    /// Sent as `x-api-key` on every call.
    pub api_key: Option<SecretString>,
    /// How the vendor's answers classify into verdicts.
    pub answers: &'static dyn classify::Dialect,
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

impl ExecutorOptions {
    /// The transport limits these options set.
    pub fn limits(&self) -> Limits {
        Limits {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
        }
    }
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
    /// The vendor's endpoints, key and answer dialect.
    setup: CallSetup,
    auth: Option<Arc<SourceAuth>>,
    /// This process's limiter, plus the budget shared through the database when there is one.
    limiter: RateBudget,
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

/// The shared executor.
pub struct Executor {
    /// The one road out (limits, redirects, body size), shared with nothing else of this executor.
    transport: Transport,
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
        let transport = Transport::new(options.limits())?;
        let sources = settings
            .sources
            .iter()
            .map(|(name, source)| {
                // A vendor that hands no setup has no endpoint: its calls fail as misconfigured
                // (a test of every vendor rules that out, see `src/vendors/`).
                let setup = source.part::<CallSetup>().unwrap_or(CallSetup {
                    graphql: Vec::new(),
                    rest_base: None,
                    api_key: None,
                    answers: &classify::Generic,
                });
                let entry = Source {
                    setup,
                    auth: auth.get(name).cloned(),
                    limiter: match &budget {
                        Some(database) => RateBudget::shared(
                            name,
                            source.rate_limit(),
                            options.request_timeout,
                            settings.rate_budget.max_wait(),
                            database.clone(),
                        ),
                        None => RateBudget::local(source.rate_limit(), settings.rate_budget.max_wait()),
                    },
                    quota_spent_until: Mutex::new(None),
                    throttled_ms_total: AtomicU64::new(0),
                    max_wait: settings.rate_budget.max_wait(),
                    wait_capped: Mutex::new(None),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(Executor {
            transport,
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
        let built = Q::build_query(variables);
        let query = QueryId::graphql(built.operation_name, built.query);
        let body = serde_json::to_vec(&built).map_err(|e| {
            fatal(
                call,
                FailureKind::Internal,
                format!("could not encode the query: {e}"),
            )
        })?;
        self.post_graphql(call, service, scope, (query, body), || std::marker::PhantomData)
            .await
    }

    /// Runs a typed query whose answer's `data` is decoded by a seed rather than into the query's
    /// response type: a loader turns a page's records into rows as they are parsed, so a page
    /// never exists as a vector of records. `seed` makes one seed per attempt. Same auth, limit,
    /// retries and error classification as [`Executor::execute`].
    pub async fn execute_seeded<Q: GraphQLQuery, S, T>(
        &self,
        call: &CallContext,
        service: Service,
        scope: &ScopeHeader,
        variables: Q::Variables,
        seed: impl Fn() -> S,
    ) -> Result<GraphqlOutcome<T>, CallError>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = T>,
    {
        let built = Q::build_query(variables);
        let query = QueryId::graphql(built.operation_name, built.query);
        let body = serde_json::to_vec(&built).map_err(|e| {
            fatal(
                call,
                FailureKind::Internal,
                format!("could not encode the query: {e}"),
            )
        })?;
        self.post_graphql(call, service, scope, (query, body), seed).await
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
        let query = QueryId::graphql("(raw)", query);
        self.post_graphql(call, service, scope, (query, body), || std::marker::PhantomData)
            .await
    }

    /// POSTs an encoded GraphQL request body to the source's `service` and decodes the answer's
    /// `data` with a seed from `seed`.
    async fn post_graphql<S, T>(
        &self,
        call: &CallContext,
        service: Service,
        scope: &ScopeHeader,
        (query, body): (QueryId, Vec<u8>),
        seed: impl Fn() -> S,
    ) -> Result<GraphqlOutcome<T>, CallError>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = T>,
    {
        let source = self.source(call)?;
        let endpoint = source.graphql_endpoint(service).ok_or_else(|| {
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
            archived_as: query,
        };
        let answers = source.setup.answers;
        self.run(call, &source, outgoing, |body: &[u8]| {
            decode_graphql(answers, body, &seed)
        })
        .await
    }

    /// One REST GET, `path` relative to the source's REST base URL.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        call: &CallContext,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CallError> {
        self.get_json_seeded(call, path, query, || std::marker::PhantomData)
            .await
    }

    /// [`Executor::get_json`] decoding the answer with a seed from `seed` (one per attempt): for
    /// answers whose shape depends on the request, such as a list under the resource's own key.
    pub async fn get_json_seeded<S, T>(
        &self,
        call: &CallContext,
        path: &str,
        query: &[(&str, String)],
        seed: impl Fn() -> S,
    ) -> Result<T, CallError>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = T>,
    {
        let source = self.source(call)?;
        let Some(base) = &source.setup.rest_base else {
            return Err(fatal(
                call,
                FailureKind::Config,
                "this source has no REST API".into(),
            ));
        };
        let url = base
            .join(path)
            .map_err(|e| fatal(call, FailureKind::Config, format!("bad path `{path}`: {e}")))?;
        let outgoing = Outgoing {
            method: reqwest::Method::GET,
            url: url.url().clone(),
            query,
            body: None,
            scope: &ScopeHeader::None,
            archived_as: QueryId::rest("GET", path),
        };
        self.run(call, &source, outgoing, |body: &[u8]| {
            let mut json = serde_json::Deserializer::from_slice(body);
            seed()
                .deserialize(&mut json)
                .and_then(|value| json.end().map(|()| value))
                .map_err(|e| classify::undecodable(&e, body))
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
}

impl Source {
    fn graphql_endpoint(&self, service: Service) -> Option<&HttpUrl> {
        self.setup
            .graphql
            .iter()
            .find(|(known, _)| *known == service)
            .map(|(_, url)| url)
    }
}
