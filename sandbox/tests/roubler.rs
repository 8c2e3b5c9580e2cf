//! The Roubler stand-in over loopback HTTP: the Hydra-like authorization-code flow with
//! single-use refresh tokens, the GraphQL API's auth and scoping headers, local-day sales across
//! DST changes, and the rate limit in both modes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use sandbox::roubler::{RateLimitMode, RoublerHandle, RoublerOptions};
use sandbox::{SandboxOptions, ServerGuard};
use serde_json::{Value, json};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn options(roubler: RoublerOptions) -> SandboxOptions {
    SandboxOptions {
        seed: 7,
        // Ten days after Sydney left DST (2025-04-06) and Berlin entered it (2025-03-30).
        anchor: Utc.with_ymd_and_hms(2025, 4, 10, 12, 0, 0).unwrap(),
        history_days: 30,
        records_per_day: 3,
        roubler,
        ..SandboxOptions::default()
    }
}

async fn start(roubler: RoublerOptions) -> (RoublerHandle, ServerGuard) {
    sandbox::roubler::start(&options(roubler))
        .await
        .expect("roubler starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Runs the authorize step and returns the code from the redirect.
async fn authorize(handle: &RoublerHandle, extra: &[(&str, &str)]) -> String {
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", handle.client_id.as_str()),
        ("redirect_uri", "http://localhost/callback"),
        ("scope", "offline_access"),
        ("state", "state-123456789"),
    ];
    query.extend_from_slice(extra);
    let response = client()
        .get(&handle.auth_url)
        .query(&query)
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let url = url::Url::parse(&location).expect("redirect url");
    assert!(location.starts_with("http://localhost/callback?"), "{location}");
    let pairs: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs.get("state").map(String::as_str), Some("state-123456789"));
    pairs.get("code").cloned().expect("a code in the redirect")
}

/// POSTs a form to the token endpoint with HTTP Basic client authentication.
async fn token(handle: &RoublerHandle, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client()
        .post(&handle.token_url)
        .basic_auth(&handle.client_id, Some(&handle.client_secret))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    (status, response.json().await.expect("token json"))
}

async fn exchange(handle: &RoublerHandle, code: &str) -> (StatusCode, Value) {
    token(
        handle,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://localhost/callback"),
        ],
    )
    .await
}

async fn refresh(handle: &RoublerHandle, refresh_token: &str) -> (StatusCode, Value) {
    token(
        handle,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
    )
    .await
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

/// One GraphQL call; returns status, headers and JSON body.
async fn graphql(
    handle: &RoublerHandle,
    token: &str,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .post(&handle.graphql_url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("graphql call");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("graphql json"))
}

fn number(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    headers[name]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("integer header")
}

const VIEWER: &str =
    "{ viewer { user { id fullName email } employees { company { id name } location { id name } } } }";

#[tokio::test]
async fn a_code_exchange_then_a_refresh_returns_a_new_refresh_token() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let code = authorize(&handle, &[]).await;
    let (status, first) = exchange(&handle, &code).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["token_type"], "bearer");
    assert_eq!(first["expires_in"], 3600);
    assert_eq!(first["scope"], "offline_access");

    let (status, second) = refresh(&handle, text(&first, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);

    let (status, _, body) = graphql(&handle, text(&second, "access_token"), &[], VIEWER, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["viewer"]["user"]["fullName"], "API User");
    let counts = handle.counts();
    assert_eq!(
        (counts.codes_issued, counts.token_grants, counts.refreshes),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn reusing_a_used_refresh_token_is_rejected_and_revokes_the_whole_chain() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let (_, first) = exchange(&handle, &authorize(&handle, &[]).await).await;
    let (_, second) = refresh(&handle, text(&first, "refresh_token")).await;
    let current_access = text(&second, "access_token");
    let (status, _, _) = graphql(&handle, current_access, &[], VIEWER, json!({})).await;
    assert_eq!(status, StatusCode::OK);

    let (status, reuse) = refresh(&handle, text(&first, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse["error"], "invalid_grant");
    assert!(
        text(&reuse, "error_description").contains("has been used"),
        "{reuse}"
    );

    let (status, _, body) = graphql(&handle, current_access, &[], VIEWER, json!({})).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the chain's current access token died: {body}"
    );
    let (status, body) = refresh(&handle, text(&second, "refresh_token")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    let counts = handle.counts();
    assert_eq!((counts.reused_refresh_tokens, counts.revoked_chains), (1, 1));
}

#[tokio::test]
async fn a_refresh_kills_the_access_token_issued_with_the_redeemed_refresh_token() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let (_, first) = exchange(&handle, &authorize(&handle, &[]).await).await;
    let (_, second) = refresh(&handle, text(&first, "refresh_token")).await;
    let (status, _, _) = graphql(&handle, text(&first, "access_token"), &[], VIEWER, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = graphql(&handle, text(&second, "access_token"), &[], VIEWER, json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_authorization_code_cannot_be_used_twice() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let code = authorize(&handle, &[]).await;
    let (status, _) = exchange(&handle, &code).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = exchange(&handle, &code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(again["error"], "invalid_grant");
}

#[tokio::test]
async fn an_expired_authorization_code_is_an_invalid_grant() {
    let (handle, _guard) = start(RoublerOptions {
        code_lifetime: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let code = authorize(&handle, &[]).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (status, body) = exchange(&handle, &code).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
}

#[tokio::test]
async fn pkce_needs_the_verifier_that_matches_the_challenge() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let pkce = [("code_challenge", challenge), ("code_challenge_method", "S256")];
    let base = [
        ("grant_type", "authorization_code"),
        ("redirect_uri", "http://localhost/callback"),
    ];

    let code = authorize(&handle, &pkce).await;
    let mut form = base.to_vec();
    form.extend([
        ("code", code.as_str()),
        ("code_verifier", "a-wrong-verifier-that-is-long-enough-to-pass-43"),
    ]);
    let (status, body) = token(&handle, &form).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );

    let code = authorize(&handle, &pkce).await;
    let mut form = base.to_vec();
    form.extend([("code", code.as_str()), ("code_verifier", verifier)]);
    let (status, body) = token(&handle, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_token_endpoint_speaks_oauth_errors() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let response = client()
        .post(&handle.token_url)
        .basic_auth(&handle.client_id, Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );

    let (status, body) = token(&handle, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("unsupported_grant_type"))
    );

    // client_secret_post is accepted too.
    let code = authorize(&handle, &[]).await;
    let response = client()
        .post(&handle.token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://localhost/callback"),
            ("client_id", handle.client_id.as_str()),
            ("client_secret", handle.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);

    handle.set_token_endpoint_down(true);
    let (status, _) = refresh(&handle, "anything").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_authorize_step_refuses_unknown_clients_and_foreign_redirects() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let response = client()
        .get(&handle.auth_url)
        .query(&[
            ("response_type", "code"),
            ("client_id", "nobody"),
            ("state", "state-123456789"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client()
        .get(&handle.auth_url)
        .query(&[
            ("response_type", "code"),
            ("client_id", handle.client_id.as_str()),
            ("redirect_uri", "https://evil.example/cb"),
            ("state", "state-123456789"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Any loopback port works, as a CLI helper listening on 127.0.0.1:<port> needs.
    let response = client()
        .get(&handle.auth_url)
        .query(&[
            ("response_type", "code"),
            ("client_id", handle.client_id.as_str()),
            ("redirect_uri", "http://127.0.0.1:53682/cb"),
            ("scope", "offline_access"),
            ("state", "state-123456789"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn missing_invalid_or_expired_tokens_get_the_authentication_error_shape() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let expected =
        json!({"errors": [{"name": "Authentication", "message": "Access token is missing or invalid."}]});
    let response = client()
        .post(&handle.graphql_url)
        .json(&json!({"query": VIEWER}))
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.json::<Value>().await.expect("json"), expected);

    let (status, _, body) = graphql(&handle, "ory_at_garbage", &[], VIEWER, json!({})).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, expected.clone()));

    let grant = handle.grant_tokens();
    handle.expire_access_tokens();
    let (status, _, body) = graphql(&handle, &grant.access_token, &[], VIEWER, json!({})).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, expected));
    let (status, _) = refresh(&handle, grant.refresh_token.as_deref().unwrap_or_default()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refresh tokens outlive expired access tokens"
    );
}

#[tokio::test]
async fn company_scoped_queries_need_an_accessible_x_company_id() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let query = "{ locations { id name timeZone rosterable parentId } }";
    let (_, _, body) = graphql(&handle, &token, &[], query, json!({})).await;
    assert_eq!(body["errors"][0]["name"], "BadRequest", "{body}");
    let (_, _, body) = graphql(&handle, &token, &[("X-Company-ID", "999999")], query, json!({})).await;
    assert_eq!(body["errors"][0]["name"], "Forbidden", "{body}");

    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let (_, _, body) = graphql(&handle, &token, &[("X-Company-ID", &company)], query, json!({})).await;
    assert_eq!(
        body["data"]["locations"],
        Value::Array(handle.locations(&company))
    );
    let roots: Vec<&Value> = body["data"]["locations"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|l| l["parentId"] == "0")
        .collect();
    assert_eq!(roots.len(), 1, "one root location");
}

const EMPLOYEES: &str = "query($statuses: [EmployeeStatus!]) { employees(statuses: $statuses) { id fullName workEmail status rosterable visible person { mobile email dateOfBirth } location { id name } position { id name } startDate terminatedAt modifiedAt } }";

#[tokio::test]
async fn employees_include_terminated_people_and_filter_by_status() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let headers = [("X-Company-ID", company.as_str())];
    let (_, _, body) = graphql(&handle, &token, &headers, EMPLOYEES, json!({})).await;
    let expected = handle.employees(&company);
    assert_eq!(body["data"]["employees"], Value::Array(expected.clone()));
    assert_eq!(expected.len(), 24);
    let terminated: Vec<&Value> = expected.iter().filter(|e| e["status"] == "Terminated").collect();
    assert!(!terminated.is_empty());
    assert!(terminated.iter().all(|e| e["terminatedAt"].is_string()));

    let (_, _, body) = graphql(
        &handle,
        &token,
        &headers,
        EMPLOYEES,
        json!({"statuses": ["Terminated"]}),
    )
    .await;
    assert_eq!(
        body["data"]["employees"].as_array().map(Vec::len),
        Some(terminated.len())
    );
}

const SALES: &str = "query($startTime: DateTime!, $endTime: DateTime!) { locationSales(startTime: $startTime, endTime: $endTime) { day forecast actual hours cost } }";

/// Ids of the (Sydney, Berlin) locations of the first company.
fn sydney_and_berlin(handle: &RoublerHandle) -> (String, String) {
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let locations = handle.locations(&company);
    let find = |zone: &str| {
        locations
            .iter()
            .find(|l| l["timeZone"] == zone)
            .and_then(|l| l["id"].as_str())
            .expect("location in zone")
            .to_owned()
    };
    (find("Australia/Sydney"), find("Europe/Berlin"))
}

async fn sales_days(
    handle: &RoublerHandle,
    token: &str,
    location: &str,
    start: &str,
    end: &str,
) -> Vec<String> {
    let vars = json!({"startTime": start, "endTime": end});
    let (status, _, body) = graphql(handle, token, &[("X-Location-ID", location)], SALES, vars).await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["data"]["locationSales"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .clone();
    assert_eq!(
        rows,
        handle.location_sales(location, utc(start), utc(end)),
        "served = expected"
    );
    rows.iter()
        .map(|r| r["day"].as_str().expect("day").to_owned())
        .collect()
}

#[tokio::test]
async fn location_sales_needs_x_location_id() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let vars = json!({"startTime": "2025-04-01T00:00:00.000Z", "endTime": "2025-04-02T00:00:00.000Z"});
    let (status, _, body) = graphql(
        &handle,
        &token,
        &[("X-Company-ID", &company)],
        SALES,
        vars.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["locationSales"], Value::Null);
    assert_eq!(body["errors"][0]["name"], "BadRequest", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Location-ID"))
    );

    // Both headers are fine when they agree.
    let (sydney, _) = sydney_and_berlin(&handle);
    let headers = [
        ("X-Company-ID", company.as_str()),
        ("X-Location-ID", sydney.as_str()),
    ];
    let (_, _, body) = graphql(&handle, &token, &headers, SALES, vars).await;
    assert_eq!(
        body["data"]["locationSales"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
}

#[tokio::test]
async fn sydney_and_berlin_report_their_own_local_days_for_one_utc_window_across_dst_changes() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let (sydney, berlin) = sydney_and_berlin(&handle);

    // The same UTC window starts different local days in each zone.
    let (start, end) = ("2025-04-05T20:00:00.000Z", "2025-04-06T20:00:00.000Z");
    assert_eq!(
        sales_days(&handle, &token, &sydney, start, end).await,
        ["2025-04-07"]
    );
    assert_eq!(
        sales_days(&handle, &token, &berlin, start, end).await,
        ["2025-04-06"]
    );

    // Sydney's 2025-04-06 has 25 hours (AEDT → AEST): it starts at 13:00Z, the next day at 14:00Z.
    let (start, end) = ("2025-04-05T13:00:00.000Z", "2025-04-06T14:00:00.000Z");
    assert_eq!(
        sales_days(&handle, &token, &sydney, start, end).await,
        ["2025-04-06"]
    );
    let (start, end) = ("2025-04-05T13:00:00.000Z", "2025-04-06T14:00:00.001Z");
    assert_eq!(
        sales_days(&handle, &token, &sydney, start, end).await,
        ["2025-04-06", "2025-04-07"]
    );

    // Berlin's 2025-03-30 has 23 hours (CET → CEST): 23:00Z the evening before, then 22:00Z.
    let (start, end) = ("2025-03-29T23:00:00.000Z", "2025-03-30T22:00:00.000Z");
    assert_eq!(
        sales_days(&handle, &token, &berlin, start, end).await,
        ["2025-03-30"]
    );
    let (start, end) = ("2025-03-28T23:00:00.000Z", "2025-03-31T22:00:00.000Z");
    assert_eq!(
        sales_days(&handle, &token, &berlin, start, end).await,
        ["2025-03-29", "2025-03-30", "2025-03-31"]
    );
}

const TIMESHEETS: &str = "query($s: DateTime!, $e: DateTime!, $l: ID!) { timesheets(startTime: $s, endTime: $e, locationId: $l) { id startTime endTime status hours cost variance workType { id name appliedFromId } breaks { id startTime endTime subtracts } employee { id fullName } position { id text } location { id name timezone } } }";
const SHIFTS: &str = "query($s: DateTime!, $e: DateTime!, $l: ID!) { shifts(startTime: $s, endTime: $e, locationId: $l) { id startTime endTime breaks { startTime endTime subtracts } published hours employee { id fullName } position { id text } location { id name } } }";

#[tokio::test]
async fn timesheets_and_shifts_are_served_as_expected_and_edits_apply() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let (sydney, _) = sydney_and_berlin(&handle);
    let (start, end) = ("2025-04-01T00:00:00.000Z", "2025-04-08T00:00:00.000Z");
    let vars = json!({"s": start, "e": end, "l": sydney});
    let headers = [("X-Company-ID", company.as_str())];

    let expected = handle.timesheets(&sydney, utc(start), utc(end));
    assert!(expected.len() >= 18, "about 3 per local day: {}", expected.len());
    assert!(
        expected
            .iter()
            .all(|t| t["location"]["timezone"] == "Australia/Sydney")
    );
    let (_, _, body) = graphql(&handle, &token, &headers, TIMESHEETS, vars.clone()).await;
    assert_eq!(body["data"]["timesheets"], Value::Array(expected.clone()));

    let (_, _, body) = graphql(&handle, &token, &headers, SHIFTS, vars.clone()).await;
    assert_eq!(
        body["data"]["shifts"],
        Value::Array(handle.shifts(&sydney, utc(start), utc(end)))
    );

    let gone = expected[0]["id"].as_str().expect("id").to_owned();
    let changed = expected[1]["id"].as_str().expect("id").to_owned();
    handle.edits.delete(gone.clone());
    handle.edits.change(changed.clone(), "status", json!("rejected"));
    let (_, _, body) = graphql(&handle, &token, &headers, TIMESHEETS, vars).await;
    let served = body["data"]["timesheets"].as_array().expect("list").clone();
    assert_eq!(served.len(), expected.len() - 1);
    assert!(served.iter().all(|t| t["id"] != gone.as_str()));
    assert_eq!(served[0]["status"], "rejected");

    // A location of another company (or none) is refused.
    let vars = json!({"s": start, "e": end, "l": "424242"});
    let (_, _, body) = graphql(&handle, &token, &headers, TIMESHEETS, vars).await;
    assert_eq!(body["errors"][0]["name"], "Forbidden", "{body}");
}

const LOCATIONS: &str = "{ locations { id } }";

#[tokio::test]
async fn rate_limit_headers_count_down_and_reset_after_the_window() {
    let (handle, _guard) = start(RoublerOptions {
        rate_limit: 3,
        rate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let token = handle.grant_tokens().access_token;
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let headers = [("X-Company-ID", company.as_str())];
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, h, _) = graphql(&handle, &token, &headers, LOCATIONS, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(number(&h, "x-ratelimit-limit"), 3);
        assert_eq!(number(&h, "x-ratelimit-reset"), 1);
        remaining.push(number(&h, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, h, _) = graphql(&handle, &token, &headers, LOCATIONS, json!({})).await;
    assert_eq!(number(&h, "x-ratelimit-remaining"), 2, "a new window began");

    // Unauthenticated calls count and carry the headers too.
    let (status, h, _) = graphql(&handle, "nope", &headers, LOCATIONS, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(number(&h, "x-ratelimit-remaining"), 1);
}

#[tokio::test]
async fn monitoring_mode_never_blocks_but_reports_zero_remaining() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    handle.set_limit(2, Duration::from_secs(30));
    let token = handle.grant_tokens().access_token;
    for expected_remaining in [1, 0, 0, 0] {
        let (status, h, body) = graphql(&handle, &token, &[], VIEWER, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(number(&h, "x-ratelimit-remaining"), expected_remaining);
    }
    assert_eq!(handle.rate_limited_responses(), 0);
    assert_eq!(
        handle.max_calls_in_any_window(Duration::from_secs(30)),
        4,
        "over the limit, and visible"
    );
}

#[tokio::test]
async fn enforcing_mode_answers_429_with_retry_after() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    handle.set_mode(RateLimitMode::Enforcing);
    handle.set_limit(2, Duration::from_secs(30));
    let token = handle.grant_tokens().access_token;
    for _ in 0..2 {
        let (status, _, _) = graphql(&handle, &token, &[], VIEWER, json!({})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, h, body) = graphql(&handle, &token, &[], VIEWER, json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry_after = number(&h, "retry-after");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(number(&h, "x-ratelimit-remaining"), 0);
    assert_eq!(number(&h, "x-ratelimit-limit"), 2);
    assert_eq!(number(&h, "x-ratelimit-reset"), retry_after);
    assert_eq!(handle.rate_limited_responses(), 1);

    handle.set_mode(RateLimitMode::Monitoring);
    let (status, _, _) = graphql(&handle, &token, &[], VIEWER, json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "switching back at run time stops blocking"
    );
}

#[tokio::test]
async fn max_calls_in_any_window_slides_over_the_call_log() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    for _ in 0..3 {
        graphql(&handle, &token, &[], VIEWER, json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..2 {
        graphql(&handle, &token, &[], VIEWER, json!({})).await;
    }
    assert_eq!(handle.calls().len(), 5);
    assert_eq!(handle.max_calls_in_any_window(Duration::from_millis(300)), 3);
    assert_eq!(handle.max_calls_in_any_window(Duration::from_secs(5)), 5);
}

#[tokio::test]
async fn the_other_documented_queries_answer_with_minimal_data() {
    let (handle, _guard) = start(RoublerOptions::default()).await;
    let token = handle.grant_tokens().access_token;
    let company = handle.companies()[0]["id"]
        .as_str()
        .expect("company id")
        .to_owned();
    let employee = handle.employees(&company)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let headers = [("X-Company-ID", company.as_str())];
    let query = "query($e: ID!) { leaveBalance(employeeId: $e) { leaveType { id name } balance unit } leaveRequests(startTime: \"2025-01-01T00:00:00.000Z\", endTime: \"2025-12-31T00:00:00.000Z\") { id approved hours } costCentres(showArchived: false) { id name code archived } payRules { id name } }";
    let (_, _, body) = graphql(&handle, &token, &headers, query, json!({"e": employee})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["leaveBalance"].as_array().map(Vec::len), Some(3));
    assert_eq!(body["data"]["costCentres"].as_array().map(Vec::len), Some(3));
    assert!(
        body["data"]["leaveRequests"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(body["data"]["payRules"].as_array().is_some_and(|r| !r.is_empty()));
}

#[test]
fn the_sdl_uses_the_custom_scalars_and_the_sketch_spelling() {
    let sdl = sandbox::roubler::sdl();
    for needle in [
        "scalar DateTime",
        "scalar Date",
        "locationSales(startTime: DateTime!, endTime: DateTime!): [LocationSalesDay]",
        "timezone: String",
        "timeZone: String",
        "enum EmployeeStatus",
    ] {
        assert!(sdl.contains(needle), "{needle} missing from\n{sdl}");
    }
}
