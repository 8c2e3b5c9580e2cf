//! Roubler stand-in: an Ory-Hydra-like authorization server (authorization code, optional PKCE,
//! single-use rotating refresh tokens with chain revocation on reuse) and the GraphQL API
//! (`viewer`, `locations`, `employees`, `locationSales`, `timesheets`, `shifts`, leave, cost
//! centres, pay rules) with Roubler's header scoping (`X-Company-ID`, `X-Location-ID`) and its
//! documented rate limit (100 calls per 60 s, reported in headers, monitoring mode by default).
//!
//! # Layout
//!
//! - [`oauth`]: `/oauth2/auth` and `/oauth2/token` (rules in [`crate::authcode`]).
//! - [`schema`]: GraphQL types and the `Query` root; [`sdl`] prints it.
//! - [`model`]: the generated world (companies, location tree in several time zones, employees,
//!   daily sales per local day, timesheets, shifts).
//! - This file: options, the handle tests steer, and the `/graphql` route (auth, scoping
//!   headers, rate limit, faults).
//!
//! Token lifetimes, code expiry and rate-limit windows run on tokio's clock, so a test that
//! pauses and advances time (`tokio::time::pause`) expires tokens without waiting.

pub mod model;
pub mod oauth;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::authcode::{AuthCodeConfig, AuthCounts, AuthServer, RefreshRotation, TokenGrant};
use crate::data::Edits;
use crate::faults::{self, Faults};
pub use crate::ratelimit::RateLimitMode;
use crate::ratelimit::{self, CallRecord, RateLimitLayer, RateLimiter};
use crate::{SandboxOptions, ServerGuard};

/// Roubler-specific options. `Default` follows Roubler's documents (1 h access tokens, 30 day
/// refresh tokens, 5 min codes, 100 calls per 60 s in monitoring mode).
#[derive(Debug, Clone)]
pub struct RoublerOptions {
    pub client_id: String,
    pub client_secret: String,
    /// Exact redirect URIs registered for the client (the documented default first).
    pub redirect_uris: Vec<String>,
    /// Also accept any `http://` loopback redirect URI (default true).
    pub allow_loopback_redirects: bool,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub code_lifetime: Duration,
    /// Hydra revokes the access token issued with a refresh token when that refresh token is
    /// redeemed (default true).
    pub revoke_access_on_refresh: bool,
    /// Calls allowed per window (default 100).
    pub rate_limit: u32,
    /// Length of a rate-limit window (default 60 s).
    pub rate_window: Duration,
    /// Monitoring (default, Roubler's current behaviour) or enforcing.
    pub rate_mode: RateLimitMode,
    /// How the window runs (default: fixed, opening with the first call).
    pub rate_window_kind: crate::ratelimit::WindowKind,
    /// How the reset is written (default: delay seconds).
    pub rate_reset_format: crate::ratelimit::ResetFormat,
    /// Which header names carry the limit (default: `X-RateLimit-*`, as Roubler documents).
    pub rate_header_family: crate::ratelimit::HeaderFamily,
    /// Number of companies the API user can access (default 1).
    pub companies: u32,
    /// Locations per company (default 3), a tree under the first one.
    pub locations_per_company: u32,
    /// IANA zones assigned to locations in turn.
    pub time_zones: Vec<String>,
    /// Employees whose home is each location (default 8; every eighth one terminated).
    pub employees_per_location: u32,
    /// Fields removed from the schema (see [`crate::drift`]): introspection leaves them out and
    /// queries selecting them are refused. Empty by default.
    pub removed_fields: Vec<crate::drift::RemovedField>,
    /// Scalar fields whose type changes, values included (see [`crate::drift`]). Empty by
    /// default.
    pub retyped_fields: Vec<crate::drift::RetypedField>,
}

impl Default for RoublerOptions {
    fn default() -> Self {
        RoublerOptions {
            client_id: "roubler-sandbox-client".into(),
            client_secret: "roubler-sandbox-secret".into(),
            redirect_uris: vec!["http://localhost/callback".into()],
            allow_loopback_redirects: true,
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(30 * 24 * 3600),
            code_lifetime: Duration::from_secs(300),
            revoke_access_on_refresh: true,
            rate_limit: 100,
            rate_window: Duration::from_secs(60),
            rate_mode: RateLimitMode::Monitoring,
            rate_window_kind: Default::default(),
            rate_reset_format: Default::default(),
            rate_header_family: Default::default(),
            companies: 1,
            locations_per_company: 3,
            time_zones: vec![
                "Australia/Sydney".into(),
                "Europe/Berlin".into(),
                "Australia/Brisbane".into(),
            ],
            employees_per_location: 8,
            removed_fields: Vec::new(),
            retyped_fields: Vec::new(),
        }
    }
}

/// What tests and the `sandbox` binary hold on to. Cheap to clone; every clone steers the same
/// running server.
#[derive(Clone)]
pub struct RoublerHandle {
    /// `http://127.0.0.1:<port>`, the "domain" of both the OIDC server and the API.
    pub base_url: String,
    /// `<base>/oauth2/auth`
    pub auth_url: String,
    /// `<base>/oauth2/token`
    pub token_url: String,
    /// `<base>/graphql`
    pub graphql_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The registered redirect URI (any loopback http URI works too unless disabled).
    pub redirect_uri: String,
    pub faults: Faults,
    /// Any part of any answer (token endpoint included) replaced on demand.
    pub hostile: crate::hostile::Hostile,
    pub edits: Edits,
    /// The authorization server (counts, knobs, direct grants).
    pub auth: AuthServer,
    /// The `/graphql` rate limiter and call log.
    pub rate: RateLimiter,
    token_endpoint_down: Arc<AtomicBool>,
    hold_granted_answers: tokio::sync::watch::Sender<bool>,
    world: Arc<model::World>,
    operations: Operations,
}

/// Authorised `/graphql` requests per operation name (`Viewer`, `Locations`, …; `(anonymous)`
/// without one), so tests can tell scope discovery (`Viewer`) from data calls.
type Operations = Arc<Mutex<BTreeMap<String, u64>>>;

/// The SDL the sandbox serves; `schemas/roubler.graphql` must equal it byte for byte.
pub fn sdl() -> String {
    schema::build(None, &[], &[]).sdl()
}

/// Starts the Roubler stand-in on an ephemeral loopback port.
pub async fn start(options: &SandboxOptions) -> std::io::Result<(RoublerHandle, ServerGuard)> {
    let o = &options.roubler;
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let time_zones = o
        .time_zones
        .iter()
        .map(|name| {
            name.parse::<chrono_tz::Tz>()
                .map_err(|_| invalid(format!("roubler.time_zones: unknown IANA time zone {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if time_zones.is_empty() {
        return Err(invalid("roubler.time_zones must name at least one zone".into()));
    }
    let world = Arc::new(model::World::new(&model::WorldSpec {
        seed: options.seed,
        anchor: options.anchor,
        history_days: options.history_days,
        records_per_day: options.records_per_day,
        companies: o.companies,
        locations_per_company: o.locations_per_company,
        time_zones,
        employees_per_location: o.employees_per_location,
    }));
    let auth = AuthServer::new(AuthCodeConfig {
        client_id: o.client_id.clone(),
        client_secret: o.client_secret.clone(),
        code_lifetime: o.code_lifetime,
        access_token_lifetime: o.access_token_lifetime,
        refresh_token_lifetime: o.refresh_token_lifetime,
        rotation: RefreshRotation::SingleUse {
            revoke_access_on_refresh: o.revoke_access_on_refresh,
        },
        revoke_chain_on_code_reuse: true,
        refresh_needs_offline_access: true,
        prefixes: ("ory_ac_", "ory_at_", "ory_rt_"),
    });
    let faults = Faults::new(options.seed ^ 0x726f_75626c6572);
    let rate = RateLimiter::new(o.rate_limit, o.rate_window, o.rate_mode);
    rate.set_window_kind(o.rate_window_kind);
    rate.set_reset_format(o.rate_reset_format);
    rate.set_header_family(o.rate_header_family);
    let token_endpoint_down = Arc::new(AtomicBool::new(false));
    let hold_granted_answers = tokio::sync::watch::Sender::new(false);
    let oauth_state = oauth::OAuthState {
        auth: auth.clone(),
        redirect_uris: Arc::new(o.redirect_uris.clone()),
        allow_loopback_redirects: o.allow_loopback_redirects,
        token_endpoint_down: token_endpoint_down.clone(),
        hold_granted_answers: hold_granted_answers.clone(),
    };
    let operations = Operations::default();
    let api = ApiState {
        auth: auth.clone(),
        schema: schema::build(Some(world.clone()), &o.removed_fields, &o.retyped_fields),
        operations: operations.clone(),
    };
    let limit_layer = RateLimitLayer {
        limiter: rate.clone(),
        send_headers: true,
        refusal: json!({"errors": [{"name": "RateLimit", "message": "Rate limit exceeded. Please retry after the time given in the Retry-After header."}]}),
    };
    let graphql_route = post(graphql)
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limit_layer,
            ratelimit::enforce,
        ));
    let router = Router::new()
        .route("/oauth2/auth", get(oauth::authorize))
        .route("/oauth2/token", post(oauth::token))
        .with_state(oauth_state)
        .route("/graphql", graphql_route);
    let hostile = crate::hostile::Hostile::default();
    let guard = crate::serve_vendor(router, &hostile).await?;
    let base_url = format!("http://{}", guard.addr);
    let edits = world.edits.clone();
    let handle = RoublerHandle {
        auth_url: format!("{base_url}/oauth2/auth"),
        token_url: format!("{base_url}/oauth2/token"),
        graphql_url: format!("{base_url}/graphql"),
        base_url,
        client_id: o.client_id.clone(),
        client_secret: o.client_secret.clone(),
        redirect_uri: o
            .redirect_uris
            .first()
            .cloned()
            .unwrap_or_else(|| "http://localhost/callback".into()),
        faults,
        hostile,
        edits,
        auth,
        rate,
        token_endpoint_down,
        hold_granted_answers,
        world,
        operations,
    };
    Ok((handle, guard))
}

#[derive(Clone)]
struct ApiState {
    auth: AuthServer,
    schema: schema::RoublerSchema,
    operations: Operations,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `POST /graphql`: bearer check (Roubler's 401 shape), then the query with the scoping headers
/// as context.
async fn graphql(State(api): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = crate::gql::bearer(&headers).is_some_and(|token| api.auth.access_token_is_valid(&token));
    if !authorized {
        return crate::gql::json(
            StatusCode::UNAUTHORIZED,
            json!({"errors": [{"name": "Authentication", "message": "Access token is missing or invalid."}]}),
        );
    }
    let request = match crate::gql::parse_request(&body) {
        Ok(request) => request,
        Err(body) => return crate::gql::json(StatusCode::BAD_REQUEST, body),
    };
    let operation = request
        .operation_name
        .clone()
        .unwrap_or_else(|| "(anonymous)".into());
    *api.operations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(operation)
        .or_default() += 1;
    let scope = schema::Scope {
        company_id: header(&headers, "x-company-id"),
        location_id: header(&headers, "x-location-id"),
    };
    let response = api.schema.execute(request.data(scope)).await;
    let mut body = serde_json::to_value(&response).unwrap_or_else(
        |e| json!({"errors": [{"message": format!("Internal error serializing the response: {e}")}]}),
    );
    hoist_error_names(&mut body);
    crate::gql::json(StatusCode::OK, body)
}

/// Moves `extensions.name` of every error to a top-level `name`, Roubler's error shape.
fn hoist_error_names(body: &mut Value) {
    let Some(errors) = body.get_mut("errors").and_then(Value::as_array_mut) else {
        return;
    };
    for error in errors {
        let Some(object) = error.as_object_mut() else {
            continue;
        };
        let name = object
            .get_mut("extensions")
            .and_then(Value::as_object_mut)
            .and_then(|ext| ext.remove("name"));
        if object
            .get("extensions")
            .and_then(Value::as_object)
            .is_some_and(|e| e.is_empty())
        {
            object.remove("extensions");
        }
        object.insert(
            "name".into(),
            name.unwrap_or_else(|| Value::String("GraphQLError".into())),
        );
    }
}

fn to_json<T: serde::Serialize>(records: Vec<T>) -> Vec<Value> {
    records
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}

impl RoublerHandle {
    /// Counts of codes, grants, refreshes, reuse detections and revoked chains.
    pub fn counts(&self) -> AuthCounts {
        self.auth.counts()
    }

    /// Makes the token endpoint answer 503 (`true`) or work again (`false`).
    pub fn set_token_endpoint_down(&self, down: bool) {
        self.token_endpoint_down.store(down, Ordering::SeqCst);
    }

    /// Holds back (`true`) or releases (`false`) the answers of granted token requests: with it
    /// on, a refresh is granted (the old refresh token used up, [`AuthCounts::refreshes`]
    /// counted) but its answer waits — the moment a crashing client loses a rotated token.
    pub fn hold_granted_answers(&self, hold: bool) {
        self.hold_granted_answers.send_replace(hold);
    }

    /// Expires every access token issued so far (refresh tokens keep working).
    pub fn expire_access_tokens(&self) {
        self.auth.expire_access_tokens();
    }

    /// Revokes every authorization, as when Roubler revokes the client's consent.
    pub fn revoke_all(&self) {
        self.auth.revoke_all();
    }

    /// A fresh authorization (scope `offline_access`) without the browser round trip, e.g. to
    /// seed a client's refresh-token store.
    pub fn grant_tokens(&self) -> TokenGrant {
        self.auth.grant_directly("offline_access")
    }

    pub fn set_mode(&self, mode: RateLimitMode) {
        self.rate.set_mode(mode);
    }

    pub fn set_limit(&self, limit: u32, window: Duration) {
        self.rate.set_limit(limit, window);
    }

    /// How the rate-limit headers write the reset (seconds, epoch, HTTP date) and which header
    /// names they use, from the next call on.
    pub fn set_rate_headers(
        &self,
        format: crate::ratelimit::ResetFormat,
        family: crate::ratelimit::HeaderFamily,
    ) {
        self.rate.set_reset_format(format);
        self.rate.set_header_family(family);
    }

    /// How the rate-limit window runs from the next call on (a fresh window starts).
    pub fn set_rate_window_kind(&self, kind: crate::ratelimit::WindowKind) {
        self.rate.set_window_kind(kind);
    }

    /// The most `/graphql` calls in any sliding window of this length.
    pub fn max_calls_in_any_window(&self, window: Duration) -> usize {
        self.rate.max_calls_in_any_window(window)
    }

    /// How many `/graphql` calls were answered 429.
    pub fn rate_limited_responses(&self) -> u64 {
        self.rate.rate_limited_responses()
    }

    /// Every `/graphql` call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.rate.calls()
    }

    /// Authorised `/graphql` requests so far whose `operationName` is `name` (`"Viewer"`: scope
    /// discovery rounds; `"Locations"`: discovery's and the `locations` dataset's calls).
    pub fn operation_calls(&self, name: &str) -> u64 {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// `[{id, name}]` of every company the API user can access.
    pub fn companies(&self) -> Vec<Value> {
        to_json(self.world.company_records())
    }

    /// What `locations` serves for this company.
    pub fn locations(&self, company_id: &str) -> Vec<Value> {
        to_json(self.world.locations(company_id))
    }

    /// What `employees` (no filters) serves for this company.
    pub fn employees(&self, company_id: &str) -> Vec<Value> {
        to_json(self.world.employees(company_id))
    }

    /// What `locationSales(startTime, endTime)` serves with `X-Location-ID: location_id`.
    pub fn location_sales(&self, location_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        to_json(self.world.location_sales(location_id, start, end))
    }

    /// What `timesheets(startTime, endTime, locationId)` serves.
    pub fn timesheets(&self, location_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        to_json(self.world.timesheets(location_id, start, end))
    }

    /// What `shifts(startTime, endTime, locationId)` (no `published` filter) serves.
    pub fn shifts(&self, location_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        to_json(self.world.shifts(location_id, start, end))
    }

    /// URLs and credentials, for the `sandbox` binary.
    pub fn describe(&self) -> Value {
        let (limit, window) = self.rate.limit();
        json!({
            "base_url": self.base_url,
            "auth_url": self.auth_url,
            "token_url": self.token_url,
            "graphql_url": self.graphql_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uri": self.redirect_uri,
            "scope": "offline_access",
            "rate_limit": {"limit": limit, "window_secs": window.as_secs_f64(), "mode": format!("{:?}", self.rate.mode())},
            "companies": self.world.companies.iter().map(|c| json!({
                "id": c.id,
                "name": c.name,
                "locations": c.locations.iter().map(|l| json!({"id": l.id, "name": l.name, "timeZone": l.tz.name()})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
