//! Retarus "External Reporting Service" stand-in: a Keycloak-style client-credentials token
//! endpoint and the reporting GraphQL API with its six UDR reports.
//!
//! What it enforces, because the vendor documents it (`docs/vendors/retarus.md`): bearer
//! tokens on every GraphQL call (401 otherwise), at most 45 days per `datePeriod`, no data older
//! than 90 days before the real clock, `size` at most 10,000, a half-open `[from, to)` window on
//! each report's filter timestamp, and page-number paging with `hasMoreElements`. Guesses
//! ([INFERRED] in the README) are marked as such in the SDL descriptions: the filter timestamp of
//! the fax, SMS-in and e-mail reports, the filter input type names, Spring-style
//! `extensions.classification` on errors, and every field of `transactionalEmailEventReport`.
//!
//! Records are generated on demand per (report, customer, UTC day) from [`data::rng_for`], so a
//! window costs only its own days; [`RetarusHandle::records`] and the GraphQL resolvers share one
//! code path ([`Shared::window`]), which is what lets tests compare them for equality.
//!
//! Serving a page must not cost its whole window (a 1M-record load would otherwise spend its time
//! in the sandbox, not in the loader being measured): while no [`Edits`] are set and no column
//! filter is asked for, [`Shared::page`] serves from a per-day index (each record's filter
//! timestamp and place in the served order, 12 bytes a record, built once per day and cached)
//! and generates only the page's own records. It produces exactly what slicing
//! [`Shared::window`] would (a unit test compares them); edits or filters take the general path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, ErrorExtensions, ID, InputObject, Interface, Object,
    Schema, SimpleObject,
};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::{self, Edits};
use crate::faults::{self, Faults};
use crate::gql::{self, GqlDateTime};
use crate::{SandboxOptions, ServerGuard};

/// Keycloak's token path; the realm is `platform` as in the vendor's token URL.
pub const TOKEN_PATH: &str = "/realms/platform/protocol/openid-connect/token";
/// The reporting GraphQL path, as in `https://api.retarus.com/stable/external-reporting-service/v1`.
pub const GRAPHQL_PATH: &str = "/stable/external-reporting-service/v1";
/// The documented maximum page size.
pub const MAX_PAGE_SIZE: i32 = 10_000;
/// The documented maximum span of one `datePeriod`.
pub const MAX_PERIOD_DAYS: i64 = 45;
/// The documented retention: `fromIncluded` may be at most this many days before now.
pub const RETENTION_DAYS: i64 = 90;
/// Page size when the query leaves `size` out. [INFERRED]: not documented.
pub const DEFAULT_PAGE_SIZE: i32 = 100;

/// One OAuth client the token endpoint accepts, and the customer ids it may report on.
#[derive(Debug, Clone)]
pub struct RetarusClient {
    pub client_id: String,
    pub client_secret: String,
    /// Business customer ids this client may pass as `customerId`; any other is refused.
    pub customer_ids: Vec<String>,
}

/// Retarus knobs. `Default`: one client entitled to customers "99999" and "88888", 300 s tokens.
#[derive(Debug, Clone)]
pub struct RetarusOptions {
    /// Accepted clients; the first is the one [`RetarusHandle`] advertises.
    pub clients: Vec<RetarusClient>,
    /// Access-token lifetime (`expires_in`); Keycloak's default is 5 minutes.
    pub token_lifetime: Duration,
    /// Remember every successful GraphQL answer by (client, request body) and send it again for
    /// the same request while no edits are set. For load benchmarks: a second load of the same
    /// windows then costs the upstream only the copying of bytes, so what is measured is the
    /// loader. Answers are the bytes computed the first time, so they stay identical; memory
    /// grows with every distinct request. Off by default.
    pub cache_responses: bool,
    /// Fields removed from the schema (see [`crate::drift`]): introspection leaves them out and
    /// queries selecting them are refused. Empty by default.
    pub removed_fields: Vec<crate::drift::RemovedField>,
    /// Scalar fields whose type changes, values included (see [`crate::drift`]). Empty by
    /// default.
    pub retyped_fields: Vec<crate::drift::RetypedField>,
    /// Serve at most this many records per page whatever `size` asks (pages stay contiguous):
    /// many pages from little data, for tests of long extractions. `None` by default.
    pub max_page_size: Option<i32>,
}

impl Default for RetarusOptions {
    fn default() -> Self {
        RetarusOptions {
            clients: vec![RetarusClient {
                client_id: "reporting-etl".into(),
                client_secret: "retarus-sandbox-secret".into(),
                customer_ids: vec!["99999".into(), "88888".into()],
            }],
            token_lifetime: Duration::from_secs(300),
            cache_responses: false,
            removed_fields: Vec::new(),
            retyped_fields: Vec::new(),
            max_page_size: None,
        }
    }
}

/// The six reports, one GraphQL query each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetarusReport {
    FaxIn,
    FaxOut,
    SmsIn,
    SmsOut,
    TransactionalEmail,
    TransactionalEmailEvent,
}

impl RetarusReport {
    pub const ALL: [RetarusReport; 6] = [
        RetarusReport::FaxIn,
        RetarusReport::FaxOut,
        RetarusReport::SmsIn,
        RetarusReport::SmsOut,
        RetarusReport::TransactionalEmail,
        RetarusReport::TransactionalEmailEvent,
    ];

    /// The root field of the report, e.g. `faxInUdrReport`.
    pub fn query_name(self) -> &'static str {
        match self {
            RetarusReport::FaxIn => "faxInUdrReport",
            RetarusReport::FaxOut => "faxOutUdrReport",
            RetarusReport::SmsIn => "smsInUdrReport",
            RetarusReport::SmsOut => "smsOutUdrReport",
            RetarusReport::TransactionalEmail => "transactionalEmailUdrReport",
            RetarusReport::TransactionalEmailEvent => "transactionalEmailEventReport",
        }
    }

    /// The record's primary id field (what [`Edits`] are keyed by).
    pub fn id_field(self) -> &'static str {
        match self {
            RetarusReport::FaxIn | RetarusReport::FaxOut => "faxId",
            RetarusReport::SmsIn | RetarusReport::SmsOut => "smsId",
            RetarusReport::TransactionalEmail => "metaId",
            RetarusReport::TransactionalEmailEvent => "eventId",
        }
    }

    /// The timestamp field `datePeriod` filters and `sort` orders on.
    pub fn filter_field(self) -> &'static str {
        match self {
            RetarusReport::FaxIn | RetarusReport::FaxOut => "keyTimestamp",
            RetarusReport::SmsIn => "receivedTs",
            RetarusReport::SmsOut => "deliveryProcessedTs",
            RetarusReport::TransactionalEmail => "usageCreationTime",
            RetarusReport::TransactionalEmailEvent => "eventTs",
        }
    }

    fn key(self) -> &'static str {
        match self {
            RetarusReport::FaxIn => "fax_in",
            RetarusReport::FaxOut => "fax_out",
            RetarusReport::SmsIn => "sms_in",
            RetarusReport::SmsOut => "sms_out",
            RetarusReport::TransactionalEmail => "tem",
            RetarusReport::TransactionalEmailEvent => "tem_event",
        }
    }
}

/// What tests and the `sandbox` binary use to reach and steer the Retarus stand-in.
#[derive(Clone)]
pub struct RetarusHandle {
    pub base_url: String,
    pub token_url: String,
    pub graphql_url: String,
    /// Credentials of the first configured client.
    pub client_id: String,
    pub client_secret: String,
    /// Customer ids the first client may query.
    pub customer_ids: Vec<String>,
    pub faults: Faults,
    /// Any part of any answer (token endpoint included) replaced on demand.
    pub hostile: crate::hostile::Hostile,
    pub edits: Edits,
    shared: Arc<Shared>,
}

impl RetarusHandle {
    /// Requests that reached the token endpoint (granted or not).
    pub fn token_requests(&self) -> u64 {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// Requests that reached the GraphQL endpoint (including 401s and injected faults).
    pub fn graphql_calls(&self) -> u64 {
        self.shared.graphql_calls.load(Ordering::Relaxed)
    }

    /// While `true` the token endpoint answers 503.
    pub fn set_token_endpoint_down(&self, down: bool) {
        self.shared.token_endpoint_down.store(down, Ordering::Relaxed);
    }

    /// Invalidates every token issued so far: their next use gets 401.
    pub fn expire_tokens(&self) {
        self.shared.lock_tokens().clear();
    }

    /// The records the report serves for `customer_id` in `[from, to)`, ascending by the
    /// report's filter timestamp then id, with edits applied, in the served JSON shape (every
    /// field, nulls included). Ignores the 45/90-day rules, which only guard the API.
    pub fn records(
        &self,
        report: RetarusReport,
        customer_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Value> {
        self.shared
            .window(report, customer_id, from, to)
            .into_iter()
            .map(|(_, value)| value)
            .collect()
    }

    /// URLs and credentials, for the `sandbox` binary.
    pub fn describe(&self) -> Value {
        json!({
            "token_url": self.token_url,
            "graphql_url": self.graphql_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "customer_ids": self.customer_ids,
            "token_lifetime_secs": self.shared.token_lifetime.as_secs(),
            "queries": RetarusReport::ALL.iter().map(|r| r.query_name()).collect::<Vec<_>>(),
        })
    }
}

/// The schema the sandbox serves, as SDL (what `schemas/retarus.graphql` must equal).
pub fn sdl() -> String {
    format!(
        "# Generated by `cargo run -p sandbox -- sdl retarus`: the schema the Retarus sandbox serves.\n\
         # Rebuilt from the vendor's documented examples; not the vendor's own SDL. Do not edit by hand.\n\n{}",
        schema(None, &[], &[]).sdl()
    )
}

pub async fn start(options: &SandboxOptions) -> std::io::Result<(RetarusHandle, ServerGuard)> {
    let retarus = &options.retarus;
    let first = retarus
        .clients
        .first()
        .cloned()
        .unwrap_or_else(|| RetarusOptions::default().clients.remove(0));
    let shared = Arc::new(Shared {
        seed: options.seed,
        anchor: options.anchor,
        history_days: options.history_days,
        records_per_day: options.records_per_day,
        clients: if retarus.clients.is_empty() {
            vec![first.clone()]
        } else {
            retarus.clients.clone()
        },
        token_lifetime: retarus.token_lifetime,
        max_page_size: retarus.max_page_size,
        edits: Edits::default(),
        tokens: Mutex::new(HashMap::new()),
        tokens_issued: AtomicU64::new(0),
        token_requests: AtomicU64::new(0),
        graphql_calls: AtomicU64::new(0),
        token_endpoint_down: AtomicBool::new(false),
        day_index: Mutex::new(HashMap::new()),
    });
    let faults = Faults::new(options.seed ^ 0x5245_5441_5255_5300);
    let app = Arc::new(App {
        schema: schema(
            Some(shared.clone()),
            &retarus.removed_fields,
            &retarus.retyped_fields,
        ),
        shared: shared.clone(),
        responses: retarus.cache_responses.then(|| Mutex::new(HashMap::new())),
    });
    let router = axum::Router::new()
        .route(
            GRAPHQL_PATH,
            post(graphql)
                .layer(axum::middleware::from_fn_with_state(
                    faults.clone(),
                    faults::inject,
                ))
                .layer(axum::middleware::from_fn_with_state(app.clone(), count_graphql)),
        )
        .route(TOKEN_PATH, post(token))
        .with_state(app);
    let hostile = crate::hostile::Hostile::default();
    let guard = crate::serve_vendor(router, &hostile).await?;
    let base_url = format!("http://{}", guard.addr);
    let handle = RetarusHandle {
        token_url: format!("{base_url}{TOKEN_PATH}"),
        graphql_url: format!("{base_url}{GRAPHQL_PATH}"),
        base_url,
        client_id: first.client_id,
        client_secret: first.client_secret,
        customer_ids: first.customer_ids,
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

/// State shared by the handle (tests) and the HTTP handlers / resolvers.
struct Shared {
    seed: u64,
    anchor: DateTime<Utc>,
    history_days: u32,
    records_per_day: u32,
    clients: Vec<RetarusClient>,
    token_lifetime: Duration,
    max_page_size: Option<i32>,
    edits: Edits,
    /// Live access tokens → (client id, expiry). Written by the token handler, read by every
    /// GraphQL call, cleared by [`RetarusHandle::expire_tokens`]; held only for a map operation.
    tokens: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
    tokens_issued: AtomicU64,
    token_requests: AtomicU64,
    graphql_calls: AtomicU64,
    token_endpoint_down: AtomicBool,
    /// Per (report, customer, day) served order, built on first use. Bounded by the data set
    /// (reports × customers × history days) and never stale: the generated data is a pure
    /// function of the options.
    day_index: Mutex<HashMap<(RetarusReport, String, NaiveDate), Arc<DayIndex>>>,
}

/// Where the generated records of one (report, customer, UTC day) stand in the served order
/// (ascending filter timestamp, ties by id), without the records themselves.
struct DayIndex {
    /// Filter timestamps in served order, as Unix milliseconds (the generator's precision).
    times: Vec<i64>,
    /// The generation index of the record at each position.
    order: Vec<u32>,
}

/// The slice `[lo, hi)` of one day's index that lies in a requested window.
struct DaySpan {
    day: NaiveDate,
    index: Arc<DayIndex>,
    lo: usize,
    hi: usize,
}

impl Shared {
    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::time::Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client a live token belongs to.
    fn client_for_token(&self, token: &str) -> Option<RetarusClient> {
        let client_id = {
            let mut tokens = self.lock_tokens();
            match tokens.get(token) {
                Some((client_id, expires)) if *expires > tokio::time::Instant::now() => client_id.clone(),
                Some(_) => {
                    tokens.remove(token);
                    return None;
                }
                None => return None,
            }
        };
        self.clients.iter().find(|c| c.client_id == client_id).cloned()
    }

    fn customers(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for client in &self.clients {
            for id in &client.customer_ids {
                if !all.contains(id) {
                    all.push(id.clone());
                }
            }
        }
        all
    }

    /// Every record of `report` for `customer` whose filter timestamp lies in `[from, to)`,
    /// edits applied, ascending by (filter timestamp, id).
    fn window(
        &self,
        report: RetarusReport,
        customer: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Value)> {
        if from >= to || !self.customers().iter().any(|c| c == customer) {
            return Vec::new();
        }
        // One day of slack on each side so an edit that moves a record's timestamp a little
        // still finds it.
        let first = from.date_naive() - TimeDelta::days(1);
        let last = to.date_naive() + TimeDelta::days(1);
        let mut out = Vec::new();
        for day in data::history_days(self.anchor, self.history_days) {
            if day < first || day > last {
                continue;
            }
            for mut record in self.day_records(report, customer, day) {
                let id = record
                    .get(report.id_field())
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if self.edits.is_deleted(&id) {
                    continue;
                }
                if let (Some(changes), Some(object)) = (self.edits.changes_for(&id), record.as_object_mut()) {
                    for (field, value) in changes {
                        object.insert(field, value);
                    }
                }
                let Some(at) = record
                    .get(report.filter_field())
                    .and_then(Value::as_str)
                    .and_then(gql::parse_instant)
                else {
                    continue;
                };
                if at >= from && at < to {
                    out.push((at, record));
                }
            }
        }
        out.sort_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let id = report.id_field();
                a.1.get(id)
                    .and_then(Value::as_str)
                    .cmp(&b.1.get(id).and_then(Value::as_str))
            })
        });
        out
    }

    /// The generated records of one report, customer and UTC day (before edits). Their filter
    /// timestamps fall within the day and before the anchor.
    fn day_records(&self, report: RetarusReport, customer: &str, day: NaiveDate) -> Vec<Value> {
        let Some((day_text, times)) = self.day_times(report, customer, day) else {
            return Vec::new();
        };
        times
            .into_iter()
            .enumerate()
            .map(|(index, at)| self.day_record(report, customer, day, &day_text, index, at))
            .collect()
    }

    /// The day's filter timestamps in generation order (sorted; index `i` is record `i`), and the
    /// day as text (part of every record's seed). `None` for a day wholly after the anchor.
    fn day_times(
        &self,
        report: RetarusReport,
        customer: &str,
        day: NaiveDate,
    ) -> Option<(String, Vec<DateTime<Utc>>)> {
        let day_text = day.format("%Y-%m-%d").to_string();
        let start = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(self.anchor);
        let end = (start + TimeDelta::days(1)).min(self.anchor);
        let span_ms = (end - start).num_milliseconds();
        if span_ms <= 0 {
            return None;
        }
        let mut times_rng = data::rng_for(self.seed, &["retarus", report.key(), customer, &day_text]);
        let mut times: Vec<DateTime<Utc>> = (0..self.records_per_day)
            .map(|_| start + TimeDelta::milliseconds(times_rng.random_range(0..span_ms)))
            .collect();
        times.sort();
        Some((day_text, times))
    }

    /// Record `index` of a day (before edits): a pure function of its seed parts and `at`.
    fn day_record(
        &self,
        report: RetarusReport,
        customer: &str,
        day: NaiveDate,
        day_text: &str,
        index: usize,
        at: DateTime<Utc>,
    ) -> Value {
        let mut rng = data::rng_for(
            self.seed,
            &["retarus", report.key(), customer, day_text, &index.to_string()],
        );
        let seq = format!("{}{:04}", day.format("%y%m%d"), index);
        generate(report, &mut rng, customer, &seq, at)
    }

    /// The served order of one day, from the cache or built now. Only records whose timestamp
    /// ties another's are generated (their ids break the tie, as in [`Shared::window`]).
    fn day_index(&self, report: RetarusReport, customer: &str, day: NaiveDate) -> Arc<DayIndex> {
        let key = (report, customer.to_owned(), day);
        if let Some(found) = self.lock_day_index().get(&key) {
            return found.clone();
        }
        // Built outside the lock: two callers may build the same day, and both get equal results.
        let (day_text, times) = self.day_times(report, customer, day).unwrap_or_default();
        let mut order: Vec<u32> = (0..times.len() as u32).collect();
        let mut run_start = 0;
        while run_start < times.len() {
            let run_end = run_start + times[run_start..].partition_point(|t| *t == times[run_start]);
            if run_end - run_start > 1 {
                let mut tied: Vec<(Option<String>, u32)> = (run_start..run_end)
                    .map(|i| {
                        let record = self.day_record(report, customer, day, &day_text, i, times[i]);
                        let id = record
                            .get(report.id_field())
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        (id, i as u32)
                    })
                    .collect();
                // Stable, like the window's sort: equal ids keep generation order.
                tied.sort_by(|a, b| a.0.cmp(&b.0));
                for (slot, (_, i)) in order[run_start..run_end].iter_mut().zip(tied) {
                    *slot = i;
                }
            }
            run_start = run_end;
        }
        let index = Arc::new(DayIndex {
            times: order
                .iter()
                .map(|&i| times[i as usize].timestamp_millis())
                .collect(),
            order,
        });
        self.lock_day_index().entry(key).or_insert(index).clone()
    }

    fn lock_day_index(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(RetarusReport, String, NaiveDate), Arc<DayIndex>>> {
        self.day_index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `[skip, skip + take)` of the window (reversed first when `desc`) and the window's
    /// record count: what paging [`Shared::window`] gives, at the cost of the page's records and
    /// one index lookup per day. Exact only without edits (an edit may move or drop any record),
    /// which the caller checks.
    #[allow(clippy::too_many_arguments)]
    fn page(
        &self,
        report: RetarusReport,
        customer: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        desc: bool,
        skip: usize,
        take: usize,
    ) -> (Vec<Value>, usize) {
        if from >= to || !self.customers().iter().any(|c| c == customer) {
            return (Vec::new(), 0);
        }
        let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
        // Sub-millisecond bounds: a record at `from`'s millisecond is before `from` unless
        // `from` is a whole millisecond; the generator only makes whole milliseconds.
        let from_ms = if from.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
            from_ms
        } else {
            from_ms + 1
        };
        let to_ms = if to.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
            to_ms
        } else {
            to_ms + 1
        };
        let (first, last) = (from.date_naive(), to.date_naive());
        let mut spans: Vec<DaySpan> = data::history_days(self.anchor, self.history_days)
            .filter(|day| *day >= first && *day <= last)
            .filter_map(|day| {
                let index = self.day_index(report, customer, day);
                let lo = index.times.partition_point(|t| *t < from_ms);
                let hi = index.times.partition_point(|t| *t < to_ms);
                (lo < hi).then_some(DaySpan { day, index, lo, hi })
            })
            .collect();
        let total: usize = spans.iter().map(|s| s.hi - s.lo).sum();
        if desc {
            spans.reverse();
        }
        let mut out = Vec::with_capacity(take.min(total.saturating_sub(skip)));
        let mut skip = skip;
        for span in &spans {
            if out.len() == take {
                break;
            }
            let len = span.hi - span.lo;
            if skip >= len {
                skip -= len;
                continue;
            }
            let count = (len - skip).min(take - out.len());
            let positions: Vec<usize> = if desc {
                (span.hi - skip - count..span.hi - skip).rev().collect()
            } else {
                (span.lo + skip..span.lo + skip + count).collect()
            };
            skip = 0;
            let day_text = span.day.format("%Y-%m-%d").to_string();
            for p in positions {
                let at = DateTime::from_timestamp_millis(span.index.times[p]).unwrap_or(self.anchor);
                let index = span.index.order[p] as usize;
                out.push(self.day_record(report, customer, span.day, &day_text, index, at));
            }
        }
        (out, total)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

struct App {
    schema: RetarusSchema,
    shared: Arc<Shared>,
    /// (client id, request body) → the JSON answer, when [`RetarusOptions::cache_responses`].
    responses: Option<Mutex<HashMap<(String, Bytes), Bytes>>>,
}

/// A 200 JSON answer with exactly the bytes and headers `axum::Json` would send.
fn json_bytes(body: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

type RetarusSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Counts every GraphQL request, outside the fault layer so injected faults are counted too.
async fn count_graphql(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    app.shared.graphql_calls.fetch_add(1, Ordering::Relaxed);
    next.run(request).await
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    gql::json(status, json!({"error": error, "error_description": description}))
}

/// Keycloak's client-credentials grant. Credentials may come in the form body
/// (`client_secret_post`, what the vendor documents) or as HTTP Basic (`client_secret_basic`).
async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let shared = &app.shared;
    shared.token_requests.fetch_add(1, Ordering::Relaxed);
    if shared.token_endpoint_down.load(Ordering::Relaxed) {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The authorization server is temporarily unavailable",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(grant_type) = form.get("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        );
    };
    let (client_id, client_secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        // Keycloak decodes client_secret_basic per RFC 6749 §2.3.1.
        _ => match gql::client_basic(&headers) {
            Some(pair) => pair,
            None => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Invalid client or Invalid client credentials",
                );
            }
        },
    };
    let Some(client) = shared
        .clients
        .iter()
        .find(|c| c.client_id == client_id && c.client_secret == client_secret)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    };
    if grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    let scopes: Vec<&str> = form
        .get("scope")
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if !scopes.contains(&"openid") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid scopes: scope=openid is required",
        );
    }
    let serial = shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let now = Utc::now();
    let lifetime = shared.token_lifetime;
    let access_token = jwt_like(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "sandbox"}),
        &json!({
            "exp": now.timestamp() + lifetime.as_secs() as i64,
            "iat": now.timestamp(),
            "jti": format!("{:016x}-{serial}", shared.seed),
            "iss": "sandbox/realms/platform",
            "typ": "Bearer",
            "azp": client.client_id,
            "scope": "openid",
        }),
        &mut data::rng_for(shared.seed, &["retarus", "token", &serial.to_string()]),
    );
    shared.lock_tokens().insert(
        access_token.clone(),
        (client.client_id.clone(), tokio::time::Instant::now() + lifetime),
    );
    let mut response = gql::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "openid",
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A string shaped like a signed JWT (header.payload.signature, base64url); the signature is
/// random bytes: nothing verifies it but this sandbox's token table.
pub(crate) fn jwt_like(header: &Value, payload: &Value, rng: &mut ChaCha8Rng) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signature: [u8; 32] = rng.random();
    format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(payload.to_string()),
        b64.encode(signature)
    )
}

fn invalid_token() -> Response {
    let mut response = gql::json(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

async fn graphql(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(client) = gql::bearer(&headers).and_then(|token| app.shared.client_for_token(&token)) else {
        return invalid_token();
    };
    let request = match gql::parse_request(&body) {
        Ok(request) => request,
        Err(error) => return gql::json(StatusCode::BAD_REQUEST, error),
    };
    // Edits change answers, so a remembered one is only valid while there are none.
    let cache = app.responses.as_ref().filter(|_| app.shared.edits.is_empty());
    let key = (client.client_id.clone(), body.clone());
    if let Some(hit) = cache.and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned()) {
        return json_bytes(hit);
    }
    let response = app.schema.execute(request.data(Caller(client))).await;
    match cache {
        Some(cache) if response.errors.is_empty() => match serde_json::to_vec(&response) {
            Ok(bytes) => {
                let bytes = Bytes::from(bytes);
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, bytes.clone());
                json_bytes(bytes)
            }
            Err(_) => axum::Json(response).into_response(),
        },
        _ => axum::Json(response).into_response(),
    }
}

/// The authenticated client of the current GraphQL call.
struct Caller(RetarusClient);

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

fn schema(
    shared: Option<Arc<Shared>>,
    removed: &[crate::drift::RemovedField],
    retyped: &[crate::drift::RetypedField],
) -> RetarusSchema {
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription).register_output_type::<Base>();
    let builder = crate::drift::apply(builder, removed, retyped);
    match shared {
        Some(shared) => builder.data(shared).finish(),
        None => builder.finish(),
    }
}

fn classified(message: impl Into<String>, classification: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("classification", classification))
}

/// Half-open reporting window `[fromIncluded, toExcluded)` in UTC. At most 45 days long and
/// starting at most 90 days before now.
#[derive(InputObject, Clone, Copy)]
pub struct DatePeriod {
    /// Inclusive start, e.g. "2025-06-04T08:00:00.000Z".
    pub from_included: GqlDateTime,
    /// Exclusive end.
    pub to_excluded: GqlDateTime,
}

/// Order of `content` by the report's filter timestamp (ties broken by the record id).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SortDirection {
    Asc,
    Desc,
}

/// One column filter: a record matches when the column equals any of `values`. Null or empty
/// `values` means no constraint. [INFERRED]: the type name is a guess; the shape is documented.
#[derive(InputObject, Serialize, Clone, Default)]
pub struct UdrColumnFilter {
    pub values: Option<Vec<Option<String>>>,
}

/// Column filters of faxInUdrReport; "any of" within a column, AND across columns.
/// [INFERRED]: type name and column set are guesses.
#[derive(InputObject, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct FaxInColumnUdrFilters {
    pub billing_code: Option<UdrColumnFilter>,
    pub called_number: Option<UdrColumnFilter>,
    pub document_delivery_status: Option<UdrColumnFilter>,
    pub fax_transmit_status: Option<UdrColumnFilter>,
}

/// Column filters of faxOutUdrReport, e.g. `{statusName: {values: ["OK"]}}`; "any of" within a
/// column, AND across columns.
#[derive(InputObject, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct FaxOutColumnUdrFilters {
    pub status_name: Option<UdrColumnFilter>,
    pub status_code: Option<UdrColumnFilter>,
    pub job_billing_code: Option<UdrColumnFilter>,
    pub job_customer_ref: Option<UdrColumnFilter>,
    pub called_country: Option<UdrColumnFilter>,
}

/// Column filters of smsInUdrReport; "any of" within a column, AND across columns.
#[derive(InputObject, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SmsInColumnUdrFilters {
    pub billing_code: Option<UdrColumnFilter>,
    pub keyword: Option<UdrColumnFilter>,
    pub recipient: Option<UdrColumnFilter>,
    pub sender: Option<UdrColumnFilter>,
}

/// Column filters of smsOutUdrReport; "any of" within a column, AND across columns.
/// [INFERRED]: type name and column set are guesses.
#[derive(InputObject, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SmsOutColumnUdrFilters {
    pub billing_code: Option<UdrColumnFilter>,
    pub job_id: Option<UdrColumnFilter>,
    pub process_status: Option<UdrColumnFilter>,
    pub recipient_country_code: Option<UdrColumnFilter>,
    pub status: Option<UdrColumnFilter>,
}

/// The paging envelope every report result implements (a Spring Data page).
// The derive's `field(..)` entries repeat `ty = ..` by design; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface)]
#[graphql(
    field(
        name = "page_index",
        ty = "&Option<i32>",
        desc = "Zero-based index of this page."
    ),
    field(name = "page_size", ty = "&Option<i32>", desc = "The requested page size."),
    field(
        name = "has_more_elements",
        ty = "&Option<bool>",
        desc = "True while a later page holds more records: request page + 1."
    )
)]
pub enum Base {
    FaxIn(FaxInUdrQueryResult),
    FaxOut(FaxOutUdrQueryResult),
    SmsIn(SmsInUdrQueryResult),
    SmsOut(SmsOutUdrQueryResult),
    TransactionalEmail(TransactionalEmailUdrQueryResult),
    TransactionalEmailEvent(TransactionalEmailEventQueryResult),
}

macro_rules! query_result {
    ($(#[$meta:meta])* $name:ident, $record:ty) => {
        $(#[$meta])*
        #[derive(SimpleObject)]
        pub struct $name {
            /// The records of this page.
            pub content: Option<Vec<Option<$record>>>,
            /// Zero-based index of this page.
            pub page_index: Option<i32>,
            /// The requested page size.
            pub page_size: Option<i32>,
            /// True while a later page holds more records: request page + 1.
            pub has_more_elements: Option<bool>,
        }

        impl From<PageOf<$record>> for $name {
            fn from(page: PageOf<$record>) -> Self {
                $name {
                    content: Some(page.content.into_iter().map(Some).collect()),
                    page_index: Some(page.page_index),
                    page_size: Some(page.page_size),
                    has_more_elements: Some(page.has_more_elements),
                }
            }
        }
    };
}

query_result!(
    /// One page of inbound fax usage records.
    FaxInUdrQueryResult, FaxInUdrReportRecord
);
query_result!(
    /// One page of outbound fax usage records.
    FaxOutUdrQueryResult, FaxOutUdrReportRecord
);
query_result!(
    /// One page of inbound SMS usage records.
    SmsInUdrQueryResult, SmsInUdrReportRecord
);
query_result!(
    /// One page of outbound SMS usage records.
    SmsOutUdrQueryResult, SmsOutUdrReportRecord
);
query_result!(
    /// One page of transactional e-mail usage records.
    TransactionalEmailUdrQueryResult, TransactionalEmailUdrReportRecord
);
query_result!(
    /// One page of transactional e-mail events (opens and clicks).
    TransactionalEmailEventQueryResult, TransactionalEmailEventReportRecord
);

struct PageOf<T> {
    content: Vec<T>,
    page_index: i32,
    page_size: i32,
    has_more_elements: bool,
}

/// Root of the reporting API.
pub struct Query;

/// The report queries. Every one takes the same arguments: `customerId` (an id the client is
/// entitled to), `datePeriod` (at most 45 days, not older than 90 days), optional column
/// `filter`, zero-based `page`, `size` (at most 10000, default 100) and `sort` (default ASC).
#[Object]
impl Query {
    /// Cloud Fax inbound usage, filtered on keyTimestamp. [INFERRED] filter timestamp.
    #[allow(clippy::too_many_arguments)]
    async fn fax_in_udr_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        filter: Option<FaxInColumnUdrFilters>,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<FaxInUdrQueryResult>> {
        let filter = filter_columns(filter.as_ref());
        let args = Args {
            customer_id,
            date_period,
            filter,
            page,
            size,
            sort,
        };
        run::<FaxInUdrReportRecord>(ctx, RetarusReport::FaxIn, args).map(|p| Some(p.into()))
    }

    /// Cloud Fax outbound usage, filtered on keyTimestamp. [INFERRED] filter timestamp.
    #[allow(clippy::too_many_arguments)]
    async fn fax_out_udr_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        filter: Option<FaxOutColumnUdrFilters>,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<FaxOutUdrQueryResult>> {
        let filter = filter_columns(filter.as_ref());
        let args = Args {
            customer_id,
            date_period,
            filter,
            page,
            size,
            sort,
        };
        run::<FaxOutUdrReportRecord>(ctx, RetarusReport::FaxOut, args).map(|p| Some(p.into()))
    }

    /// SMS inbound usage, filtered on receivedTs. [INFERRED] filter timestamp.
    #[allow(clippy::too_many_arguments)]
    async fn sms_in_udr_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        filter: Option<SmsInColumnUdrFilters>,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<SmsInUdrQueryResult>> {
        let filter = filter_columns(filter.as_ref());
        let args = Args {
            customer_id,
            date_period,
            filter,
            page,
            size,
            sort,
        };
        run::<SmsInUdrReportRecord>(ctx, RetarusReport::SmsIn, args).map(|p| Some(p.into()))
    }

    /// SMS outbound usage, filtered on deliveryProcessedTs (documented).
    #[allow(clippy::too_many_arguments)]
    async fn sms_out_udr_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        filter: Option<SmsOutColumnUdrFilters>,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<SmsOutUdrQueryResult>> {
        let filter = filter_columns(filter.as_ref());
        let args = Args {
            customer_id,
            date_period,
            filter,
            page,
            size,
            sort,
        };
        run::<SmsOutUdrReportRecord>(ctx, RetarusReport::SmsOut, args).map(|p| Some(p.into()))
    }

    /// Transactional e-mail delivery usage, filtered on usageCreationTime. [INFERRED] filter timestamp.
    async fn transactional_email_udr_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<TransactionalEmailUdrQueryResult>> {
        let args = Args {
            customer_id,
            date_period,
            filter: Vec::new(),
            page,
            size,
            sort,
        };
        run::<TransactionalEmailUdrReportRecord>(ctx, RetarusReport::TransactionalEmail, args)
            .map(|p| Some(p.into()))
    }

    /// Transactional e-mail events (opens, clicks), filtered on eventTs. [INFERRED]: the vendor
    /// documents no fields for this report; the record type is a guess.
    async fn transactional_email_event_report(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        date_period: DatePeriod,
        page: Option<i32>,
        size: Option<i32>,
        sort: Option<SortDirection>,
    ) -> async_graphql::Result<Option<TransactionalEmailEventQueryResult>> {
        let args = Args {
            customer_id,
            date_period,
            filter: Vec::new(),
            page,
            size,
            sort,
        };
        run::<TransactionalEmailEventReportRecord>(ctx, RetarusReport::TransactionalEmailEvent, args)
            .map(|p| Some(p.into()))
    }
}

struct Args {
    customer_id: String,
    date_period: DatePeriod,
    /// (column, accepted values) pairs.
    filter: Vec<(String, Vec<Option<String>>)>,
    page: Option<i32>,
    size: Option<i32>,
    sort: Option<SortDirection>,
}

/// Turns a filter input into (column, values) pairs, skipping unconstrained columns.
fn filter_columns<F: Serialize>(filter: Option<&F>) -> Vec<(String, Vec<Option<String>>)> {
    let Some(Value::Object(columns)) = filter.and_then(|f| serde_json::to_value(f).ok()) else {
        return Vec::new();
    };
    columns
        .into_iter()
        .filter_map(|(column, spec)| {
            let values: Vec<Option<String>> = serde_json::from_value(spec.get("values")?.clone()).ok()?;
            (!values.is_empty()).then_some((column, values))
        })
        .collect()
}

fn cell_text(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    }
}

fn run<T: DeserializeOwned>(
    ctx: &Context<'_>,
    report: RetarusReport,
    args: Args,
) -> async_graphql::Result<PageOf<T>> {
    let shared = ctx.data::<Arc<Shared>>()?;
    let Caller(client) = ctx.data::<Caller>()?;
    if !client.customer_ids.contains(&args.customer_id) {
        return Err(classified(
            format!(
                "Access denied: client is not entitled to customerId {:?}",
                args.customer_id
            ),
            "FORBIDDEN",
        ));
    }
    let page = args.page.unwrap_or(0);
    let size = args.size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page < 0 {
        return Err(classified("page must not be negative", "BAD_REQUEST"));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(classified(
            format!("size must be between 1 and {MAX_PAGE_SIZE}, was {size}"),
            "BAD_REQUEST",
        ));
    }
    let size = shared.max_page_size.map_or(size, |max| size.min(max.max(1)));
    let (from, to) = (args.date_period.from_included.0, args.date_period.to_excluded.0);
    if from >= to {
        return Err(classified(
            "datePeriod.fromIncluded must be before datePeriod.toExcluded",
            "BAD_REQUEST",
        ));
    }
    if to - from > TimeDelta::days(MAX_PERIOD_DAYS) {
        return Err(classified(
            format!("datePeriod must not exceed {MAX_PERIOD_DAYS} days; split the range into several calls"),
            "BAD_REQUEST",
        ));
    }
    if from < Utc::now() - TimeDelta::days(RETENTION_DAYS) {
        return Err(classified(
            format!("datePeriod.fromIncluded must not be more than {RETENTION_DAYS} days in the past"),
            "BAD_REQUEST",
        ));
    }
    let desc = args.sort == Some(SortDirection::Desc);
    let start = (page as usize).saturating_mul(size as usize);
    let end = start.saturating_add(size as usize);
    let (rows, total) = if args.filter.is_empty() && shared.edits.is_empty() {
        shared.page(report, &args.customer_id, from, to, desc, start, size as usize)
    } else {
        let mut rows: Vec<Value> = shared
            .window(report, &args.customer_id, from, to)
            .into_iter()
            .map(|(_, value)| value)
            .filter(|record| {
                args.filter
                    .iter()
                    .all(|(column, values)| values.contains(&cell_text(record.get(column))))
            })
            .collect();
        if desc {
            rows.reverse();
        }
        let total = rows.len();
        (rows.into_iter().skip(start).take(size as usize).collect(), total)
    };
    let has_more_elements = total > end;
    let content = rows
        .into_iter()
        .map(serde_json::from_value::<T>)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| classified(format!("Internal error reading a record: {e}"), "INTERNAL_ERROR"))?;
    Ok(PageOf {
        content,
        page_index: page,
        page_size: size,
        has_more_elements,
    })
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// An inbound fax usage record.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FaxInUdrReportRecord {
    pub fax_id: ID,
    pub accounting_service: Option<String>,
    pub all_pages: Option<i32>,
    pub archive_purge_at: Option<GqlDateTime>,
    pub archiving_status: Option<String>,
    pub baud_rate: Option<i32>,
    pub billing_code: Option<String>,
    pub call_connected_at: Option<GqlDateTime>,
    pub called_country: Option<String>,
    pub called_cs_id: Option<String>,
    pub called_number: Option<String>,
    pub called_number_display: Option<String>,
    pub calling_number: Option<String>,
    pub calling_ts_id: Option<String>,
    pub call_started_at: Option<GqlDateTime>,
    pub confirmed_pages: Option<i32>,
    pub customer_id: Option<String>,
    pub delivery_recipients: Option<String>,
    pub delivery_sender: Option<String>,
    pub delivery_sender_user: Option<String>,
    pub discarded_pages: Option<i32>,
    pub doc_mime_type: Option<String>,
    pub document_delivery_status: Option<String>,
    /// Size of the received document in bytes.
    pub fax_file_size: Option<i32>,
    pub fax_transmit_status: Option<String>,
    /// The timestamp datePeriod filters on (inferred).
    pub key_timestamp: Option<GqlDateTime>,
    pub recipients_count: Option<i32>,
    pub resolution: Option<String>,
    pub secondary_delivery_recipients: Option<String>,
    pub virtual_pages_billed: Option<i32>,
}

/// An outbound fax usage record (one per fax, with its last transmission attempt).
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FaxOutUdrReportRecord {
    pub fax_id: ID,
    pub job_id: Option<String>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub account_server_id: Option<String>,
    pub account_service: Option<String>,
    pub attempt_pages: Option<i32>,
    pub attempt_seq_no: Option<i32>,
    pub baud_rate: Option<i32>,
    pub billed_country: Option<String>,
    pub call_connected_at: Option<GqlDateTime>,
    /// Duration of the last call in milliseconds.
    pub call_duration: Option<i32>,
    pub called_country: Option<String>,
    pub called_cs_id: Option<String>,
    pub called_number: Option<String>,
    pub called_zone: Option<String>,
    pub call_ended_at: Option<GqlDateTime>,
    pub calling_ts_id: Option<String>,
    pub call_invite_at: Option<GqlDateTime>,
    pub doc_pages: Option<i32>,
    pub fax_customer_ref: Option<String>,
    pub job_archive_purge_at: Option<GqlDateTime>,
    pub job_billing_code: Option<String>,
    pub job_billing_info: Option<String>,
    pub job_customer_id: Option<String>,
    pub job_customer_ref: Option<String>,
    pub job_customer_resolution: Option<String>,
    pub job_customer_start_fax_at: Option<GqlDateTime>,
    pub job_customer_tags: Option<String>,
    pub job_express: Option<bool>,
    pub job_personalized: Option<bool>,
    pub job_submission_dc: Option<String>,
    pub job_submitted_at: Option<GqlDateTime>,
    /// The timestamp datePeriod filters on (inferred).
    pub key_timestamp: Option<GqlDateTime>,
    pub last_attempt_ended_at: Option<GqlDateTime>,
    pub last_attempt_seq_no: Option<i32>,
    pub max_page_transmitted: Option<i32>,
    pub processing_final_at: Option<GqlDateTime>,
    pub status_code: Option<String>,
    pub status_name: Option<String>,
    pub status_reason: Option<String>,
    /// Sum of all attempts' call durations in milliseconds.
    pub sum_call_durations: Option<i32>,
    pub sum_pages_transmitted: Option<i32>,
    /// Milliseconds from submission to the first dial.
    pub time_to_first_dial: Option<i32>,
    pub virtual_pages_billed: Option<i32>,
}

/// An outbound SMS usage record.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SmsOutUdrReportRecord {
    pub sms_id: ID,
    pub request_id: Option<String>,
    pub job_id: Option<String>,
    pub tracking_id: Option<String>,
    pub reference: Option<String>,
    pub recipient_reference: Option<String>,
    pub data_center: Option<String>,
    pub customer_id: Option<String>,
    pub service: Option<String>,
    pub service_account: Option<String>,
    pub service_version: Option<String>,
    pub billing_code: Option<String>,
    pub status_requests: Option<bool>,
    pub flash: Option<bool>,
    pub encoding: Option<String>,
    pub express: Option<bool>,
    pub personalized: Option<bool>,
    pub src: Option<String>,
    pub recipient: Option<String>,
    pub recipient_country_code: Option<String>,
    pub recipient_type: Option<String>,
    pub number_of_parts: Option<i32>,
    /// NULL or "DONE".
    pub process_status: Option<String>,
    pub status_code: Option<String>,
    /// NULL or "SUC_ACC".
    pub status: Option<String>,
    pub number_schedule_ts: Option<GqlDateTime>,
    pub number_delivery_ts: Option<GqlDateTime>,
    pub number_status_ts: Option<GqlDateTime>,
    pub number_final_ts: Option<GqlDateTime>,
    /// Processing timestamp of the SMS. This is the timestamp used in the query filter.
    pub delivery_processed_ts: Option<GqlDateTime>,
    pub job_final_ts: Option<GqlDateTime>,
}

/// An inbound SMS usage record.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SmsInUdrReportRecord {
    pub sms_id: ID,
    pub correlated_job_id: Option<String>,
    pub correlated_tracking_id: Option<String>,
    /// Arrives right-padded with spaces, as in the vendor's example: trim it.
    pub tracking_id: Option<String>,
    pub correlated_sms_id: Option<String>,
    pub data_center: Option<String>,
    pub customer_id: Option<String>,
    pub correlated_service: Option<String>,
    pub correlated_service_account: Option<String>,
    pub billing_code: Option<String>,
    pub encoding: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub sender_country_code_iso3: Option<String>,
    pub recipient_country_code_iso3: Option<String>,
    pub keyword: Option<String>,
    pub number_of_parts: Option<i32>,
    pub plaintext_actions: Option<String>,
    pub message_content: Option<String>,
    /// The timestamp datePeriod filters on (inferred).
    pub received_ts: Option<GqlDateTime>,
}

/// A transactional e-mail usage record (one per message and recipient).
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TransactionalEmailUdrReportRecord {
    pub meta_id: ID,
    pub meta_version: Option<i32>,
    pub meta_creation_time: Option<GqlDateTime>,
    pub customer_id: Option<String>,
    pub meta_entry_interface: Option<String>,
    pub meta_processing_domain: Option<String>,
    pub meta_data_center: Option<String>,
    pub meta_environment: Option<String>,
    pub job_id: Option<String>,
    pub cost_center: Option<String>,
    pub user_id: Option<String>,
    pub campaign: Option<String>,
    pub usage_id: Option<String>,
    pub usage_type: Option<String>,
    /// The timestamp datePeriod filters on (inferred).
    pub usage_creation_time: Option<GqlDateTime>,
    pub usage_msg_from: Option<String>,
    pub usage_msg_from_domain: Option<String>,
    pub usage_msg_to: Option<String>,
    pub usage_msg_to_domain: Option<String>,
    pub usage_msg_size: Option<i32>,
    pub usage_size_unit: Option<String>,
    pub usage_status: Option<String>,
    pub usage_sub_status: Option<String>,
    pub usage_status_details: Option<String>,
    pub usage_status_code: Option<String>,
    pub usage_reference: Option<String>,
    pub usage_correlation_id: Option<String>,
}

/// A transactional e-mail event (open or click). GUESSED: the vendor documents no fields for
/// this report; these are the sandbox's invention until a real schema is available.
#[derive(SimpleObject, Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TransactionalEmailEventReportRecord {
    pub event_id: ID,
    /// metaId of the message the event belongs to.
    pub meta_id: Option<String>,
    pub customer_id: Option<String>,
    /// "OPEN" or "CLICK".
    pub event_type: Option<String>,
    /// The timestamp datePeriod filters on.
    pub event_ts: Option<GqlDateTime>,
    /// The clicked link (null for opens).
    pub url: Option<String>,
    pub user_agent: Option<String>,
}

const COUNTRIES: [(&str, &str, &str); 7] = [
    ("DE", "DEU", "+49"),
    ("CH", "CHE", "+41"),
    ("AT", "AUT", "+43"),
    ("FR", "FRA", "+33"),
    ("GB", "GBR", "+44"),
    ("US", "USA", "+1"),
    ("IT", "ITA", "+39"),
];
const DATA_CENTERS: [&str; 3] = ["DE1", "DE2", "CH1"];
const BILLING_CODES: [&str; 3] = ["CC-1001", "CC-2040", "MARKETING"];
const DOMAINS: [&str; 4] = [
    "example.com",
    "example.org",
    "mail.example.net",
    "kunde.example.de",
];
const FIRST: [&str; 8] = ["anna", "ben", "clara", "david", "elif", "felix", "greta", "hugo"];

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// `Some(value)` most of the time, `None` with probability `p_null`.
fn sometimes<T>(p_null: f64, value: T, rng: &mut ChaCha8Rng) -> Option<T> {
    (!rng.random_bool(p_null)).then_some(value)
}

/// A string field the vendor sometimes leaves null and sometimes empty.
fn text_or_blank(value: String, rng: &mut ChaCha8Rng) -> Option<String> {
    match rng.random_range(0..10) {
        0 => None,
        1 => Some(String::new()),
        _ => Some(value),
    }
}

fn phone(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    let mut number = prefix.to_string();
    for _ in 0..rng.random_range(8..11) {
        number.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    number
}

fn email(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}.{}@{}",
        pick(rng, &FIRST),
        rng.random_range(1..100),
        pick(rng, &DOMAINS)
    )
}

fn uuid_from(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

fn ts(at: DateTime<Utc>) -> Option<GqlDateTime> {
    Some(GqlDateTime(at))
}

fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

/// One record of `report` whose filter timestamp is `at`. `seq` is unique per (customer, day,
/// index) and makes the readable ids unique.
fn generate(
    report: RetarusReport,
    rng: &mut ChaCha8Rng,
    customer: &str,
    seq: &str,
    at: DateTime<Utc>,
) -> Value {
    let (country, iso3, prefix) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let value = match report {
        RetarusReport::FaxIn => {
            let pages = rng.random_range(1..13);
            let started = at - ms(rng.random_range(20_000..600_000));
            let ok = rng.random_bool(0.92);
            let number = phone(rng, prefix);
            serde_json::to_value(FaxInUdrReportRecord {
                fax_id: ID(format!("FI{seq}{customer}")),
                accounting_service: Some("FAXIN".into()),
                all_pages: Some(pages),
                archive_purge_at: sometimes(0.3, GqlDateTime(at + TimeDelta::days(90)), rng),
                archiving_status: sometimes(0.2, pick(rng, &["ARCHIVED", "NOT_ARCHIVED"]).to_string(), rng),
                baud_rate: Some(*[9600, 14400, 33600].get(rng.random_range(0..3)).unwrap_or(&14400)),
                billing_code: text_or_blank(pick(rng, &BILLING_CODES).to_string(), rng),
                call_connected_at: ts(started + ms(rng.random_range(500..4000))),
                called_country: Some(country.into()),
                called_cs_id: text_or_blank(number.clone(), rng),
                called_number: Some(number.clone()),
                called_number_display: Some(format!("{prefix} {}", &number[prefix.len()..])),
                calling_number: text_or_blank(phone(rng, "+49"), rng),
                calling_ts_id: text_or_blank(format!("ACME {}", rng.random_range(100..999)), rng),
                call_started_at: ts(started),
                confirmed_pages: Some(if ok { pages } else { rng.random_range(0..pages) }),
                customer_id: Some(customer.into()),
                delivery_recipients: Some(email(rng)),
                delivery_sender: Some("fax@retarus.example".into()),
                delivery_sender_user: text_or_blank("faxin".into(), rng),
                discarded_pages: Some(if ok { 0 } else { 1 }),
                doc_mime_type: Some(pick(rng, &["application/pdf", "image/tiff"]).into()),
                document_delivery_status: Some(if ok { "DELIVERED" } else { "FAILED" }.into()),
                fax_file_size: Some(pages * rng.random_range(20_000..90_000)),
                fax_transmit_status: Some(if ok { "OK" } else { "ERROR" }.into()),
                key_timestamp: ts(at),
                recipients_count: Some(rng.random_range(1..3)),
                resolution: Some(pick(rng, &["FINE", "STANDARD"]).into()),
                secondary_delivery_recipients: if rng.random_bool(0.8) {
                    Some(String::new())
                } else {
                    Some(email(rng))
                },
                virtual_pages_billed: Some(pages),
            })
        }
        RetarusReport::FaxOut => {
            let pages = rng.random_range(1..21);
            let status = pick(
                rng,
                &["OK", "OK", "OK", "OK", "OK", "OK", "BUSY", "NO_ANSWER", "NO_FAX"],
            );
            let ok = status == "OK";
            let attempts = if ok {
                rng.random_range(1..3)
            } else {
                rng.random_range(2..6)
            };
            let duration = if ok {
                pages * rng.random_range(9_000..20_000)
            } else {
                rng.random_range(0..30_000)
            };
            let ended = at - ms(rng.random_range(100..3_000));
            let connected = ended - ms(i64::from(duration));
            let invited = connected - ms(rng.random_range(1_000..15_000));
            let submitted = invited - ms(rng.random_range(2_000..600_000));
            let number = phone(rng, prefix);
            let transmitted = if ok { pages } else { 0 };
            serde_json::to_value(FaxOutUdrReportRecord {
                fax_id: ID(format!("FO{seq}{customer}")),
                job_id: Some(format!("FJ{seq}{customer}")),
                account_id: Some(format!("{customer}-01")),
                account_name: Some(format!("ACME {customer}")),
                account_server_id: Some(pick(rng, &["fx-de1-07", "fx-de2-03", "fx-ch1-01"]).into()),
                account_service: Some("FAX".into()),
                attempt_pages: Some(transmitted),
                attempt_seq_no: Some(attempts),
                baud_rate: Some(*[9600, 14400, 33600].get(rng.random_range(0..3)).unwrap_or(&14400)),
                billed_country: Some(country.into()),
                call_connected_at: if ok { ts(connected) } else { None },
                call_duration: Some(duration),
                called_country: Some(country.into()),
                called_cs_id: text_or_blank(number.clone(), rng),
                called_number: Some(number),
                called_zone: Some(
                    if country == "DE" {
                        "NATIONAL"
                    } else {
                        "INTERNATIONAL"
                    }
                    .into(),
                ),
                call_ended_at: ts(ended),
                calling_ts_id: text_or_blank(format!("ACME {customer}"), rng),
                call_invite_at: ts(invited),
                doc_pages: Some(pages),
                fax_customer_ref: text_or_blank(format!("INV-{}", rng.random_range(10_000..99_999)), rng),
                job_archive_purge_at: sometimes(0.3, GqlDateTime(at + TimeDelta::days(90)), rng),
                job_billing_code: text_or_blank(pick(rng, &BILLING_CODES).to_string(), rng),
                job_billing_info: text_or_blank("dept=finance".into(), rng),
                job_customer_id: Some(customer.into()),
                job_customer_ref: text_or_blank(format!("JOB-{}", rng.random_range(1000..9999)), rng),
                job_customer_resolution: Some(pick(rng, &["FINE", "STANDARD"]).into()),
                job_customer_start_fax_at: sometimes(0.7, GqlDateTime(submitted), rng),
                job_customer_tags: if rng.random_bool(0.7) {
                    Some(String::new())
                } else {
                    Some("batch,invoice".into())
                },
                job_express: Some(rng.random_bool(0.1)),
                job_personalized: Some(rng.random_bool(0.2)),
                job_submission_dc: Some(pick(rng, &DATA_CENTERS).into()),
                job_submitted_at: ts(submitted),
                key_timestamp: ts(at),
                last_attempt_ended_at: ts(ended),
                last_attempt_seq_no: Some(attempts),
                max_page_transmitted: Some(transmitted),
                processing_final_at: ts(at),
                status_code: Some(
                    match status {
                        "OK" => "0",
                        "BUSY" => "101",
                        "NO_ANSWER" => "102",
                        _ => "103",
                    }
                    .into(),
                ),
                status_name: Some(status.into()),
                status_reason: if ok {
                    Some(String::new())
                } else {
                    Some(format!("Line {}", status.to_lowercase().replace('_', " ")))
                },
                sum_call_durations: Some(duration + (attempts - 1) * rng.random_range(0..20_000)),
                sum_pages_transmitted: Some(transmitted),
                time_to_first_dial: Some(rng.random_range(800..60_000)),
                virtual_pages_billed: Some(if ok { pages } else { 0 }),
            })
        }
        RetarusReport::SmsOut => {
            let parts = rng.random_range(1..4);
            let done = rng.random_bool(0.9);
            let scheduled = at - ms(rng.random_range(2_000..120_000));
            let delivered = scheduled + ms(rng.random_range(500..20_000));
            let job = format!("SJ{seq}{customer}");
            serde_json::to_value(SmsOutUdrReportRecord {
                sms_id: ID(uuid_from(rng)),
                request_id: Some(uuid_from(rng)),
                job_id: Some(job),
                tracking_id: text_or_blank(
                    format!("T{}", rng.random_range(100_000_000u64..999_999_999)),
                    rng,
                ),
                reference: text_or_blank(format!("ORDER-{}", rng.random_range(1000..9999)), rng),
                recipient_reference: text_or_blank(format!("cust-{}", rng.random_range(1..5000)), rng),
                data_center: Some(pick(rng, &DATA_CENTERS).into()),
                customer_id: Some(customer.into()),
                service: Some("SMS".into()),
                service_account: Some(format!("{customer}-sms")),
                service_version: Some("4".into()),
                billing_code: text_or_blank(pick(rng, &BILLING_CODES).to_string(), rng),
                status_requests: Some(rng.random_bool(0.8)),
                flash: Some(rng.random_bool(0.02)),
                encoding: Some(pick(rng, &["STANDARD", "STANDARD", "UTF-16"]).into()),
                express: Some(rng.random_bool(0.1)),
                personalized: Some(rng.random_bool(0.3)),
                src: Some(pick(rng, &["ACME", "Retarus", "+4915112345678"]).into()),
                recipient: Some(phone(rng, prefix)),
                recipient_country_code: Some(country.into()),
                recipient_type: Some("MOBILE".into()),
                number_of_parts: Some(parts),
                process_status: done.then(|| "DONE".to_string()),
                status_code: Some(if done { "200" } else { "0" }.into()),
                status: done.then(|| "SUC_ACC".to_string()),
                number_schedule_ts: ts(scheduled),
                number_delivery_ts: if done { ts(delivered) } else { None },
                number_status_ts: if done { ts(delivered + ms(300)) } else { None },
                number_final_ts: if done { ts(at) } else { None },
                delivery_processed_ts: ts(at),
                job_final_ts: if done {
                    ts(at + ms(rng.random_range(0..5_000)))
                } else {
                    None
                },
            })
        }
        RetarusReport::SmsIn => {
            let correlated = rng.random_bool(0.4);
            let keyword = pick(rng, &["STOP", "INFO", "JA", "NEIN", ""]);
            let tracking = format!("{}", rng.random_range(10_000_000u64..99_999_999));
            serde_json::to_value(SmsInUdrReportRecord {
                sms_id: ID(uuid_from(rng)),
                correlated_job_id: correlated.then(|| format!("SJ{seq}{customer}")),
                correlated_tracking_id: if correlated { Some(tracking.clone()) } else { None },
                // The vendor's example shows trackingId right-padded with spaces.
                tracking_id: Some(format!("{tracking:<32}")),
                correlated_sms_id: if correlated { Some(uuid_from(rng)) } else { None },
                data_center: Some(pick(rng, &DATA_CENTERS).into()),
                customer_id: Some(customer.into()),
                correlated_service: correlated.then(|| "SMS".to_string()),
                correlated_service_account: correlated.then(|| format!("{customer}-sms")),
                billing_code: text_or_blank(pick(rng, &BILLING_CODES).to_string(), rng),
                encoding: Some(pick(rng, &["STANDARD", "UTF-16"]).into()),
                sender: Some(phone(rng, prefix)),
                recipient: Some(pick(rng, &["+4915112345678", "+41791234567", "88888"]).into()),
                sender_country_code_iso3: Some(iso3.into()),
                recipient_country_code_iso3: Some("DEU".into()),
                keyword: if keyword.is_empty() {
                    None
                } else {
                    Some(keyword.into())
                },
                number_of_parts: Some(1),
                plaintext_actions: text_or_blank(
                    if keyword == "STOP" {
                        "UNSUBSCRIBE"
                    } else {
                        "FORWARD_EMAIL"
                    }
                    .into(),
                    rng,
                ),
                message_content: Some(
                    format!(
                        "{keyword} {}",
                        pick(rng, &["Danke", "Bitte zurückrufen", "ok", "Termin bestätigt"])
                    )
                    .trim()
                    .to_string(),
                ),
                received_ts: ts(at),
            })
        }
        RetarusReport::TransactionalEmail => {
            let to = email(rng);
            let to_domain = to.split('@').nth(1).unwrap_or_default().to_string();
            let status = pick(
                rng,
                &[
                    "DELIVERED",
                    "DELIVERED",
                    "DELIVERED",
                    "DELIVERED",
                    "BOUNCED",
                    "DEFERRED",
                ],
            );
            serde_json::to_value(TransactionalEmailUdrReportRecord {
                meta_id: ID(uuid_from(rng)),
                meta_version: Some(rng.random_range(1..3)),
                meta_creation_time: ts(at - ms(rng.random_range(100..30_000))),
                customer_id: Some(customer.into()),
                meta_entry_interface: Some(pick(rng, &["REST", "SMTP"]).into()),
                meta_processing_domain: Some("mail.example.com".into()),
                meta_data_center: Some(pick(rng, &DATA_CENTERS).into()),
                meta_environment: Some("PROD".into()),
                job_id: Some(format!("TJ{seq}{customer}")),
                cost_center: text_or_blank(pick(rng, &BILLING_CODES).to_string(), rng),
                user_id: text_or_blank(format!("{customer}-api"), rng),
                campaign: text_or_blank(
                    pick(rng, &["welcome", "invoice", "password-reset"]).to_string(),
                    rng,
                ),
                usage_id: Some(uuid_from(rng)),
                usage_type: Some("EMAIL".into()),
                usage_creation_time: ts(at),
                usage_msg_from: Some("noreply@example.com".into()),
                usage_msg_from_domain: Some("example.com".into()),
                usage_msg_to: Some(to),
                usage_msg_to_domain: Some(to_domain),
                usage_msg_size: Some(rng.random_range(3..900)),
                usage_size_unit: Some("KB".into()),
                usage_status: Some(status.into()),
                usage_sub_status: if status == "DELIVERED" {
                    None
                } else {
                    Some(pick(rng, &["HARD", "SOFT"]).into())
                },
                usage_status_details: text_or_blank(
                    match status {
                        "DELIVERED" => "250 2.0.0 OK",
                        "BOUNCED" => "550 5.1.1 User unknown",
                        _ => "451 4.7.1 Try again later",
                    }
                    .into(),
                    rng,
                ),
                usage_status_code: Some(
                    match status {
                        "DELIVERED" => "250",
                        "BOUNCED" => "550",
                        _ => "451",
                    }
                    .into(),
                ),
                usage_reference: text_or_blank(format!("REF-{}", rng.random_range(1000..9999)), rng),
                usage_correlation_id: sometimes(0.5, uuid_from(rng), rng),
            })
        }
        RetarusReport::TransactionalEmailEvent => {
            let click = rng.random_bool(0.35);
            serde_json::to_value(TransactionalEmailEventReportRecord {
                event_id: ID(uuid_from(rng)),
                meta_id: Some(uuid_from(rng)),
                customer_id: Some(customer.into()),
                event_type: Some(if click { "CLICK" } else { "OPEN" }.into()),
                event_ts: ts(at),
                url: click.then(|| {
                    format!(
                        "https://www.example.com/{}",
                        pick(rng, &["offer", "account", "help"])
                    )
                }),
                user_agent: text_or_blank(
                    pick(rng, &["Mozilla/5.0 (Windows NT 10.0)", "Mozilla/5.0 (iPhone)"]).to_string(),
                    rng,
                ),
            })
        }
    };
    value.unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sandbox state whose last day is one second long, so thousands of records share
    /// milliseconds and the id tie-break is exercised.
    fn crowded() -> Shared {
        let anchor = NaiveDate::from_ymd_opt(2026, 3, 10)
            .and_then(|d| d.and_hms_opt(0, 0, 1))
            .map(|t| t.and_utc())
            .expect("valid anchor");
        Shared {
            seed: 7,
            anchor,
            history_days: 3,
            records_per_day: 1_500,
            clients: RetarusOptions::default().clients,
            token_lifetime: Duration::from_secs(300),
            max_page_size: None,
            edits: Edits::default(),
            tokens: Mutex::new(HashMap::new()),
            tokens_issued: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            graphql_calls: AtomicU64::new(0),
            token_endpoint_down: AtomicBool::new(false),
            day_index: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn the_paged_fast_path_serves_exactly_the_slices_of_the_window() {
        let shared = crowded();
        let at = |text: &str| gql::parse_instant(text).expect("instant");
        let windows = [
            (at("2026-03-07T00:00:00.000Z"), at("2026-03-11T00:00:00.000Z")),
            (at("2026-03-08T13:14:15.123Z"), at("2026-03-09T02:00:00.500Z")),
            (at("2026-03-10T00:00:00.250Z"), at("2026-03-10T00:00:00.750Z")),
            (at("2026-03-08T05:00:00.000Z"), at("2026-03-08T05:00:00.000Z")),
        ];
        for report in [RetarusReport::FaxOut, RetarusReport::SmsIn] {
            for (from, to) in windows {
                let window: Vec<Value> = shared
                    .window(report, "99999", from, to)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                for desc in [false, true] {
                    let mut expected = window.clone();
                    if desc {
                        expected.reverse();
                    }
                    for (skip, take) in [
                        (0, 10_000),
                        (0, 7),
                        (333, 1_000),
                        (1_499, 3),
                        (2_990, 100),
                        (9_000, 5),
                    ] {
                        let (page, total) = shared.page(report, "99999", from, to, desc, skip, take);
                        assert_eq!(total, expected.len(), "{report:?} {from}..{to}");
                        let slice: Vec<Value> = expected.iter().skip(skip).take(take).cloned().collect();
                        assert!(
                            page == slice,
                            "{report:?} {from}..{to} desc={desc} skip={skip} take={take}"
                        );
                    }
                }
            }
        }
        assert!(
            shared
                .page(
                    RetarusReport::FaxOut,
                    "12345",
                    windows[0].0,
                    windows[0].1,
                    false,
                    0,
                    10
                )
                .0
                .is_empty()
        );
    }

    /// A remembered answer is the same bytes as a freshly computed one, and edits bypass it.
    #[tokio::test]
    async fn cached_answers_equal_computed_ones_and_edits_bypass_the_cache() {
        let options = |cache| {
            let mut options = SandboxOptions::default();
            options.retarus.cache_responses = cache;
            options
        };
        let (plain, _g1) = start(&options(false)).await.expect("starts");
        let (cached, _g2) = start(&options(true)).await.expect("starts");
        let to = Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc();
        let body = json!({
            "query": "query($from: DateTime!, $to: DateTime!) { faxOutUdrReport(customerId: \"99999\", \
                      datePeriod: {fromIncluded: $from, toExcluded: $to}, size: 3) { pageIndex hasMoreElements \
                      content { faxId keyTimestamp statusName } } }",
            "variables": {"from": gql::format_instant(to - TimeDelta::days(3)), "to": gql::format_instant(to)},
        });
        let client = reqwest::Client::new();
        let fetch = |handle: RetarusHandle| {
            let (client, body) = (client.clone(), body.clone());
            async move {
                let token: Value = client
                    .post(&handle.token_url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", handle.client_id.as_str()),
                        ("client_secret", handle.client_secret.as_str()),
                        ("scope", "openid"),
                    ])
                    .send()
                    .await
                    .expect("token")
                    .json()
                    .await
                    .expect("token JSON");
                let response = client
                    .post(&handle.graphql_url)
                    .bearer_auth(token["access_token"].as_str().unwrap_or_default())
                    .json(&body)
                    .send()
                    .await
                    .expect("page");
                let kind = response.headers().get(header::CONTENT_TYPE).cloned();
                (kind, response.bytes().await.expect("bytes"))
            }
        };
        let expected = fetch(plain.clone()).await;
        assert_eq!(fetch(cached.clone()).await, expected);
        assert_eq!(fetch(cached.clone()).await, expected, "the remembered answer");
        let first: Value = serde_json::from_slice(&expected.1).expect("JSON");
        let id = first["data"]["faxOutUdrReport"]["content"][0]["faxId"]
            .as_str()
            .expect("an id");
        cached.edits.delete(id);
        plain.edits.delete(id);
        let edited = fetch(plain).await;
        assert_ne!(edited, expected);
        assert_eq!(fetch(cached).await, edited);
    }
}
