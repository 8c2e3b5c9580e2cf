//! Retently stand-in: the REST v2 API (`/api/v2/customers`, `feedback`, `companies`,
//! `campaigns`, `nps/score`) behind either OAuth (authorization code + refresh token, tokens sent
//! as `Authorization: Bearer`) or a static API key (`Authorization: api_key=<key>`), with the
//! documented 150 requests per minute.
//!
//! What is documented is followed literally: the envelope `{"message":"Success.","code":200,
//! "data":{<collection>, page, pages, limit, sort, total}}`, pages from 1, `limit` up to 1000,
//! `startDate`/`endDate` as ISO or UNIX seconds, the 401 body. What is not is chosen leniently
//! and configurable:
//! - Refresh rotation ([`RetentlyOptions::rotate_refresh_tokens`]): by default every refresh
//!   returns a new refresh token and the redeemed one stays valid for exactly one more
//!   redemption (a grace for a client that crashed before saving the new one); nothing is ever
//!   revoked for reuse. With rotation off, the same refresh token comes back every time (as in
//!   the help page's example, where the refresh response repeats the token sent).
//! - Date filters compare `createdDate` with both bounds inclusive
//!   ([`RetentlyOptions::end_date_inclusive`]).
//! - A 429 says `{"message":"Too Many Requests","code":429,"data":null}` with `Retry-After`; no
//!   rate-limit headers otherwise (none are documented).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::authcode::{AuthCodeConfig, AuthCounts, AuthServer, OAuthError, RefreshRotation, TokenGrant};
use crate::data::{Edits, history_days, rng_for};
use crate::faults::{self, Faults};
use crate::ratelimit::{self, CallRecord, RateLimitLayer, RateLimitMode, RateLimiter};
use crate::{SandboxOptions, ServerGuard};

/// Retently-specific options. `Default` follows the documents (6 h tokens, 150 requests/min).
#[derive(Debug, Clone)]
pub struct RetentlyOptions {
    pub client_id: String,
    pub client_secret: String,
    /// The static key accepted as `Authorization: api_key=<key>` (or `?api_key=`).
    pub api_key: String,
    /// `expires_in` of access tokens (default 21600 s).
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// New refresh token on every refresh, old one good for one more use (default true);
    /// false: the same refresh token forever.
    pub rotate_refresh_tokens: bool,
    /// Requests allowed per window (default 150).
    pub rate_limit: u32,
    /// Length of a rate-limit window (default 60 s).
    pub rate_window: Duration,
    /// Both `startDate` and `endDate` match a record created exactly at them (default true);
    /// false makes the window half-open `[startDate, endDate)`.
    pub end_date_inclusive: bool,
    /// Customers (subscribers) generated over the history (default 120).
    pub customers: u32,
    /// Companies the customers belong to (default 12).
    pub companies: u32,
    /// Campaigns feedback is spread over (default 4).
    pub campaigns: u32,
}

impl Default for RetentlyOptions {
    fn default() -> Self {
        RetentlyOptions {
            client_id: "5b6a3f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            client_secret: "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            api_key: "rtly-sandbox-api-key-0123456789abcdef".into(),
            access_token_lifetime: Duration::from_secs(21600),
            refresh_token_lifetime: Duration::from_secs(365 * 24 * 3600),
            rotate_refresh_tokens: true,
            rate_limit: 150,
            rate_window: Duration::from_secs(60),
            end_date_inclusive: true,
            customers: 120,
            companies: 12,
            campaigns: 4,
        }
    }
}

/// What tests and the `sandbox` binary hold on to; clones steer the same server.
#[derive(Clone)]
pub struct RetentlyHandle {
    /// `http://127.0.0.1:<port>` (Retently's `https://app.retently.com`).
    pub base_url: String,
    /// `<base>/api/oauth/authorize`
    pub authorize_url: String,
    /// `<base>/api/oauth/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub api_key: String,
    pub faults: Faults,
    /// Any part of any answer (token endpoint included) replaced on demand.
    pub hostile: crate::hostile::Hostile,
    pub edits: Edits,
    /// The authorization server (counts, knobs, direct grants).
    pub auth: AuthServer,
    /// The data-route rate limiter and call log.
    pub rate: RateLimiter,
    token_endpoint_down: Arc<AtomicBool>,
    data: Arc<Dataset>,
}

/// The generated records, built once at start; [`Edits`] apply on every read.
struct Dataset {
    customers: Vec<Value>,
    feedback: Vec<Value>,
    companies: Vec<Value>,
    campaigns: Vec<Value>,
    edits: Edits,
    end_date_inclusive: bool,
}

#[derive(Clone)]
struct ApiState {
    auth: AuthServer,
    api_key: Arc<String>,
    data: Arc<Dataset>,
}

#[derive(Clone)]
struct OAuthState {
    auth: AuthServer,
    token_endpoint_down: Arc<AtomicBool>,
}

/// Starts the Retently stand-in on an ephemeral loopback port.
pub async fn start(options: &SandboxOptions) -> std::io::Result<(RetentlyHandle, ServerGuard)> {
    let o = &options.retently;
    let data = Arc::new(Dataset::generate(options));
    let auth = AuthServer::new(AuthCodeConfig {
        client_id: o.client_id.clone(),
        client_secret: o.client_secret.clone(),
        code_lifetime: Duration::from_secs(600),
        access_token_lifetime: o.access_token_lifetime,
        refresh_token_lifetime: o.refresh_token_lifetime,
        rotation: if o.rotate_refresh_tokens {
            RefreshRotation::RotateWithGrace
        } else {
            RefreshRotation::Static
        },
        revoke_chain_on_code_reuse: false,
        refresh_needs_offline_access: false,
        prefixes: ("", "", ""),
    });
    let faults = Faults::new(options.seed ^ 0x7265_7465_6e74_6c79);
    let rate = RateLimiter::new(o.rate_limit, o.rate_window, RateLimitMode::Enforcing);
    let token_endpoint_down = Arc::new(AtomicBool::new(false));
    let api = ApiState {
        auth: auth.clone(),
        api_key: Arc::new(o.api_key.clone()),
        data: data.clone(),
    };
    let limit_layer = RateLimitLayer {
        limiter: rate.clone(),
        send_headers: false,
        refusal: json!({"message": "Too Many Requests", "code": 429, "data": null}),
    };
    let api_routes = Router::new()
        .route("/api/v2/customers", get(customers))
        .route("/api/v2/nps/customers", get(customers))
        .route("/api/v2/feedback", get(feedback))
        .route("/api/v2/companies", get(companies))
        .route("/api/v2/campaigns", get(campaigns))
        .route("/api/v2/nps/score", get(nps_score))
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limit_layer,
            ratelimit::enforce,
        ));
    let oauth_routes = Router::new()
        .route("/api/oauth/authorize", get(authorize))
        .route("/api/oauth/token", post(token))
        .with_state(OAuthState {
            auth: auth.clone(),
            token_endpoint_down: token_endpoint_down.clone(),
        });
    let hostile = crate::hostile::Hostile::default();
    let guard = crate::serve_vendor(oauth_routes.merge(api_routes), &hostile).await?;
    let base_url = format!("http://{}", guard.addr);
    let handle = RetentlyHandle {
        authorize_url: format!("{base_url}/api/oauth/authorize"),
        token_url: format!("{base_url}/api/oauth/token"),
        base_url,
        client_id: o.client_id.clone(),
        client_secret: o.client_secret.clone(),
        api_key: o.api_key.clone(),
        faults,
        hostile,
        edits: data.edits.clone(),
        auth,
        rate,
        token_endpoint_down,
        data,
    };
    Ok((handle, guard))
}

// ----------------------------------------------------------------------------------------------
// Generation

const FIRST_NAMES: &[&str] = &[
    "Emily", "Daniel", "Sofia", "Marcus", "Hannah", "Tom", "Priya", "Lucas", "Julia", "Omar", "Ella", "Ben",
    "Nora", "Ivan", "Zoe", "Adam",
];
const LAST_NAMES: &[&str] = &[
    "Johnson", "Garcia", "Patel", "Kowalski", "Rossi", "Dubois", "Kim", "Andersen", "Silva", "Murphy",
    "Novak", "Cohen", "",
];
const COMPANY_NAMES: &[(&str, &str, &str)] = &[
    ("Northwind Traders", "northwind.example", "Retail"),
    ("Globex", "globex.example", "Manufacturing"),
    ("Initech", "initech.example", "Software"),
    ("Umbrella Health", "umbrellahealth.example", "Healthcare"),
    ("Stark Logistics", "starklogistics.example", "Transportation"),
    ("Wayne Financial", "waynefinancial.example", "Financial Services"),
    ("Hooli", "hooli.example", "Internet"),
    ("Vandelay Imports", "vandelay.example", "Wholesale"),
];
const TAGS: &[&str] = &[
    "vip",
    "trial",
    "enterprise",
    "smb",
    "churn-risk",
    "beta",
    "eu",
    "us",
];
const COMMENTS: &[&str] = &[
    "Great support, quick answers.",
    "The new dashboard is confusing.",
    "Love it!",
    "Too expensive for what we use.",
    "Onboarding took longer than expected.",
    "",
    "Works well, a few bugs in the mobile app.",
    "Would recommend to colleagues.",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("United States", "California", "San Francisco"),
    ("United Kingdom", "England", "London"),
    ("Germany", "Berlin", "Berlin"),
    ("Australia", "New South Wales", "Sydney"),
    ("Canada", "Ontario", "Toronto"),
];

/// Retently's timestamp format, e.g. `2019-07-28T04:33:13.217Z`.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A MongoDB-ObjectId-like id (Retently's ids look like these): creation second + 16 random hex.
fn object_id(at: DateTime<Utc>, rng: &mut impl Rng) -> String {
    format!("{:08x}{:016x}", at.timestamp().max(0) as u32, rng.random::<u64>())
}

fn tags(rng: &mut impl Rng) -> Vec<&'static str> {
    let n = rng.random_range(0..3);
    let mut picked: Vec<&str> = TAGS.choose_multiple(rng, n).copied().collect();
    picked.sort_unstable();
    picked
}

fn created_desc(a: &Value, b: &Value) -> std::cmp::Ordering {
    let key = |v: &Value| {
        (
            v["createdDate"].as_str().unwrap_or("").to_owned(),
            v["id"].as_str().unwrap_or("").to_owned(),
        )
    };
    key(b).cmp(&key(a))
}

impl Dataset {
    fn generate(options: &SandboxOptions) -> Dataset {
        let o = &options.retently;
        let seed = options.seed;
        let days: Vec<NaiveDate> = history_days(options.anchor, options.history_days).collect();
        let first_day = days
            .first()
            .copied()
            .unwrap_or_else(|| options.anchor.date_naive());
        let span_ms = (options.anchor - first_day.and_time(chrono::NaiveTime::MIN).and_utc())
            .num_milliseconds()
            .max(1);
        let start = first_day.and_time(chrono::NaiveTime::MIN).and_utc();

        let mut companies: Vec<Value> = (0..o.companies)
            .map(|i| {
                let mut rng = rng_for(seed, &["retently", "company", &i.to_string()]);
                let (name, domain, industry) = COMPANY_NAMES[i as usize % COMPANY_NAMES.len()];
                let suffix = i as usize / COMPANY_NAMES.len();
                let (name, domain) = if suffix == 0 {
                    (name.to_owned(), domain.to_owned())
                } else {
                    (format!("{name} {suffix}"), format!("{suffix}.{domain}"))
                };
                let created = start - chrono::Duration::days(rng.random_range(30..900));
                let metric = |rng: &mut rand_chacha::ChaCha8Rng, lo: i32, hi: i32| {
                    if rng.random_bool(0.2) {
                        Value::Null
                    } else {
                        json!(rng.random_range(lo..=hi))
                    }
                };
                json!({
                    "id": object_id(created, &mut rng),
                    "createdDate": stamp(created),
                    "domain": domain,
                    "companyName": name,
                    "industryName": if rng.random_bool(0.15) { Value::Null } else { json!(industry) },
                    "tags": tags(&mut rng),
                    "cxMetrics": {
                        "NPS": metric(&mut rng, -40, 90),
                        "CSAT": metric(&mut rng, 40, 100),
                        "CES": metric(&mut rng, 1, 7),
                        "STAR": metric(&mut rng, 1, 5),
                    },
                    "contactsCount": 0,
                })
            })
            .collect();

        let customers: Vec<Value> = (0..o.customers)
            .map(|i| {
                let mut rng = rng_for(seed, &["retently", "customer", &i.to_string()]);
                let offset = span_ms * i64::from(i) / i64::from(o.customers.max(1)) + rng.random_range(0..3_600_000);
                let created = start + chrono::Duration::milliseconds(offset.min(span_ms - 1).max(0));
                let first = *FIRST_NAMES.choose(&mut rng).unwrap_or(&"Alex");
                let last = *LAST_NAMES.choose(&mut rng).unwrap_or(&"");
                let company = (!companies.is_empty() && rng.random_bool(0.85))
                    .then(|| rng.random_range(0..companies.len()));
                let domain = company
                    .and_then(|c| companies[c]["domain"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "mail.example".into());
                let local = if last.is_empty() { first.to_lowercase() } else { format!("{}.{}", first.to_lowercase(), last.to_lowercase()) };
                if let Some(c) = company
                    && let Some(count) = companies[c]["contactsCount"].as_u64()
                {
                    companies[c]["contactsCount"] = json!(count + 1);
                }
                json!({
                    "id": object_id(created, &mut rng),
                    "email": format!("{local}{i}@{domain}"),
                    "firstName": first,
                    "lastName": last,
                    "companyName": company.map_or(Value::Null, |c| companies[c]["companyName"].clone()),
                    "companyId": company.map_or(Value::Null, |c| companies[c]["id"].clone()),
                    "tags": tags(&mut rng),
                    "createdDate": stamp(created),
                    "properties": [
                        {"label": "Plan", "name": "plan", "type": "string", "value": *["Basic", "Pro", "Enterprise"].choose(&mut rng).unwrap_or(&"Basic")},
                        {"label": "Seats", "name": "seats", "type": "number", "value": rng.random_range(1..200).to_string()},
                    ],
                })
            })
            .collect();

        let campaigns: Vec<Value> = (0..o.campaigns)
            .map(|i| {
                let mut rng = rng_for(seed, &["retently", "campaign", &i.to_string()]);
                let created = start - chrono::Duration::days(rng.random_range(1..400));
                let (name, kind, channel) = [
                    ("Quarterly NPS", "recurring", "email"),
                    ("Post-onboarding NPS", "transactional", "email"),
                    ("In-app NPS", "transactional", "in-app"),
                    ("Support follow-up", "transactional", "link"),
                ][i as usize % 4];
                json!({
                    "id": object_id(created, &mut rng),
                    "name": if i < 4 { name.to_owned() } else { format!("{name} {i}") },
                    "isActive": i != 3,
                    "templateId": object_id(created, &mut rng),
                    "metric": "NPS",
                    "type": kind,
                    "channel": channel,
                })
            })
            .collect();

        let mut feedback = Vec::new();
        for day in &days {
            for n in 0..options.records_per_day {
                let mut rng = rng_for(seed, &["retently", "feedback", &day.to_string(), &n.to_string()]);
                let created = day.and_time(chrono::NaiveTime::MIN).and_utc()
                    + chrono::Duration::milliseconds(rng.random_range(0..86_400_000));
                if created > options.anchor || customers.is_empty() {
                    continue;
                }
                let customer = &customers[rng.random_range(0..customers.len())];
                let campaign = campaigns.choose(&mut rng).cloned().unwrap_or(Value::Null);
                let score: u8 = *[10, 10, 10, 9, 9, 9, 8, 8, 7, 6, 5, 3, 0]
                    .choose(&mut rng)
                    .unwrap_or(&9);
                let category = match score {
                    9..=10 => "promoter",
                    7..=8 => "passive",
                    _ => "detractor",
                };
                let (country, state, city) = *CITIES.choose(&mut rng).unwrap_or(&CITIES[0]);
                let resolved = rng.random_bool(0.4);
                feedback.push(json!({
                    "id": object_id(created, &mut rng),
                    "customerId": customer["id"],
                    "email": customer["email"],
                    "firstName": customer["firstName"],
                    "lastName": customer["lastName"],
                    "companyName": customer["companyName"],
                    "jobTitle": if rng.random_bool(0.3) { Value::Null } else { json!(*["CTO", "Office Manager", "Head of Ops", "Founder", "Analyst"].choose(&mut rng).unwrap_or(&"Analyst")) },
                    "country": country,
                    "state": state,
                    "city": city,
                    "tags": customer["tags"],
                    "customProps": [],
                    "campaignId": campaign["id"],
                    "campaignName": campaign["name"],
                    "createdDate": stamp(created),
                    "score": score,
                    "comment": *COMMENTS.choose(&mut rng).unwrap_or(&""),
                    "checkbox": false,
                    "additionalQuestions": [],
                    "feedbackTags": if score <= 6 { json!(["pricing"]) } else { json!([]) },
                    "notes": [],
                    "status": if resolved { "resolved" } else { "open" },
                    "assigned": if rng.random_bool(0.3) { json!("support@retently-sandbox.example") } else { Value::Null },
                    "ratingCategory": category,
                    "resolved": resolved,
                    "channel": campaign["channel"],
                    "metricsType": "NPS",
                    "isBogus": false,
                }));
            }
        }
        let mut customers = customers;
        customers.sort_by(created_desc);
        feedback.sort_by(created_desc);
        companies.sort_by(created_desc);
        Dataset {
            customers,
            feedback,
            companies,
            campaigns,
            edits: Edits::default(),
            end_date_inclusive: o.end_date_inclusive,
        }
    }

    /// `records` with edits applied (deleted ones dropped, changed fields overridden).
    fn edited(&self, records: &[Value]) -> Vec<Value> {
        records
            .iter()
            .filter_map(|record| {
                let id = record["id"].as_str().unwrap_or_default();
                if self.edits.is_deleted(id) {
                    return None;
                }
                let mut record = record.clone();
                if let (Some(changes), Some(fields)) = (self.edits.changes_for(id), record.as_object_mut()) {
                    fields.extend(changes);
                }
                Some(record)
            })
            .collect()
    }

    /// Records created in the window (bounds per `end_date_inclusive`), in default order.
    fn in_window(
        &self,
        records: &[Value],
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Vec<Value> {
        self.edited(records)
            .into_iter()
            .filter(|r| {
                let Some(created) = r["createdDate"].as_str().and_then(crate::gql::parse_instant) else {
                    return start.is_none() && end.is_none();
                };
                start.is_none_or(|s| created >= s)
                    && end.is_none_or(|e| {
                        if self.end_date_inclusive {
                            created <= e
                        } else {
                            created < e
                        }
                    })
            })
            .collect()
    }

    fn nps(&self) -> Value {
        let responses = self.edited(&self.feedback);
        let scores: Vec<i64> = responses.iter().filter_map(|r| r["score"].as_i64()).collect();
        let total = scores.len();
        let promoters = scores.iter().filter(|s| **s >= 9).count();
        let detractors = scores.iter().filter(|s| **s <= 6).count();
        let passives = total - promoters - detractors;
        let percent = |count: usize| {
            if total == 0 {
                0.0
            } else {
                count as f64 * 100.0 / total as f64
            }
        };
        json!({
            "nps": (percent(promoters) - percent(detractors)).round() as i64,
            "promoters": percent(promoters).round() as i64,
            "passives": percent(passives).round() as i64,
            "detractors": percent(detractors).round() as i64,
            "promotersCount": promoters,
            "passivesCount": passives,
            "detractorsCount": detractors,
            "totalResponses": total,
        })
    }
}

// ----------------------------------------------------------------------------------------------
// HTTP: data routes

fn envelope(status: StatusCode, message: &str, data: Value) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "code": status.as_u16(), "data": data})),
    )
        .into_response()
}

/// Why a list request is refused before any data is read.
enum Refusal {
    Unauthorized,
    BadRequest(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => unauthorized(),
            Refusal::BadRequest(message) => envelope(StatusCode::BAD_REQUEST, &message, Value::Null),
        }
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::BadRequest(message.into())
}

fn query_map(query: Option<String>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.entry(key.into_owned()).or_insert_with(|| value.into_owned());
    }
    map
}

/// `Authorization: Bearer <oauth token>`, `Authorization: api_key=<key>` or `?api_key=<key>`.
fn authorized(api: &ApiState, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    if let Some(token) = crate::gql::bearer(headers) {
        return api.auth.access_token_is_valid(&token);
    }
    let header_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("api_key="))
        .map(str::trim);
    header_key.or(query.get("api_key").map(String::as_str)) == Some(api.api_key.as_str())
}

fn unauthorized() -> Response {
    envelope(
        StatusCode::UNAUTHORIZED,
        "Please check your API Key to make sure it's valid.",
        Value::Null,
    )
}

/// A `startDate`/`endDate` value: UNIX seconds, an RFC 3339 instant or a `YYYY-MM-DD` date.
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0));
    }
    crate::gql::parse_instant(text).or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
    })
}

/// The paging/sorting/filter parameters of a list request, validated.
struct ListParams {
    page: usize,
    limit: usize,
    sort: String,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

fn list_params(query: &HashMap<String, String>) -> Result<ListParams, Refusal> {
    let number = |key: &str, default: usize| -> Result<usize, Refusal> {
        match query.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| bad_request(format!("The {key} must be an integer."))),
        }
    };
    let page = number("page", 1)?;
    if page < 1 {
        return Err(bad_request("The page must be at least 1."));
    }
    let limit = number("limit", 20)?;
    if limit < 1 {
        return Err(bad_request("The limit must be at least 1."));
    }
    if limit > 1000 {
        return Err(bad_request("The limit may not be greater than 1000."));
    }
    let date = |key: &str| -> Result<Option<DateTime<Utc>>, Refusal> {
        match query.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_date(v)
                .map(Some)
                .ok_or_else(|| bad_request(format!("The {key} is not a valid date or UNIX timestamp."))),
        }
    };
    Ok(ListParams {
        page,
        limit,
        sort: query
            .get("sort")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-createdDate".into()),
        start: date("startDate")?,
        end: date("endDate")?,
    })
}

/// Sorts by `sort` (`field` ascending, `-field` descending), ties by id so pages are stable.
fn sort_records(records: &mut [Value], sort: &str) {
    let (descending, field) = match sort.strip_prefix('-') {
        Some(field) => (true, field),
        None => (false, sort.strip_prefix('+').unwrap_or(sort)),
    };
    let compare = |a: &Value, b: &Value| -> std::cmp::Ordering {
        let primary = match (&a[field], &b[field]) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0))
            }
            (x, y) => x.as_str().unwrap_or("").cmp(y.as_str().unwrap_or("")),
        };
        primary.then_with(|| a["id"].as_str().unwrap_or("").cmp(b["id"].as_str().unwrap_or("")))
    };
    records.sort_by(|a, b| if descending { compare(b, a) } else { compare(a, b) });
}

fn page_of(mut records: Vec<Value>, key: &str, params: &ListParams) -> Response {
    sort_records(&mut records, &params.sort);
    let total = records.len();
    let pages = total.div_ceil(params.limit).max(1);
    let items: Vec<Value> = records
        .into_iter()
        .skip((params.page - 1).saturating_mul(params.limit))
        .take(params.limit)
        .collect();
    let mut data = serde_json::Map::new();
    data.insert(key.into(), Value::Array(items));
    data.insert("page".into(), json!(params.page));
    data.insert("pages".into(), json!(pages));
    data.insert("limit".into(), json!(params.limit));
    data.insert("sort".into(), json!(params.sort));
    data.insert("total".into(), json!(total));
    envelope(StatusCode::OK, "Success.", Value::Object(data))
}

/// Common front of every list route: auth, then parameters.
fn guard(
    api: &ApiState,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<(HashMap<String, String>, ListParams), Refusal> {
    let query = query_map(query);
    if !authorized(api, headers, &query) {
        return Err(Refusal::Unauthorized);
    }
    let params = list_params(&query)?;
    Ok((query, params))
}

async fn customers(State(api): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let (query, params) = match guard(&api, &headers, query) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let mut records = api.data.in_window(&api.data.customers, params.start, params.end);
    if let Some(email) = query.get("email").filter(|e| !e.is_empty()) {
        records.retain(|r| r["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)));
    }
    page_of(records, "subscribers", &params)
}

async fn feedback(State(api): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let (_, params) = match guard(&api, &headers, query) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let records = api.data.in_window(&api.data.feedback, params.start, params.end);
    page_of(records, "responses", &params)
}

async fn companies(State(api): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let (_, params) = match guard(&api, &headers, query) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    page_of(api.data.edited(&api.data.companies), "companies", &params)
}

async fn campaigns(State(api): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if !authorized(&api, &headers, &query_map(query)) {
        return unauthorized();
    }
    (
        StatusCode::OK,
        axum::Json(json!({"campaigns": api.data.edited(&api.data.campaigns)})),
    )
        .into_response()
}

async fn nps_score(State(api): State<ApiState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if !authorized(&api, &headers, &query_map(query)) {
        return unauthorized();
    }
    envelope(StatusCode::OK, "Success.", api.data.nps())
}

// ----------------------------------------------------------------------------------------------
// HTTP: OAuth

fn oauth_refusal(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(error.body())).into_response()
}

/// `GET /api/oauth/authorize`: approves at once. Retently registers no redirect URLs, so any
/// absolute URL is accepted.
async fn authorize(State(state): State<OAuthState>, RawQuery(query): RawQuery) -> Response {
    let params = query_map(query);
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());
    if get("client_id") != Some(state.auth.config.client_id.as_str()) {
        return oauth_refusal(&OAuthError::new(
            400,
            "invalid_client",
            "Client authentication failed.",
        ));
    }
    let Some(mut redirect) = get("redirect_uri").and_then(|u| url::Url::parse(u).ok()) else {
        return oauth_refusal(&OAuthError::new(
            400,
            "invalid_request",
            "The request is missing a required parameter: redirect_uri.",
        ));
    };
    {
        let mut pairs = redirect.query_pairs_mut();
        if get("response_type") == Some("code") {
            let code = state
                .auth
                .issue_code(&state.auth.config.client_id, get("redirect_uri"), "", None);
            pairs.append_pair("code", &code);
        } else {
            pairs.append_pair("error", "unsupported_response_type");
            pairs.append_pair(
                "error_description",
                "The authorization server does not support obtaining an authorization code using this method.",
            );
        }
        if let Some(state_param) = get("state") {
            pairs.append_pair("state", state_param);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(redirect.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `POST /api/oauth/token` (form body; client credentials in the body, as documented).
async fn token(State(state): State<OAuthState>, body: Bytes) -> Response {
    if state.token_endpoint_down.load(Ordering::SeqCst) {
        state.auth.count_error();
        return oauth_refusal(&OAuthError::new(
            503,
            "temporarily_unavailable",
            "Service unavailable.",
        ));
    }
    let mut params = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        params
            .entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    let get = |key: &str| {
        params
            .get(key)
            .map(String::as_str)
            .filter(|v: &&str| !v.is_empty())
    };
    let client_id = get("client_id").unwrap_or_default();
    if !state
        .auth
        .client_matches(client_id, get("client_secret").unwrap_or_default())
    {
        state.auth.count_error();
        return oauth_refusal(&OAuthError::new(
            401,
            "invalid_client",
            "Client authentication failed.",
        ));
    }
    let result = match (get("grant_type"), get("code"), get("refresh_token")) {
        (Some("authorization_code"), Some(code), _) => {
            state
                .auth
                .exchange_code(client_id, code, get("redirect_uri"), None)
        }
        (Some("refresh_token"), _, Some(refresh)) => state.auth.refresh(client_id, refresh),
        (Some("authorization_code" | "refresh_token"), _, _) | (None, _, _) => {
            state.auth.count_error();
            Err(OAuthError::new(
                400,
                "invalid_request",
                "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.",
            ))
        }
        (Some(_), _, _) => {
            state.auth.count_error();
            Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported.",
            ))
        }
    };
    match result {
        Ok(grant) => (
            StatusCode::OK,
            axum::Json(json!({
                "access_token": grant.access_token,
                "token_type": "Bearer",
                "expires_in": grant.expires_in,
                "refresh_token": grant.refresh_token,
            })),
        )
            .into_response(),
        Err(error) => oauth_refusal(&error),
    }
}

// ----------------------------------------------------------------------------------------------
// Handle

impl RetentlyHandle {
    /// Counts of codes, grants, refreshes and reused refresh tokens.
    pub fn counts(&self) -> AuthCounts {
        self.auth.counts()
    }

    /// Makes the token endpoint answer 503 (`true`) or work again (`false`).
    pub fn set_token_endpoint_down(&self, down: bool) {
        self.token_endpoint_down.store(down, Ordering::SeqCst);
    }

    /// Expires every access token issued so far (refresh tokens keep working).
    pub fn expire_access_tokens(&self) {
        self.auth.expire_access_tokens();
    }

    /// Revokes every OAuth authorization (the API key keeps working).
    pub fn revoke_all(&self) {
        self.auth.revoke_all();
    }

    /// A fresh OAuth authorization without the browser round trip.
    pub fn grant_tokens(&self) -> TokenGrant {
        self.auth.grant_directly("")
    }

    pub fn set_limit(&self, limit: u32, window: Duration) {
        self.rate.set_limit(limit, window);
    }

    /// Enforcing (default: 429 over the limit) or monitoring (count only).
    pub fn set_mode(&self, mode: RateLimitMode) {
        self.rate.set_mode(mode);
    }

    /// The most data calls in any sliding window of this length.
    pub fn max_calls_in_any_window(&self, window: Duration) -> usize {
        self.rate.max_calls_in_any_window(window)
    }

    /// How many data calls were answered 429.
    pub fn rate_limited_responses(&self) -> u64 {
        self.rate.rate_limited_responses()
    }

    /// Every data call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.rate.calls()
    }

    /// `/api/v2/customers` records created in the window (either bound optional), newest first.
    pub fn customers(&self, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Vec<Value> {
        self.data.in_window(&self.data.customers, start, end)
    }

    /// `/api/v2/feedback` records created in the window (either bound optional), newest first.
    pub fn feedback(&self, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Vec<Value> {
        self.data.in_window(&self.data.feedback, start, end)
    }

    /// Every `/api/v2/companies` record, newest first.
    pub fn companies(&self) -> Vec<Value> {
        self.data.edited(&self.data.companies)
    }

    /// Every `/api/v2/campaigns` record.
    pub fn campaigns(&self) -> Vec<Value> {
        self.data.edited(&self.data.campaigns)
    }

    /// The `data` object of `/api/v2/nps/score`.
    pub fn nps_score(&self) -> Value {
        self.data.nps()
    }

    /// URLs and credentials, for the `sandbox` binary.
    pub fn describe(&self) -> Value {
        let (limit, window) = self.rate.limit();
        json!({
            "base_url": self.base_url,
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "api_key": self.api_key,
            "rate_limit": {"limit": limit, "window_secs": window.as_secs_f64()},
        })
    }
}
