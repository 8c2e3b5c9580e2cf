//! Every dataset end to end: the sandbox upstreams through the real executor and auth into a
//! freshly migrated PostgreSQL. For each dataset the table must equal what the sandbox says the
//! scope and window hold (row count and a checksum over every column, each side canonicalised
//! on its own); a rerun must leave identical tables; upstream edits and deletions must show up
//! after re-extraction; and a window that fails part-way must leave the previous rows intact.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use reporting_etl::catalog::SourceKind;
use reporting_etl::config::Scope;
use reporting_etl::datasets::window::{Window, utc_midnight};
use reporting_etl::datasets::{LoadFigures, LoadRequest, ScopeTarget, Tuning};
use reporting_etl::executor::{CallContext, Executor, ExecutorOptions};
use reporting_etl::vendors;
use reporting_etl::vendors::{altrata, retarus, retently, roubler};
use sandbox::retarus::RetarusReport;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::TestDb;

const CUSTOMER: &str = "99999";
const COMPANY: &str = "789";

struct Harness {
    sandbox: Sandbox,
    db: TestDb,
    settings: Arc<reporting_etl::config::Settings>,
    exec: Executor,
    anchor: DateTime<Utc>,
    runs: AtomicI64,
    _config: tempfile::NamedTempFile,
}

fn config(sandbox: &Sandbox, db_url: &str) -> String {
    let (retarus, roubler, altrata, retently) = (
        &sandbox.retarus,
        &sandbox.roubler,
        &sandbox.altrata,
        &sandbox.retently,
    );
    format!(
        r#"
[database]
url = "{db_url}"
pool_size = 4

[sources.retarus]
kind = "retarus"
allow_http = true
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
customer_ids = {:?}
rate_limit = {{ calls = 1000, per_ms = 1000 }}

[sources.roubler]
kind = "roubler"
allow_http = true
authorize_url = "{}"
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
rate_limit = {{ calls = 1000, per_ms = 1000 }}

[sources.altrata]
kind = "altrata"
allow_http = true
token_url = "{}"
events_url = "{}"
profile_url = "{}"
username = "{}"
password = "{}"
api_key = "{}"
watch_ids = ["1-per-1", "1-per-2", "1-org-1"]
rate_limit = {{ calls = 1000, per_ms = 1000 }}

[sources.retently]
kind = "retently"
allow_http = true
base_url = "{}"
authorize_url = "{}"
token_url = "{}"
api_key = "{}"
rate_limit = {{ calls = 1000, per_ms = 1000 }}
"#,
        retarus.token_url,
        retarus.graphql_url,
        retarus.client_id,
        retarus.client_secret,
        retarus.customer_ids,
        roubler.auth_url,
        roubler.token_url,
        roubler.graphql_url,
        roubler.client_id,
        roubler.client_secret,
        altrata.token_url,
        altrata.events_url,
        altrata.profile_url,
        altrata.username,
        altrata.password,
        altrata.api_key,
        retently.base_url,
        retently.authorize_url,
        retently.token_url,
        retently.api_key,
    )
}

impl Harness {
    async fn start() -> Harness {
        let mut options = SandboxOptions::default();
        let anchor = Utc::now().duration_trunc(chrono::TimeDelta::hours(1)).unwrap();
        options.anchor = anchor;
        options.history_days = 40;
        // The sandbox enforces Altrata's 2 requests per second; these tests are about data.
        options.altrata.rate_per_sec = 1000.0;
        options.altrata.burst = 1000;
        let sandbox = Sandbox::start(options).await.unwrap();
        let db = TestDb::new().await;
        let (settings, file) = support::load_config(&config(&sandbox, &db.url));
        // Roubler needs a human consent once; seed its refresh chain as `auth login` would.
        let grant = sandbox.roubler.grant_tokens();
        support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
        let settings = Arc::new(settings);
        let auth = reporting_etl::auth::build(&settings, db.pool.clone());
        let exec = Executor::with_options(
            settings.clone(),
            auth,
            ExecutorOptions {
                max_attempts: 2,
                backoff_base: StdDuration::from_millis(5),
                backoff_max: StdDuration::from_millis(20),
                ..ExecutorOptions::default()
            },
        )
        .unwrap();
        Harness {
            sandbox,
            db,
            settings,
            exec,
            anchor,
            runs: AtomicI64::new(1),
            _config: file,
        }
    }

    async fn load(
        &self,
        kind: SourceKind,
        dataset: &str,
        scope: &ScopeTarget,
        window: Option<Window>,
        tuning: Tuning,
    ) -> anyhow::Result<LoadFigures> {
        let dataset = vendors::CATALOG.find(kind, dataset).unwrap();
        let source_name = kind.as_str();
        let source = &self.settings.sources[source_name];
        let call = CallContext::new(source_name, dataset.name);
        let request = LoadRequest {
            source_name,
            source,
            dataset,
            scope,
            window,
            run_id: self.runs.fetch_add(1, Ordering::SeqCst),
            call: &call,
        };
        vendors::load_window(&self.exec, &self.db.pool, &request, &tuning).await
    }

    /// Every row of `table` (optionally filtered), without the load bookkeeping columns.
    async fn rows(&self, table: &str, filter: &str) -> Vec<Value> {
        let sql = format!("SELECT to_jsonb(t) - '_run_id' - '_loaded_at' FROM {table} t WHERE true {filter}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    async fn kinds(&self, table: &str) -> Vec<(String, String)> {
        let (schema, name) = table.split_once('.').unwrap();
        sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 AND column_name NOT IN ('_run_id', '_loaded_at')
             ORDER BY ordinal_position",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

fn small() -> Tuning {
    Tuning::default()
        .with_flush_rows(2)
        .with_page_size(retarus::KIND, 7)
        .with_page_size(altrata::KIND, 3)
        .with_page_size(retently::KIND, 9)
}

/// Where an expected column's value comes from, when not the camelCase field of the same name.
enum Src {
    Ptr(&'static str),
    Const(Value),
}

fn camel(column: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in column.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn instant_millis(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis().to_string())
}

/// Strings that are instants become epoch milliseconds, so `…00.000Z` and `…00+00:00` agree.
fn canon_json(value: &Value) -> Value {
    match value {
        Value::String(s) => instant_millis(s)
            .map(Value::String)
            .unwrap_or_else(|| value.clone()),
        Value::Array(items) => Value::Array(items.iter().map(canon_json).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), canon_json(v))).collect()),
        other => other.clone(),
    }
}

fn canon(data_type: &str, value: &Value) -> String {
    if value.is_null() {
        return "∅".into();
    }
    match data_type {
        "text" => match value {
            Value::String(s) => s.trim().to_owned(),
            other => other.to_string(),
        },
        "integer" | "bigint" | "numeric" | "double precision" => {
            let number = value
                .as_f64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(f64::NAN);
            format!("{number}")
        }
        "boolean" => value.to_string(),
        "timestamp with time zone" => value
            .as_str()
            .and_then(instant_millis)
            .unwrap_or_else(|| format!("bad:{value}")),
        "date" => value.as_str().unwrap_or_default().to_owned(),
        "jsonb" => canon_json(value).to_string(),
        other => panic!("unexpected column type {other}"),
    }
}

fn render(kinds: &[(String, String)], get: impl Fn(&str) -> Value) -> String {
    kinds
        .iter()
        .map(|(column, kind)| format!("{column}={}", canon(kind, &get(column))))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn digest(rows: &[String]) -> String {
    let mut hasher = Sha256::new();
    for row in rows {
        hasher.update(row.as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}

/// Asserts `table` (filtered) holds exactly `expected` (sandbox records) for source `source`.
async fn assert_table(
    h: &Harness,
    table: &str,
    filter: &str,
    source: &str,
    expected: &[Value],
    overrides: &[(&str, Src)],
) {
    let kinds = h.kinds(table).await;
    let mut actual: Vec<String> = h
        .rows(table, filter)
        .await
        .iter()
        .map(|row| render(&kinds, |c| row.get(c).cloned().unwrap_or(Value::Null)))
        .collect();
    let overrides: BTreeMap<&str, &Src> = overrides.iter().map(|(c, s)| (*c, s)).collect();
    let mut wanted: Vec<String> = expected
        .iter()
        .map(|record| {
            render(&kinds, |column| {
                if column == "source" {
                    return json!(source);
                }
                match overrides.get(column) {
                    Some(Src::Const(v)) => v.clone(),
                    Some(Src::Ptr(p)) => record.pointer(p).cloned().unwrap_or(Value::Null),
                    None => record.get(camel(column)).cloned().unwrap_or(Value::Null),
                }
            })
        })
        .collect();
    actual.sort();
    wanted.sort();
    assert!(!wanted.is_empty(), "{table}: the test window holds no records");
    assert_eq!(actual.len(), wanted.len(), "{table}: row count");
    if digest(&actual) != digest(&wanted) {
        let first = actual.iter().zip(&wanted).find(|(a, w)| a != w);
        panic!(
            "{table}: checksum differs; first difference:\n table:   {:?}\n sandbox: {:?}",
            first.map(|f| f.0),
            first.map(|f| f.1)
        );
    }
}

fn retarus_window(h: &Harness) -> Window {
    Window::new(h.anchor - Duration::days(6), h.anchor - Duration::days(1))
}

fn report(name: &str) -> RetarusReport {
    match name {
        "fax_in_udr" => RetarusReport::FaxIn,
        "fax_out_udr" => RetarusReport::FaxOut,
        "sms_in_udr" => RetarusReport::SmsIn,
        "sms_out_udr" => RetarusReport::SmsOut,
        _ => RetarusReport::TransactionalEmail,
    }
}

fn retarus_overrides(name: &str) -> Vec<(&'static str, Src)> {
    let mut o = vec![
        ("customer_id", Src::Const(json!(CUSTOMER))),
        ("record_customer_id", Src::Ptr("/customerId")),
    ];
    if name == "fax_out_udr" {
        o.push(("call_duration_ms", Src::Ptr("/callDuration")));
        o.push(("sum_call_durations_ms", Src::Ptr("/sumCallDurations")));
        o.push(("time_to_first_dial_ms", Src::Ptr("/timeToFirstDial")));
    }
    o
}

async fn check_retarus(h: &Harness, name: &str) {
    let window = retarus_window(h);
    let expected = h
        .sandbox
        .retarus
        .records(report(name), CUSTOMER, window.start, window.end);
    assert_table(
        h,
        &format!("retarus.{name}"),
        "",
        "retarus",
        &expected,
        &retarus_overrides(name),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retarus_report_loads_exactly_the_windows_records_over_several_pages() {
    let h = Harness::start().await;
    let scope = ScopeTarget::Customer(CUSTOMER.into());
    for name in [
        "fax_in_udr",
        "fax_out_udr",
        "sms_in_udr",
        "sms_out_udr",
        "transactional_email_udr",
    ] {
        let figures = h
            .load(retarus::KIND, name, &scope, Some(retarus_window(&h)), small())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(figures.pages >= 3, "{name}: paged ({} pages)", figures.pages);
        check_retarus(&h, name).await;
        let expected = h.sandbox.retarus.records(
            report(name),
            CUSTOMER,
            retarus_window(&h).start,
            retarus_window(&h).end,
        );
        assert_eq!(figures.rows, expected.len() as i64, "{name}: rows reported");
    }
    // Padded tracking ids arrive trimmed.
    let padded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM retarus.sms_in_udr WHERE tracking_id <> trim(tracking_id)")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(padded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_retarus_window_leaves_an_identical_table_and_other_windows_untouched() {
    let h = Harness::start().await;
    let scope = ScopeTarget::Customer(CUSTOMER.into());
    let earlier = Window::new(h.anchor - Duration::days(12), h.anchor - Duration::days(6));
    h.load(retarus::KIND, "fax_out_udr", &scope, Some(earlier), small())
        .await
        .unwrap();
    h.load(
        retarus::KIND,
        "fax_out_udr",
        &scope,
        Some(retarus_window(&h)),
        small(),
    )
    .await
    .unwrap();
    let before = h.rows("retarus.fax_out_udr", "ORDER BY fax_id").await;
    let again = h
        .load(
            retarus::KIND,
            "fax_out_udr",
            &scope,
            Some(retarus_window(&h)),
            Tuning::default(),
        )
        .await
        .unwrap();
    let after = h.rows("retarus.fax_out_udr", "ORDER BY fax_id").await;
    assert_eq!(before, after);
    let expected = h.sandbox.retarus.records(
        RetarusReport::FaxOut,
        CUSTOMER,
        retarus_window(&h).start,
        retarus_window(&h).end,
    );
    assert_eq!(again.rows, expected.len() as i64);
    let both = h.sandbox.retarus.records(
        RetarusReport::FaxOut,
        CUSTOMER,
        earlier.start,
        retarus_window(&h).end,
    );
    assert_table(
        &h,
        "retarus.fax_out_udr",
        "",
        "retarus",
        &both,
        &retarus_overrides("fax_out_udr"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retarus_record_changed_or_deleted_upstream_is_updated_or_removed_on_reextraction() {
    let h = Harness::start().await;
    let scope = ScopeTarget::Customer(CUSTOMER.into());
    let window = retarus_window(&h);
    h.load(retarus::KIND, "fax_out_udr", &scope, Some(window), small())
        .await
        .unwrap();
    let records = h
        .sandbox
        .retarus
        .records(RetarusReport::FaxOut, CUSTOMER, window.start, window.end);
    let changed = records[3]["faxId"].as_str().unwrap().to_owned();
    let deleted = records[10]["faxId"].as_str().unwrap().to_owned();
    h.sandbox
        .retarus
        .edits
        .change(&changed, "statusName", json!("CHANGED"));
    h.sandbox.retarus.edits.delete(&deleted);
    h.load(retarus::KIND, "fax_out_udr", &scope, Some(window), small())
        .await
        .unwrap();
    check_retarus(&h, "fax_out_udr").await;
    let status: String = sqlx::query_scalar("SELECT status_name FROM retarus.fax_out_udr WHERE fax_id = $1")
        .bind(&changed)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "CHANGED");
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM retarus.fax_out_udr WHERE fax_id = $1")
        .bind(&deleted)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(gone, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retarus_window_failing_part_way_leaves_the_previous_rows_intact() {
    let h = Harness::start().await;
    let scope = ScopeTarget::Customer(CUSTOMER.into());
    let window = retarus_window(&h);
    h.load(retarus::KIND, "fax_out_udr", &scope, Some(window), small())
        .await
        .unwrap();
    let before = h.rows("retarus.fax_out_udr", "ORDER BY fax_id").await;
    // Upstream changes that must NOT become visible, since the reload will fail.
    let records = h
        .sandbox
        .retarus
        .records(RetarusReport::FaxOut, CUSTOMER, window.start, window.end);
    h.sandbox
        .retarus
        .edits
        .delete(records[0]["faxId"].as_str().unwrap());
    // Two pages come through, then the third fails on both of the executor's attempts.
    let base = h.sandbox.retarus.graphql_calls();
    let failure = || sandbox::faults::RawAnswer::new(500, "upstream broke");
    h.sandbox
        .retarus
        .faults
        .script_after(2, vec![failure(), failure()]);
    let error = h
        .load(retarus::KIND, "fax_out_udr", &scope, Some(window), small())
        .await
        .expect_err("the reload fails");
    assert_eq!(h.sandbox.retarus.faults.scripted_remaining(), 0);
    assert_eq!(
        h.sandbox.retarus.graphql_calls(),
        base + 4,
        "two pages, then two attempts at the third"
    );
    let text = format!("{error:#}");
    assert!(
        text.contains("fetching page")
            && text.contains("retarus.fax_out_udr")
            && text.contains("customer 99999"),
        "{text}"
    );
    assert!(
        text.contains("fetching page 3 of retarus.fax_out_udr"),
        "failed on the third page: {text}"
    );
    assert_eq!(h.rows("retarus.fax_out_udr", "ORDER BY fax_id").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_discovered_per_vendor() {
    let h = Harness::start().await;
    let call = CallContext::new("roubler", "location_sales");
    let sales = roubler::datasets::LOCATION_SALES.info();
    let scopes = vendors::discover_scopes(
        &h.exec,
        &call,
        "roubler",
        &h.settings.sources["roubler"],
        sales,
        &Scope::All,
    )
    .await
    .unwrap();
    let expected: Vec<(String, String)> = h
        .sandbox
        .roubler
        .locations(COMPANY)
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["timeZone"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let found: Vec<(String, String)> = scopes
        .iter()
        .map(|s| match s {
            ScopeTarget::Location {
                id,
                time_zone,
                company,
            } => {
                assert_eq!(company, COMPANY);
                (id.clone(), time_zone.name().to_owned())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(found, expected);
    let employees = roubler::datasets::EMPLOYEES.info();
    let scopes = vendors::discover_scopes(
        &h.exec,
        &call,
        "roubler",
        &h.settings.sources["roubler"],
        employees,
        &Scope::All,
    )
    .await
    .unwrap();
    assert_eq!(scopes, vec![ScopeTarget::Company(COMPANY.into())]);
    let fax = retarus::datasets::FAX_IN_UDR.info();
    let scopes = vendors::discover_scopes(
        &h.exec,
        &call,
        "retarus",
        &h.settings.sources["retarus"],
        fax,
        &Scope::All,
    )
    .await
    .unwrap();
    assert_eq!(
        scopes.iter().map(|s| s.key()).collect::<Vec<_>>(),
        h.sandbox.retarus.customer_ids
    );
    let events = altrata::datasets::EVENTS.info();
    let scopes = vendors::discover_scopes(
        &h.exec,
        &call,
        "altrata",
        &h.settings.sources["altrata"],
        events,
        &Scope::All,
    )
    .await
    .unwrap();
    assert_eq!(
        scopes,
        vec![ScopeTarget::WatchList(vec![
            "1-per-1".into(),
            "1-per-2".into(),
            "1-org-1".into()
        ])]
    );
}

async fn location_scopes(h: &Harness) -> Vec<ScopeTarget> {
    let call = CallContext::new("roubler", "location_sales");
    let sales = roubler::datasets::LOCATION_SALES.info();
    vendors::discover_scopes(
        &h.exec,
        &call,
        "roubler",
        &h.settings.sources["roubler"],
        sales,
        &Scope::All,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roubler_company_snapshots_load_every_location_and_employee_terminated_ones_included() {
    let h = Harness::start().await;
    let scope = ScopeTarget::Company(COMPANY.into());
    h.load(roubler::KIND, "locations", &scope, None, Tuning::default())
        .await
        .unwrap();
    h.load(roubler::KIND, "employees", &scope, None, Tuning::default())
        .await
        .unwrap();
    let company = [("company_id", Src::Const(json!(COMPANY)))];
    let mut location_overrides = vec![("location_id", Src::Ptr("/id"))];
    location_overrides.extend(company.iter().map(|(c, _)| (*c, Src::Const(json!(COMPANY)))));
    assert_table(
        &h,
        "roubler.locations",
        "",
        "roubler",
        &h.sandbox.roubler.locations(COMPANY),
        &location_overrides,
    )
    .await;
    let employee_overrides = [
        ("company_id", Src::Const(json!(COMPANY))),
        ("employee_id", Src::Ptr("/id")),
        ("person_mobile", Src::Ptr("/person/mobile")),
        ("person_email", Src::Ptr("/person/email")),
        ("person_date_of_birth", Src::Ptr("/person/dateOfBirth")),
        ("location_id", Src::Ptr("/location/id")),
        ("location_name", Src::Ptr("/location/name")),
        ("position_id", Src::Ptr("/position/id")),
        ("position_name", Src::Ptr("/position/name")),
    ];
    let employees = h.sandbox.roubler.employees(COMPANY);
    assert_table(
        &h,
        "roubler.employees",
        "",
        "roubler",
        &employees,
        &employee_overrides,
    )
    .await;
    let terminated: i64 =
        sqlx::query_scalar("SELECT count(*) FROM roubler.employees WHERE status = 'Terminated'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert!(terminated > 0);
    // An employee removed upstream disappears from the next snapshot; a change shows up.
    let gone = employees[0]["id"].as_str().unwrap().to_owned();
    let renamed = employees[1]["id"].as_str().unwrap().to_owned();
    h.sandbox.roubler.edits.delete(&gone);
    h.sandbox
        .roubler
        .edits
        .change(&renamed, "fullName", json!("Renamed Person"));
    h.load(roubler::KIND, "employees", &scope, None, Tuning::default())
        .await
        .unwrap();
    assert_table(
        &h,
        "roubler.employees",
        "",
        "roubler",
        &h.sandbox.roubler.employees(COMPANY),
        &employee_overrides,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roubler_sales_land_on_each_locations_local_days_and_reruns_are_identical() {
    let h = Harness::start().await;
    let today = h.anchor.date_naive();
    let window = Window::new(
        utc_midnight(today - Duration::days(12)),
        utc_midnight(today - Duration::days(5)),
    );
    let (first, last) = window.dates();
    let scopes = location_scopes(&h).await;
    assert!(scopes.len() >= 2);
    for scope in &scopes {
        let ScopeTarget::Location { id, time_zone, .. } = scope else {
            unreachable!()
        };
        let figures = h
            .load(
                roubler::KIND,
                "location_sales",
                scope,
                Some(window),
                Tuning::default(),
            )
            .await
            .unwrap();
        assert_eq!(figures.rows, (last - first).num_days());
        // Independent of the loader's arithmetic: every day the location has, kept by date.
        let expected: Vec<Value> = h
            .sandbox
            .roubler
            .location_sales(id, h.anchor - Duration::days(60), h.anchor + Duration::days(2))
            .into_iter()
            .filter(|s| {
                let d = NaiveDate::parse_from_str(s["day"].as_str().unwrap(), "%Y-%m-%d").unwrap();
                d >= first && d < last
            })
            .collect();
        let overrides = [
            ("location_id", Src::Const(json!(id))),
            ("company_id", Src::Const(json!(COMPANY))),
            ("time_zone", Src::Const(json!(time_zone.name()))),
        ];
        assert_table(
            &h,
            "roubler.location_sales",
            &format!("AND location_id = '{id}'"),
            "roubler",
            &expected,
            &overrides,
        )
        .await;
    }
    let before = h
        .rows("roubler.location_sales", "ORDER BY location_id, day")
        .await;
    for scope in &scopes {
        h.load(
            roubler::KIND,
            "location_sales",
            scope,
            Some(window),
            Tuning::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        h.rows("roubler.location_sales", "ORDER BY location_id, day")
            .await,
        before
    );
}

fn work_overrides(id_column: &'static str, location: &str) -> Vec<(&'static str, Src)> {
    vec![
        ("location_id", Src::Const(json!(location))),
        (id_column, Src::Ptr("/id")),
        ("company_id", Src::Const(json!(COMPANY))),
        ("work_type_id", Src::Ptr("/workType/id")),
        ("work_type_name", Src::Ptr("/workType/name")),
        ("work_type_applied_from_id", Src::Ptr("/workType/appliedFromId")),
        ("employee_id", Src::Ptr("/employee/id")),
        ("employee_name", Src::Ptr("/employee/fullName")),
        ("position_id", Src::Ptr("/position/id")),
        ("position_text", Src::Ptr("/position/text")),
        ("location_name", Src::Ptr("/location/name")),
        ("location_time_zone", Src::Ptr("/location/timezone")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roubler_timesheets_and_shifts_load_by_start_time_and_follow_upstream_edits() {
    let h = Harness::start().await;
    let window = Window::new(h.anchor - Duration::days(9), h.anchor - Duration::days(2));
    let scopes = location_scopes(&h).await;
    let scope = &scopes[0];
    let ScopeTarget::Location { id, .. } = scope else {
        unreachable!()
    };
    for (name, id_column) in [("timesheets", "timesheet_id"), ("shifts", "shift_id")] {
        h.load(roubler::KIND, name, scope, Some(window), Tuning::default())
            .await
            .unwrap();
        let expected = if name == "timesheets" {
            h.sandbox.roubler.timesheets(id, window.start, window.end)
        } else {
            h.sandbox.roubler.shifts(id, window.start, window.end)
        };
        assert_table(
            &h,
            &format!("roubler.{name}"),
            "",
            "roubler",
            &expected,
            &work_overrides(id_column, id),
        )
        .await;
    }
    let sheets = h.sandbox.roubler.timesheets(id, window.start, window.end);
    h.sandbox.roubler.edits.delete(sheets[0]["id"].as_str().unwrap());
    h.sandbox
        .roubler
        .edits
        .change(sheets[1]["id"].as_str().unwrap(), "status", json!("rejected"));
    h.load(
        roubler::KIND,
        "timesheets",
        scope,
        Some(window),
        Tuning::default(),
    )
    .await
    .unwrap();
    let expected = h.sandbox.roubler.timesheets(id, window.start, window.end);
    assert_eq!(expected.len() + 1, sheets.len());
    assert_table(
        &h,
        "roubler.timesheets",
        "",
        "roubler",
        &expected,
        &work_overrides("timesheet_id", id),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altrata_events_and_profiles_of_the_watch_list_load_with_cursor_paging() {
    let h = Harness::start().await;
    let ids = vec!["1-per-1".to_owned(), "1-per-2".to_owned(), "1-org-1".to_owned()];
    let scope = ScopeTarget::WatchList(ids.clone());
    let figures = h
        .load(altrata::KIND, "events", &scope, None, small())
        .await
        .unwrap();
    let mut expected = Vec::new();
    for id in &ids {
        for mut event in h.sandbox.altrata.events(id) {
            event["subjectId"] = json!(id);
            expected.push(event);
        }
    }
    assert!(figures.pages as usize > ids.len(), "cursor-paged");
    let overrides = [
        ("event_date", Src::Ptr("/eventDateInfo/date")),
        ("event_date_precision", Src::Ptr("/eventDateInfo/datePrecision")),
        ("event_display_date", Src::Ptr("/eventDateInfo/displayDate")),
        ("announcement_date", Src::Ptr("/announcementDateInfo/date")),
        (
            "announcement_date_precision",
            Src::Ptr("/announcementDateInfo/datePrecision"),
        ),
        (
            "announcement_display_date",
            Src::Ptr("/announcementDateInfo/displayDate"),
        ),
    ];
    assert_table(&h, "altrata.events", "", "altrata", &expected, &overrides).await;
    let figures = h
        .load(altrata::KIND, "profiles", &scope, None, small())
        .await
        .unwrap();
    assert!(
        figures
            .warnings
            .iter()
            .any(|w| w.to_lowercase().contains("deprecat")),
        "{:?}",
        figures.warnings
    );
    let mut profiles = Vec::new();
    for id in &ids {
        let mut p = h
            .sandbox
            .altrata
            .person(id)
            .or_else(|| h.sandbox.altrata.organization(id))
            .unwrap();
        let person = id.starts_with("1-per-");
        p["kind"] = json!(if person { "person" } else { "organization" });
        if person {
            p["name"] = p["fullName"].clone();
        }
        profiles.push(p);
    }
    assert_table(&h, "altrata.profiles", "", "altrata", &profiles, &[]).await;
    // An id dropped from the watch-list disappears with the next snapshot.
    let shorter = ScopeTarget::WatchList(vec!["1-per-1".into()]);
    h.load(altrata::KIND, "profiles", &shorter, None, small())
        .await
        .unwrap();
    assert_table(&h, "altrata.profiles", "", "altrata", &profiles[..1], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retently_lists_and_the_daily_nps_snapshot_load_and_follow_upstream_edits() {
    let h = Harness::start().await;
    let window = Window::new(h.anchor - Duration::days(30), h.anchor - Duration::days(3));
    let in_window = |records: Vec<Value>| -> Vec<Value> {
        records
            .into_iter()
            .filter(|r| {
                let at = DateTime::parse_from_rfc3339(r["createdDate"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc);
                at >= window.start && at < window.end
            })
            .collect()
    };
    let account = ScopeTarget::Account;
    h.load(retently::KIND, "customers", &account, Some(window), small())
        .await
        .unwrap();
    let customers = in_window(h.sandbox.retently.customers(None, None));
    assert_table(
        &h,
        "retently.customers",
        "",
        "retently",
        &customers,
        &[("customer_id", Src::Ptr("/id"))],
    )
    .await;
    let figures = h
        .load(retently::KIND, "feedback", &account, Some(window), small())
        .await
        .unwrap();
    assert!(figures.pages > 2);
    let feedback = in_window(h.sandbox.retently.feedback(None, None));
    assert_table(
        &h,
        "retently.feedback",
        "",
        "retently",
        &feedback,
        &[("feedback_id", Src::Ptr("/id"))],
    )
    .await;
    h.load(retently::KIND, "companies", &account, None, small())
        .await
        .unwrap();
    let company_overrides = [
        ("company_id", Src::Ptr("/id")),
        ("nps", Src::Ptr("/cxMetrics/NPS")),
        ("csat", Src::Ptr("/cxMetrics/CSAT")),
        ("ces", Src::Ptr("/cxMetrics/CES")),
        ("star", Src::Ptr("/cxMetrics/STAR")),
    ];
    assert_table(
        &h,
        "retently.companies",
        "",
        "retently",
        &h.sandbox.retently.companies(),
        &company_overrides,
    )
    .await;
    h.load(retently::KIND, "campaigns", &account, None, small())
        .await
        .unwrap();
    let campaign_overrides = [
        ("campaign_id", Src::Ptr("/id")),
        ("campaign_type", Src::Ptr("/type")),
    ];
    assert_table(
        &h,
        "retently.campaigns",
        "",
        "retently",
        &h.sandbox.retently.campaigns(),
        &campaign_overrides,
    )
    .await;
    h.load(retently::KIND, "nps_score", &account, None, small())
        .await
        .unwrap();
    h.load(retently::KIND, "nps_score", &account, None, small())
        .await
        .unwrap();
    let nps = [("day", Src::Const(json!(Utc::now().date_naive().to_string())))];
    assert_table(
        &h,
        "retently.nps_score",
        "",
        "retently",
        &[h.sandbox.retently.nps_score()],
        &nps,
    )
    .await;
    // Edits: a response deleted and one changed upstream.
    h.sandbox
        .retently
        .edits
        .delete(feedback[0]["id"].as_str().unwrap());
    h.sandbox
        .retently
        .edits
        .change(feedback[1]["id"].as_str().unwrap(), "comment", json!("changed"));
    h.load(retently::KIND, "feedback", &account, Some(window), small())
        .await
        .unwrap();
    let feedback = in_window(h.sandbox.retently.feedback(None, None));
    assert_table(
        &h,
        "retently.feedback",
        "",
        "retently",
        &feedback,
        &[("feedback_id", Src::Ptr("/id"))],
    )
    .await;
}
