//! Altrata stand-in: a client-credentials token endpoint (Basic auth + `x-api-key`, `grant_type`
//! in the query string) where **a new token terminates the previous one**, and two AppSync-style
//! GraphQL services on one loopback server: events (`/events/v1/graphql`) and profile
//! (`/profile/v1/graphql`).
//!
//! What it reproduces from `docs/vendors/altrata.md`: `{"message":"Unauthorized"}` 401s for
//! superseded, expired or unknown tokens (superseded ones counted apart, so tests can prove the
//! service never fights itself for the token); 2 requests per second (burst 2) per service and
//! credential, answered `429 {"message":"Too Many Requests"}`; an optional daily quota answered
//! `429 {"message":"Limit Exceeded"}`; cursor paging with `pageInfo {first after}` /
//! `pageInfoResponse` and `altptr<n>` cursors; and `errors[].errorType` of `unauthorized`,
//! `deprecated` (payload still valid) and `error` (payload discarded, `data` null).
//!
//! Both services share one schema (`schemas/altrata.graphql`) whose root `Query` holds the events
//! and the profile fields; each path only resolves its own service's fields and answers the other
//! service's with a `ValidationError`, as the separate real hosts would.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{
    ComplexObject, Context, EmptyMutation, EmptySubscription, Enum, ErrorExtensions, ID, InputObject, Object,
    Schema, SimpleObject,
};
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::{self, Edits};
use crate::faults::{self, Faults};
use crate::gql::{self, GqlDate, GqlDateTime};
use crate::{SandboxOptions, ServerGuard};

/// Token path; `grant_type=client_credentials` goes in the query string.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Events service GraphQL path (really `https://events.altrata.com/v1/graphql`).
pub const EVENTS_PATH: &str = "/events/v1/graphql";
/// Profile service GraphQL path (really `https://profile.altrata.com/v1/graphql/`).
pub const PROFILE_PATH: &str = "/profile/v1/graphql";
/// Default and maximum `pageInfo.first` of `events`. [INFERRED]: "page sizes differ per API".
pub const DEFAULT_PAGE_SIZE: usize = 10;
pub const MAX_PAGE_SIZE: usize = 50;
/// Profile fields a subscription may not cover: [`AltrataOptions::unauthorized_fields`] names
/// some of these to make them come back null with `errorType: "unauthorized"`.
pub const PREMIUM_FIELDS: [&str; 2] = ["netWorthUsd", "revenueUsd"];
/// The profile field answered with an `errorType: "deprecated"` warning.
pub const DEPRECATED_FIELD: &str = "wxPersonId";

/// Altrata knobs. `Default`: one credential, 8 h tokens, 25 persons, 10 organisations, 2 req/s
/// burst 2 per service, no daily quota, every field authorized, deprecation warnings on.
#[derive(Debug, Clone)]
pub struct AltrataOptions {
    pub username: String,
    pub password: String,
    pub api_key: String,
    /// Token lifetime (`expires_in`); the vendor's is 8 hours.
    pub token_lifetime: Duration,
    /// Persons `1-per-1..=persons`.
    pub persons: u32,
    /// Organisations `1-org-1..=organizations`.
    pub organizations: u32,
    /// Average events per id (each id gets 0..=2×this, spread over history).
    pub events_per_id: u32,
    /// Sustained requests per second per service and credential.
    pub rate_per_sec: f64,
    /// Requests allowed at once before the per-second limit bites.
    pub burst: u32,
    /// Accepted calls per credential per UTC day, both services together; `None` = unlimited.
    pub daily_quota: Option<u64>,
    /// Profile fields (from [`PREMIUM_FIELDS`]) the subscription does not cover.
    pub unauthorized_fields: Vec<String>,
    /// Whether selecting [`DEPRECATED_FIELD`] adds an `errorType: "deprecated"` warning.
    pub deprecation_warnings: bool,
    /// Fields removed from the schema (see [`crate::drift`]): introspection leaves them out and
    /// queries selecting them are refused. Empty by default.
    pub removed_fields: Vec<crate::drift::RemovedField>,
    /// Scalar fields whose type changes, values included (see [`crate::drift`]). Empty by
    /// default.
    pub retyped_fields: Vec<crate::drift::RetypedField>,
}

impl Default for AltrataOptions {
    fn default() -> Self {
        AltrataOptions {
            username: "svc-reporting-etl".into(),
            password: "altrata-sandbox-password".into(),
            api_key: "altrata-sandbox-api-key".into(),
            token_lifetime: Duration::from_secs(28_800),
            persons: 25,
            organizations: 10,
            events_per_id: 8,
            rate_per_sec: 2.0,
            burst: 2,
            daily_quota: None,
            unauthorized_fields: Vec::new(),
            deprecation_warnings: true,
            removed_fields: Vec::new(),
            retyped_fields: Vec::new(),
        }
    }
}

/// The two GraphQL services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AltrataService {
    Events,
    Profile,
}

/// One GraphQL call as the server saw it, for burst and retry assertions.
#[derive(Debug, Clone)]
pub struct AltrataCall {
    pub service: AltrataService,
    /// When the call arrived (tokio clock, so paused-time tests see virtual time).
    pub at: tokio::time::Instant,
    /// The HTTP status answered.
    pub status: u16,
}

/// What tests and the `sandbox` binary use to reach and steer the Altrata stand-in.
#[derive(Clone)]
pub struct AltrataHandle {
    pub base_url: String,
    pub token_url: String,
    pub events_url: String,
    pub profile_url: String,
    pub username: String,
    pub password: String,
    pub api_key: String,
    pub faults: Faults,
    /// Any part of any answer (token endpoint included) replaced on demand.
    pub hostile: crate::hostile::Hostile,
    pub edits: Edits,
    shared: Arc<Shared>,
}

impl AltrataHandle {
    /// Tokens granted so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::Relaxed)
    }

    /// GraphQL calls refused with 401 because their token had been superseded by a newer one.
    pub fn stale_token_rejections(&self) -> u64 {
        self.shared.stale_rejections.load(Ordering::Relaxed)
    }

    /// GraphQL calls refused with 401 for any other reason (expired, unknown or missing token).
    pub fn other_unauthorized(&self) -> u64 {
        self.shared.other_unauthorized.load(Ordering::Relaxed)
    }

    /// Every GraphQL call so far, in arrival order.
    pub fn call_log(&self) -> Vec<AltrataCall> {
        self.shared.lock_calls().clone()
    }

    /// Invalidates every token issued so far (as if 8 hours had passed); not counted as stale.
    pub fn expire_tokens(&self) {
        let now = tokio::time::Instant::now();
        for token in self.shared.lock_tokens().values_mut() {
            token.expires_at = now;
        }
    }

    /// While `true` the token endpoint answers 503.
    pub fn set_token_endpoint_down(&self, down: bool) {
        self.shared.token_endpoint_down.store(down, Ordering::Relaxed);
    }

    /// Replaces the daily quota (`None` = unlimited); calls already made today still count.
    pub fn set_daily_quota(&self, quota: Option<u64>) {
        self.shared
            .daily_quota
            .store(quota.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Replaces the profile fields the subscription does not cover (see [`PREMIUM_FIELDS`]).
    pub fn set_unauthorized_fields(&self, fields: &[&str]) {
        self.shared.lock_knobs().0 = fields.iter().map(|f| f.to_string()).collect();
    }

    /// Turns the `deprecated` warning on [`DEPRECATED_FIELD`] on or off.
    pub fn set_deprecation_warnings(&self, on: bool) {
        self.shared.deprecation_warnings.store(on, Ordering::Relaxed);
    }

    /// Makes every query about `altrata_id` answer `errorType: "error"` with `data: null`.
    pub fn fail_altrata_id(&self, altrata_id: &str) {
        self.shared.lock_knobs().1.insert(altrata_id.to_string());
    }

    /// Undoes every [`AltrataHandle::fail_altrata_id`].
    pub fn clear_failures(&self) {
        self.shared.lock_knobs().1.clear();
    }

    /// The person ids that exist: `1-per-1..=N`.
    pub fn person_ids(&self) -> Vec<String> {
        (1..=self.shared.persons).map(|n| format!("1-per-{n}")).collect()
    }

    /// The organisation ids that exist: `1-org-1..=M`.
    pub fn organization_ids(&self) -> Vec<String> {
        (1..=self.shared.organizations)
            .map(|n| format!("1-org-{n}"))
            .collect()
    }

    /// Every event `events(altrataId)` serves (unfiltered), newest first, every field, edits
    /// applied, in the served JSON shape.
    pub fn events(&self, altrata_id: &str) -> Vec<Value> {
        self.shared.events(altrata_id)
    }

    /// The person `personIdSearch` serves (every field, as with a subscription covering all).
    pub fn person(&self, altrata_id: &str) -> Option<Value> {
        self.shared.person(altrata_id)
    }

    /// The organisation `organizationIdSearch` serves (every field).
    pub fn organization(&self, altrata_id: &str) -> Option<Value> {
        self.shared.organization(altrata_id)
    }

    /// URLs and credentials, for the `sandbox` binary.
    pub fn describe(&self) -> Value {
        let quota = self.shared.daily_quota.load(Ordering::Relaxed);
        json!({
            "token_url": format!("{}?grant_type=client_credentials", self.token_url),
            "events_url": self.events_url,
            "profile_url": self.profile_url,
            "username": self.username,
            "password": self.password,
            "api_key": self.api_key,
            "token_lifetime_secs": self.shared.token_lifetime.as_secs(),
            "rate_per_sec": self.shared.rate_per_sec,
            "burst": self.shared.burst,
            "daily_quota": (quota != u64::MAX).then_some(quota),
            "persons": format!("1-per-1..1-per-{}", self.shared.persons),
            "organizations": format!("1-org-1..1-org-{}", self.shared.organizations),
        })
    }
}

/// The schema both services serve, as SDL (what `schemas/altrata.graphql` must equal).
pub fn sdl() -> String {
    format!(
        "# Generated by `cargo run -p sandbox -- sdl altrata`: the schema the Altrata sandbox serves\n\
         # on both the events and the profile paths (each resolves only its own root fields).\n\
         # Rebuilt from the vendor's documentation; not the vendor's own SDL. Do not edit by hand.\n\n{}",
        schema(None, &[], &[]).sdl()
    )
}

pub async fn start(options: &SandboxOptions) -> std::io::Result<(AltrataHandle, ServerGuard)> {
    let o = &options.altrata;
    let shared = Arc::new(Shared {
        seed: options.seed,
        anchor: options.anchor,
        history_days: options.history_days.max(1),
        persons: o.persons,
        organizations: o.organizations,
        events_per_id: o.events_per_id,
        username: o.username.clone(),
        password: o.password.clone(),
        api_key: o.api_key.clone(),
        token_lifetime: o.token_lifetime,
        rate_per_sec: o.rate_per_sec,
        burst: o.burst,
        edits: Edits::default(),
        tokens: Mutex::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
        quota_used: Mutex::new(HashMap::new()),
        daily_quota: AtomicU64::new(o.daily_quota.unwrap_or(u64::MAX)),
        calls: Mutex::new(Vec::new()),
        knobs: Mutex::new((o.unauthorized_fields.iter().cloned().collect(), HashSet::new())),
        deprecation_warnings: AtomicBool::new(o.deprecation_warnings),
        tokens_issued: AtomicU64::new(0),
        stale_rejections: AtomicU64::new(0),
        other_unauthorized: AtomicU64::new(0),
        token_endpoint_down: AtomicBool::new(false),
    });
    let faults = Faults::new(options.seed ^ 0x414c_5452_4154_4100);
    let app = Arc::new(App {
        schema: schema(Some(shared.clone()), &o.removed_fields, &o.retyped_fields),
        shared: shared.clone(),
    });
    let service_route = |service: AltrataService| {
        let handler = move |state: State<Arc<App>>, headers: HeaderMap, body: Bytes| {
            graphql(state, service, headers, body)
        };
        post(handler)
            .layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                faults::inject,
            ))
            .layer(axum::middleware::from_fn_with_state(
                (app.clone(), service),
                log_call,
            ))
    };
    let router = axum::Router::new()
        .route(EVENTS_PATH, service_route(AltrataService::Events))
        .route(PROFILE_PATH, service_route(AltrataService::Profile))
        .route(TOKEN_PATH, post(token))
        .with_state(app);
    let hostile = crate::hostile::Hostile::default();
    let guard = crate::serve_vendor(router, &hostile).await?;
    let base_url = format!("http://{}", guard.addr);
    let handle = AltrataHandle {
        token_url: format!("{base_url}{TOKEN_PATH}"),
        events_url: format!("{base_url}{EVENTS_PATH}"),
        profile_url: format!("{base_url}{PROFILE_PATH}"),
        base_url,
        username: o.username.clone(),
        password: o.password.clone(),
        api_key: o.api_key.clone(),
        faults,
        hostile,
        edits: shared.edits.clone(),
        shared,
    };
    Ok((handle, guard))
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct TokenState {
    username: String,
    expires_at: tokio::time::Instant,
    /// Set when a newer token was issued for the same credential.
    superseded: bool,
}

/// (unauthorized field names, altrata ids that answer errorType "error").
type Knobs = (HashSet<String>, HashSet<String>);

/// State shared by the handle (tests) and the HTTP handlers / resolvers. Every mutex is held
/// only for one map operation, never across an await.
struct Shared {
    seed: u64,
    anchor: DateTime<Utc>,
    history_days: u32,
    persons: u32,
    organizations: u32,
    events_per_id: u32,
    username: String,
    password: String,
    api_key: String,
    token_lifetime: Duration,
    rate_per_sec: f64,
    burst: u32,
    edits: Edits,
    /// Every token ever issued; written by the token endpoint and `expire_tokens`.
    tokens: Mutex<HashMap<String, TokenState>>,
    /// Token buckets per (service, username): (tokens left, last refill).
    buckets: Mutex<HashMap<(AltrataService, String), (f64, tokio::time::Instant)>>,
    /// Accepted calls per (username, UTC day).
    quota_used: Mutex<HashMap<(String, NaiveDate), u64>>,
    /// `u64::MAX` means unlimited.
    daily_quota: AtomicU64,
    calls: Mutex<Vec<AltrataCall>>,
    knobs: Mutex<Knobs>,
    deprecation_warnings: AtomicBool,
    tokens_issued: AtomicU64,
    stale_rejections: AtomicU64,
    other_unauthorized: AtomicU64,
    token_endpoint_down: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenState>> {
        lock(&self.tokens)
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, Vec<AltrataCall>> {
        lock(&self.calls)
    }

    fn lock_knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        lock(&self.knobs)
    }

    /// Takes one request from the (service, user) bucket; false when it is empty.
    fn take_rate_token(&self, service: AltrataService, username: &str) -> bool {
        let now = tokio::time::Instant::now();
        let burst = f64::from(self.burst.max(1));
        let mut buckets = lock(&self.buckets);
        let (left, last) = buckets
            .entry((service, username.to_string()))
            .or_insert((burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate_per_sec;
        *left = (*left + refill).min(burst);
        *last = now;
        if *left >= 1.0 {
            *left -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts one call against today's quota; false when the quota is used up.
    fn take_quota(&self, username: &str) -> bool {
        let quota = self.daily_quota.load(Ordering::Relaxed);
        let mut used = lock(&self.quota_used);
        let today = used
            .entry((username.to_string(), Utc::now().date_naive()))
            .or_insert(0);
        if *today >= quota {
            return false;
        }
        *today += 1;
        true
    }

    fn apply_edits(&self, id: &str, mut value: Value) -> Option<Value> {
        if self.edits.is_deleted(id) {
            return None;
        }
        if let (Some(changes), Some(object)) = (self.edits.changes_for(id), value.as_object_mut()) {
            for (field, new) in changes {
                object.insert(field, new);
            }
        }
        Some(value)
    }

    /// Subject kind and number of an id such as `1-per-7` / `1-org-3`, if it exists.
    fn subject(&self, altrata_id: &str) -> Option<(Kind, u32)> {
        let (kind, rest) = if let Some(rest) = altrata_id.strip_prefix("1-per-") {
            (Kind::Person, rest)
        } else {
            (Kind::Organization, altrata_id.strip_prefix("1-org-")?)
        };
        let n: u32 = rest.parse().ok()?;
        let max = match kind {
            Kind::Person => self.persons,
            Kind::Organization => self.organizations,
        };
        (1..=max).contains(&n).then_some((kind, n))
    }

    fn person(&self, altrata_id: &str) -> Option<Value> {
        let (Kind::Person, n) = self.subject(altrata_id)? else {
            return None;
        };
        let value = serde_json::to_value(generate_person(self, n)).ok()?;
        self.apply_edits(altrata_id, value)
    }

    fn organization(&self, altrata_id: &str) -> Option<Value> {
        let (Kind::Organization, n) = self.subject(altrata_id)? else {
            return None;
        };
        let value = serde_json::to_value(generate_organization(self, n)).ok()?;
        self.apply_edits(altrata_id, value)
    }

    fn events(&self, altrata_id: &str) -> Vec<Value> {
        let Some((kind, n)) = self.subject(altrata_id) else {
            return Vec::new();
        };
        let mut events: Vec<Value> = generate_events(self, kind, n)
            .into_iter()
            .filter_map(|event| {
                let id = event.event_id.0.clone();
                self.apply_edits(&id, serde_json::to_value(event).ok()?)
            })
            .collect();
        // Newest first by event date, ties by event id, so paging is stable.
        let key = |v: &Value| {
            (
                v.pointer("/eventDateInfo/date")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                v.get("eventId").and_then(Value::as_str).map(str::to_string),
            )
        };
        events.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.cmp(&ka.0).then_with(|| ka.1.cmp(&kb.1))
        });
        events
    }

    fn person_name(&self, n: u32) -> String {
        let mut rng = data::rng_for(self.seed, &["altrata", "person", &n.to_string()]);
        let first = pick(&mut rng, &FIRST_NAMES);
        let last = pick(&mut rng, &LAST_NAMES);
        format!("{first} {last}")
    }

    fn organization_name(&self, n: u32) -> String {
        let mut rng = data::rng_for(self.seed, &["altrata", "organization", &n.to_string()]);
        format!("{} {}", pick(&mut rng, &ORG_STEMS), pick(&mut rng, &ORG_SUFFIXES))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Person,
    Organization,
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

struct App {
    schema: AltrataSchema,
    shared: Arc<Shared>,
}

type AltrataSchema = Schema<Query, EmptyMutation, EmptySubscription>;

fn message(status: StatusCode, text: &str) -> Response {
    gql::json(status, json!({"message": text}))
}

/// Records every GraphQL call with the status finally answered (faults included).
async fn log_call(
    State((app, service)): State<(Arc<App>, AltrataService)>,
    request: Request,
    next: Next,
) -> Response {
    let at = tokio::time::Instant::now();
    let response = next.run(request).await;
    app.shared.lock_calls().push(AltrataCall {
        service,
        at,
        status: response.status().as_u16(),
    });
    response
}

async fn token(State(app): State<Arc<App>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let shared = &app.shared;
    if shared.token_endpoint_down.load(Ordering::Relaxed) {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if api_key != Some(shared.api_key.as_str()) {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    }
    let grant_type = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "grant_type")
        .map(|(_, value)| value.into_owned());
    if grant_type.as_deref() != Some("client_credentials") {
        return gql::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "message": "grant_type=client_credentials is required in the query string"}),
        );
    }
    match gql::basic(&headers) {
        Some((user, password)) if user == shared.username && password == shared.password => {}
        _ => {
            return gql::json(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "message": "Invalid client credentials"}),
            );
        }
    }
    let serial = shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let now = Utc::now();
    let access_token = crate::retarus::jwt_like(
        &json!({"alg": "RS256", "kid": "sandbox"}),
        &json!({
            "sub": shared.username,
            "token_use": "access",
            "scope": "altrata/api",
            "iat": now.timestamp(),
            "exp": now.timestamp() + shared.token_lifetime.as_secs() as i64,
            "jti": format!("{:016x}-{serial}", shared.seed),
        }),
        &mut data::rng_for(shared.seed, &["altrata", "token", &serial.to_string()]),
    );
    {
        // The vendor: a new token terminates the previous one.
        let mut tokens = shared.lock_tokens();
        for old in tokens.values_mut().filter(|t| t.username == shared.username) {
            old.superseded = true;
        }
        tokens.insert(
            access_token.clone(),
            TokenState {
                username: shared.username.clone(),
                expires_at: tokio::time::Instant::now() + shared.token_lifetime,
                superseded: false,
            },
        );
    }
    gql::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "expires_in": shared.token_lifetime.as_secs(),
            "token_type": "bearer",
        }),
    )
}

async fn graphql(
    State(app): State<Arc<App>>,
    service: AltrataService,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &app.shared;
    if let Some(key) = headers.get("x-api-key")
        && key.to_str().ok() != Some(shared.api_key.as_str())
    {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    }
    let Some(token) = gql::bearer(&headers) else {
        shared.other_unauthorized.fetch_add(1, Ordering::Relaxed);
        // Anonymous probes: profile answers 401 like this, events a bare 403.
        return match service {
            AltrataService::Profile => gql::json(
                StatusCode::UNAUTHORIZED,
                json!({"errorType": "UnauthorizedException", "message": "Valid authorization header not provided."}),
            ),
            AltrataService::Events => message(StatusCode::FORBIDDEN, "Forbidden"),
        };
    };
    let username = {
        let tokens = shared.lock_tokens();
        match tokens.get(&token) {
            Some(state) if state.superseded => {
                shared.stale_rejections.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(state) if state.expires_at > tokio::time::Instant::now() => Some(state.username.clone()),
            _ => {
                shared.other_unauthorized.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    };
    let Some(username) = username else {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    if !shared.take_rate_token(service, &username) {
        return message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    if !shared.take_quota(&username) {
        return message(StatusCode::TOO_MANY_REQUESTS, "Limit Exceeded");
    }
    let request = match gql::parse_request(&body) {
        Ok(request) => request,
        Err(_) => {
            return gql::json(
                StatusCode::BAD_REQUEST,
                json!({"errors": [{"errorType": "MalformedHttpRequestException", "message": "Invalid request body"}]}),
            );
        }
    };
    let response = app.schema.execute(request.data(service)).await;
    let body = serde_json::to_value(&response).unwrap_or_else(|_| json!({"data": null}));
    axum::Json(appsync_errors(body)).into_response()
}

/// Rewrites async-graphql's errors into AppSync's shape: `errorType` next to `message` (moved out
/// of `extensions`), `ValidationError` for request-level errors, and `data: null` whenever an
/// error has `errorType: "error"` (the vendor says to discard such a payload).
fn appsync_errors(mut body: Value) -> Value {
    let mut discard = false;
    if let Some(errors) = body.get_mut("errors").and_then(Value::as_array_mut) {
        for error in errors.iter_mut() {
            let Some(object) = error.as_object_mut() else {
                continue;
            };
            let moved = object
                .get_mut("extensions")
                .and_then(Value::as_object_mut)
                .and_then(|ext| ext.remove("errorType"));
            if object
                .get("extensions")
                .and_then(Value::as_object)
                .is_some_and(|ext| ext.is_empty())
            {
                object.remove("extensions");
            }
            let error_type = moved.unwrap_or_else(|| {
                if object.contains_key("path") {
                    json!("error")
                } else {
                    json!("ValidationError")
                }
            });
            discard |= error_type == "error";
            object.insert("errorType".into(), error_type);
        }
    }
    if discard && let Some(object) = body.as_object_mut() {
        object.insert("data".into(), Value::Null);
    }
    body
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

fn schema(
    shared: Option<Arc<Shared>>,
    removed: &[crate::drift::RemovedField],
    retyped: &[crate::drift::RetypedField],
) -> AltrataSchema {
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription);
    let builder = crate::drift::apply(builder, removed, retyped);
    match shared {
        Some(shared) => builder.data(shared).finish(),
        None => builder.finish(),
    }
}

fn typed_error(message: impl Into<String>, error_type: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("errorType", error_type))
}

/// Refuses a root field asked on the other service's path, and ids steered to fail.
fn guard(
    ctx: &Context<'_>,
    own: AltrataService,
    field: &str,
    altrata_id: &str,
) -> async_graphql::Result<Arc<Shared>> {
    let shared = ctx.data::<Arc<Shared>>()?.clone();
    let service = ctx.data::<AltrataService>().copied().unwrap_or(own);
    if service != own {
        return Err(typed_error(
            format!(
                "Validation error of type FieldUndefined: Field '{field}' in type 'Query' is undefined @ '{field}'"
            ),
            "ValidationError",
        ));
    }
    if shared.lock_knobs().1.contains(altrata_id) {
        return Err(typed_error(
            format!("Internal error while resolving {altrata_id}"),
            "error",
        ));
    }
    Ok(shared)
}

fn from_value<T: DeserializeOwned>(value: Value) -> async_graphql::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| typed_error(format!("Internal error reading a record: {e}"), "error"))
}

/// Cursor paging input: `first` items after the cursor `after`, or `last` items before `before`.
#[derive(InputObject, Default)]
pub struct PageInfoInput {
    /// Page size (default 10, at most 50).
    pub first: Option<i32>,
    /// The `endCursor` of the previous page, e.g. "altptr10".
    pub after: Option<String>,
    /// Page size when paging backwards; must be paired with `before`.
    pub last: Option<i32>,
    /// The `startCursor` of the following page.
    pub before: Option<String>,
}

/// Where a page sits in the whole result.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    pub has_next_page: Option<bool>,
    pub has_previous_page: Option<bool>,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// Paging metadata of a result: the total and the cursors to continue from.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PageInfoResponse {
    pub total_count: Option<i32>,
    pub page_info: Option<PageInfo>,
}

/// One page of events about an entity, newest first.
#[derive(SimpleObject)]
pub struct EventsResponse {
    pub items: Option<Vec<Option<Event>>>,
    pub page_info_response: Option<PageInfoResponse>,
}

/// How precisely an event's date is known.
#[derive(Enum, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DatePrecision {
    Day,
    Month,
    Year,
}

/// A calendar date with its precision: for MONTH the date is the 1st, for YEAR January 1st.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DateInfo {
    /// AWSDate, YYYY-MM-DD, no time zone.
    pub date: Option<GqlDate>,
    pub date_precision: Option<DatePrecision>,
    /// Human form, e.g. "4 June 2025", "June 2025" or "2025".
    pub display_date: Option<String>,
}

/// A person or organisation named in an event.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EntityMention {
    pub altrata_id: Option<String>,
    pub name: Option<String>,
}

/// Something that happened to a person or organisation (job change, funding, award, ...).
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: ID,
    pub event_date_info: Option<DateInfo>,
    pub event_type: Option<String>,
    pub event_text: Option<String>,
    pub person_mentions: Option<Vec<Option<EntityMention>>>,
    pub organization_mentions: Option<Vec<Option<EntityMention>>>,
    /// AWSDate the event was published.
    pub event_published_date: Option<GqlDate>,
    pub announcement_date_info: Option<DateInfo>,
    /// New role title (job changes only).
    pub start_role_title: Option<String>,
    /// Previous role title (job changes only).
    pub end_role_title: Option<String>,
}

/// A person profile.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// "1-per-<n>".
    pub altrata_id: ID,
    pub full_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Current primary role title.
    pub title: Option<String>,
    pub primary_organization_id: Option<String>,
    pub primary_organization_name: Option<String>,
    /// ISO 3166-1 alpha-2 country of residence.
    pub country: Option<String>,
    pub city: Option<String>,
    pub updated_at: Option<GqlDateTime>,
    #[graphql(skip)]
    pub net_worth_usd: Option<f64>,
    #[graphql(skip)]
    pub wx_person_id: Option<String>,
}

#[ComplexObject]
impl Person {
    /// Estimated net worth in USD. A premium field: without the subscription it is null with an
    /// error of errorType "unauthorized".
    async fn net_worth_usd(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        premium(ctx, "netWorthUsd", "Person")?;
        Ok(self.net_worth_usd)
    }

    /// Legacy Wealth-X person id. DEPRECATED: answered with an errorType "deprecated" warning.
    async fn wx_person_id(&self, ctx: &Context<'_>) -> Option<String> {
        let warn = ctx
            .data::<Arc<Shared>>()
            .map(|s| s.deprecation_warnings.load(Ordering::Relaxed))
            .unwrap_or(false);
        if warn {
            let error = typed_error(
                "Field 'wxPersonId' is deprecated and will be removed",
                "deprecated",
            )
            .into_server_error(ctx.item.pos);
            ctx.add_error(ctx.set_error_path(error));
        }
        self.wx_person_id.clone()
    }
}

/// An organisation profile.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// "1-org-<n>".
    pub altrata_id: ID,
    pub name: Option<String>,
    pub industry: Option<String>,
    /// ISO 3166-1 alpha-2 country of the headquarters.
    pub country: Option<String>,
    pub employee_count: Option<i32>,
    pub website: Option<String>,
    pub updated_at: Option<GqlDateTime>,
    #[graphql(skip)]
    pub revenue_usd: Option<f64>,
}

#[ComplexObject]
impl Organization {
    /// Annual revenue in USD. A premium field: without the subscription it is null with an
    /// error of errorType "unauthorized".
    async fn revenue_usd(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        premium(ctx, "revenueUsd", "Organization")?;
        Ok(self.revenue_usd)
    }
}

fn premium(ctx: &Context<'_>, field: &str, type_name: &str) -> async_graphql::Result<()> {
    let denied = ctx
        .data::<Arc<Shared>>()
        .map(|s| s.lock_knobs().0.contains(field))
        .unwrap_or(false);
    if denied {
        return Err(typed_error(
            format!("Not Authorized to access {field} on type {type_name}"),
            "unauthorized",
        ));
    }
    Ok(())
}

/// Root of both services.
pub struct Query;

/// Root of both services. On the events host only `events` resolves; on the profile host only
/// `personIdSearch` and `organizationIdSearch`.
#[Object]
impl Query {
    /// Events service: events about a person or organisation, newest first, cursor-paged.
    /// `filterType` keeps one eventType (e.g. "Job Change"); `sortType` is "DATE_DESC"
    /// (default) or "DATE_ASC". [INFERRED]: the values of filterType and sortType are guesses.
    async fn events(
        &self,
        ctx: &Context<'_>,
        altrata_id: String,
        filter_type: Option<String>,
        sort_type: Option<String>,
        page_info: Option<PageInfoInput>,
    ) -> async_graphql::Result<Option<EventsResponse>> {
        let shared = guard(ctx, AltrataService::Events, "events", &altrata_id)?;
        let mut all = shared.events(&altrata_id);
        if let Some(kind) = filter_type.as_deref().filter(|k| !k.is_empty()) {
            all.retain(|e| {
                e.get("eventType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            });
        }
        match sort_type.as_deref() {
            None | Some("DATE_DESC") => {}
            Some("DATE_ASC") => all.reverse(),
            Some(other) => {
                return Err(typed_error(
                    format!("Invalid sortType {other:?}: use DATE_DESC or DATE_ASC"),
                    "ValidationError",
                ));
            }
        }
        let page_info = page_info.unwrap_or_default();
        let (start, end) = page_bounds(&page_info, all.len())?;
        let total = all.len();
        let items = all[start..end]
            .iter()
            .map(|v| from_value::<Event>(v.clone()).map(Some))
            .collect::<async_graphql::Result<Vec<_>>>()?;
        Ok(Some(EventsResponse {
            page_info_response: Some(PageInfoResponse {
                total_count: Some(i32::try_from(total).unwrap_or(i32::MAX)),
                page_info: Some(PageInfo {
                    has_next_page: Some(end < total),
                    has_previous_page: Some(start > 0),
                    start_cursor: (end > start).then(|| cursor(start + 1)),
                    end_cursor: (end > start).then(|| cursor(end)),
                }),
            }),
            items: Some(items),
        }))
    }

    /// Profile service: one person by id ("1-per-<n>"); null when there is none.
    async fn person_id_search(
        &self,
        ctx: &Context<'_>,
        altrata_id: String,
    ) -> async_graphql::Result<Option<Person>> {
        let shared = guard(ctx, AltrataService::Profile, "personIdSearch", &altrata_id)?;
        shared.person(&altrata_id).map(from_value).transpose()
    }

    /// Profile service: one organisation by id ("1-org-<n>"); null when there is none.
    async fn organization_id_search(
        &self,
        ctx: &Context<'_>,
        altrata_id: String,
    ) -> async_graphql::Result<Option<Organization>> {
        let shared = guard(ctx, AltrataService::Profile, "organizationIdSearch", &altrata_id)?;
        shared.organization(&altrata_id).map(from_value).transpose()
    }
}

fn cursor(position: usize) -> String {
    format!("altptr{position}")
}

fn parse_cursor(text: &str) -> async_graphql::Result<usize> {
    text.strip_prefix("altptr")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| typed_error(format!("Invalid cursor {text:?}"), "ValidationError"))
}

/// `[start, end)` of the requested page within `total` items.
fn page_bounds(page: &PageInfoInput, total: usize) -> async_graphql::Result<(usize, usize)> {
    let size = |n: Option<i32>| -> async_graphql::Result<usize> {
        match n {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(n) if n >= 1 && (n as usize) <= MAX_PAGE_SIZE => Ok(n as usize),
            Some(n) => Err(typed_error(
                format!("Page size must be between 1 and {MAX_PAGE_SIZE}, was {n}"),
                "ValidationError",
            )),
        }
    };
    if page.last.is_some() || page.before.is_some() {
        let Some(before) = page.before.as_deref() else {
            return Err(typed_error(
                "missing mandatory field 'before' @ events",
                "ValidationError",
            ));
        };
        if page.after.is_some() || page.first.is_some() {
            return Err(typed_error(
                "'last'/'before' cannot be combined with 'first'/'after'",
                "ValidationError",
            ));
        }
        // `before` is a startCursor: altptr<k> names the item at index k-1.
        let end = parse_cursor(before)?.saturating_sub(1).min(total);
        let start = end.saturating_sub(size(page.last)?);
        return Ok((start, end));
    }
    let start = match page.after.as_deref() {
        Some(after) => parse_cursor(after)?.min(total),
        None => 0,
    };
    Ok((start, (start + size(page.first)?).min(total)))
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

const FIRST_NAMES: [&str; 12] = [
    "Amelia",
    "Benjamin",
    "Charlotte",
    "Daniel",
    "Eleanor",
    "Francesco",
    "Grace",
    "Hiroshi",
    "Isabel",
    "Jonas",
    "Katarina",
    "Luis",
];
const LAST_NAMES: [&str; 12] = [
    "Ashford",
    "Bauer",
    "Castellano",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Goldberg",
    "Hartmann",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Lindqvist",
];
const ORG_STEMS: [&str; 10] = [
    "Northwind",
    "Bluefield",
    "Silverline",
    "Harbor",
    "Crestview",
    "Evergreen",
    "Ironbridge",
    "Lakeside",
    "Summit",
    "Westbrook",
];
const ORG_SUFFIXES: [&str; 5] = [
    "Capital",
    "Holdings AG",
    "Partners LLP",
    "Group plc",
    "Ventures Inc.",
];
const INDUSTRIES: [&str; 6] = [
    "Financial Services",
    "Private Equity",
    "Technology",
    "Real Estate",
    "Healthcare",
    "Energy",
];
const TITLES: [&str; 8] = [
    "Chief Executive Officer",
    "Chief Financial Officer",
    "Managing Director",
    "Founder",
    "Board Member",
    "Partner",
    "Chairman",
    "Chief Operating Officer",
];
const COUNTRIES: [(&str, &str); 6] = [
    ("US", "New York"),
    ("GB", "London"),
    ("CH", "Zurich"),
    ("DE", "Munich"),
    ("SG", "Singapore"),
    ("HK", "Hong Kong"),
];
const EVENT_TYPES: [&str; 6] = [
    "Job Change",
    "Funding",
    "Acquisition",
    "Award",
    "Board Appointment",
    "Philanthropy",
];

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn updated_at(shared: &Shared, rng: &mut ChaCha8Rng) -> Option<GqlDateTime> {
    let back = rng.random_range(0..i64::from(shared.history_days) * 86_400);
    Some(GqlDateTime(shared.anchor - TimeDelta::seconds(back)))
}

fn generate_person(shared: &Shared, n: u32) -> Person {
    let mut rng = data::rng_for(shared.seed, &["altrata", "person", &n.to_string()]);
    let first = pick(&mut rng, &FIRST_NAMES);
    let last = pick(&mut rng, &LAST_NAMES);
    let org = (shared.organizations > 0 && rng.random_bool(0.85))
        .then(|| rng.random_range(1..=shared.organizations));
    let (country, city) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let title = pick(&mut rng, &TITLES);
    let net_worth = (rng.random_bool(0.8)).then(|| f64::from(rng.random_range(5u32..5_000)) * 1_000_000.0);
    Person {
        altrata_id: ID(format!("1-per-{n}")),
        full_name: Some(format!("{first} {last}")),
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        title: Some(title.into()),
        primary_organization_id: org.map(|o| format!("1-org-{o}")),
        primary_organization_name: org.map(|o| shared.organization_name(o)),
        country: Some(country.into()),
        city: if rng.random_bool(0.9) {
            Some(city.into())
        } else {
            None
        },
        updated_at: updated_at(shared, &mut rng),
        net_worth_usd: net_worth,
        wx_person_id: rng.random_bool(0.7).then(|| format!("{}", 100_000 + n * 7)),
    }
}

fn generate_organization(shared: &Shared, n: u32) -> Organization {
    let mut rng = data::rng_for(shared.seed, &["altrata", "organization", &n.to_string()]);
    let name = format!("{} {}", pick(&mut rng, &ORG_STEMS), pick(&mut rng, &ORG_SUFFIXES));
    let (country, _) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let slug: String = name.split_whitespace().next().unwrap_or("org").to_lowercase();
    Organization {
        altrata_id: ID(format!("1-org-{n}")),
        name: Some(name),
        industry: Some(pick(&mut rng, &INDUSTRIES).into()),
        country: Some(country.into()),
        employee_count: rng.random_bool(0.8).then(|| rng.random_range(5..80_000)),
        website: if rng.random_bool(0.85) {
            Some(format!("https://www.{slug}.example"))
        } else {
            Some(String::new())
        },
        updated_at: updated_at(shared, &mut rng),
        revenue_usd: rng
            .random_bool(0.7)
            .then(|| f64::from(rng.random_range(1u32..20_000)) * 100_000.0),
    }
}

fn date_info(date: NaiveDate, precision: DatePrecision) -> DateInfo {
    let (date, display) = match precision {
        DatePrecision::Day => (date, date.format("%-d %B %Y").to_string()),
        DatePrecision::Month => {
            let first = date.with_day(1).unwrap_or(date);
            (first, first.format("%B %Y").to_string())
        }
        DatePrecision::Year => {
            let first = NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date);
            (first, first.format("%Y").to_string())
        }
    };
    DateInfo {
        date: Some(GqlDate(date)),
        date_precision: Some(precision),
        display_date: Some(display),
    }
}

/// The events of one subject, in generation order (the caller sorts them newest first).
fn generate_events(shared: &Shared, kind: Kind, n: u32) -> Vec<Event> {
    let (tag, code) = match kind {
        Kind::Person => ("person", n * 10 + 1),
        Kind::Organization => ("organization", n * 10 + 2),
    };
    let mut rng = data::rng_for(shared.seed, &["altrata", "events", tag, &n.to_string()]);
    let count = rng.random_range(0..=shared.events_per_id * 2);
    let today = shared.anchor.date_naive();
    let subject_name = match kind {
        Kind::Person => shared.person_name(n),
        Kind::Organization => shared.organization_name(n),
    };
    (0..count)
        .map(|k| {
            let date = today - TimeDelta::days(rng.random_range(0..i64::from(shared.history_days)));
            let precision = match rng.random_range(0..20) {
                0 => DatePrecision::Year,
                1..=3 => DatePrecision::Month,
                _ => DatePrecision::Day,
            };
            let event_type = pick(&mut rng, &EVENT_TYPES);
            let published = (date + TimeDelta::days(rng.random_range(0..5))).min(today);
            let other_org = (shared.organizations > 0).then(|| rng.random_range(1..=shared.organizations));
            let other_person = (shared.persons > 0).then(|| rng.random_range(1..=shared.persons));
            let (mut persons, mut orgs) = (Vec::new(), Vec::new());
            match kind {
                Kind::Person => persons.push(Some(EntityMention {
                    altrata_id: Some(format!("1-per-{n}")),
                    name: Some(subject_name.clone()),
                })),
                Kind::Organization => orgs.push(Some(EntityMention {
                    altrata_id: Some(format!("1-org-{n}")),
                    name: Some(subject_name.clone()),
                })),
            }
            if let Some(o) = other_org.filter(|o| kind == Kind::Person || *o != n) {
                orgs.push(Some(EntityMention {
                    altrata_id: Some(format!("1-org-{o}")),
                    name: Some(shared.organization_name(o)),
                }));
            }
            if let Some(p) = other_person.filter(|p| kind == Kind::Organization || *p != n)
                && rng.random_bool(0.5)
            {
                persons.push(Some(EntityMention {
                    altrata_id: Some(format!("1-per-{p}")),
                    name: Some(shared.person_name(p)),
                }));
            }
            let org_name = orgs
                .last()
                .and_then(|m| m.as_ref())
                .and_then(|m| m.name.clone())
                .unwrap_or_default();
            let job_change = event_type == "Job Change";
            let start_role = job_change.then(|| pick(&mut rng, &TITLES).to_string());
            let end_role = if job_change && rng.random_bool(0.8) {
                Some(pick(&mut rng, &TITLES).to_string())
            } else {
                None
            };
            let text = match event_type {
                "Job Change" => format!(
                    "{subject_name} was appointed {} at {org_name}.",
                    start_role.as_deref().unwrap_or("Director")
                ),
                "Funding" => format!(
                    "{subject_name} took part in a ${}m funding round of {org_name}.",
                    rng.random_range(2..400)
                ),
                "Acquisition" => {
                    format!("{org_name} was acquired; {subject_name} is named in the announcement.")
                }
                "Award" => format!("{subject_name} received an industry award."),
                "Board Appointment" => format!("{subject_name} joined the board of {org_name}."),
                _ => format!(
                    "{subject_name} pledged a donation of ${}m.",
                    rng.random_range(1..50)
                ),
            };
            Event {
                event_id: ID(format!("1-evt-{code}{k:03}")),
                event_date_info: Some(date_info(date, precision)),
                event_type: Some(event_type.into()),
                event_text: Some(text),
                person_mentions: Some(persons),
                organization_mentions: Some(orgs),
                event_published_date: Some(GqlDate(published)),
                announcement_date_info: rng
                    .random_bool(0.6)
                    .then(|| date_info(published, DatePrecision::Day)),
                start_role_title: start_role,
                end_role_title: end_role,
            }
        })
        .collect()
}
