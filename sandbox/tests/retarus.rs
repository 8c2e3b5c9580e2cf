//! The Retarus stand-in over loopback: Keycloak-style tokens, the documented period and
//! retention limits, entitlement per client, and page-number paging that serves exactly the
//! records `RetarusHandle::records` computes.

use chrono::{DateTime, TimeDelta, Utc};
use sandbox::retarus::{RetarusHandle, RetarusReport};
use sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::default())
        .await
        .expect("sandbox starts")
}

async fn token(retarus: &RetarusHandle) -> String {
    let response = reqwest::Client::new()
        .post(&retarus.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", retarus.client_id.as_str()),
            ("client_secret", retarus.client_secret.as_str()),
            ("scope", "openid"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("token JSON");
    body["access_token"].as_str().expect("access_token").to_string()
}

fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Every field a report record has, as a selection set (taken from an expected record).
fn all_fields(expected: &[Value]) -> String {
    let first = expected
        .first()
        .and_then(Value::as_object)
        .expect("at least one record");
    first.keys().cloned().collect::<Vec<_>>().join(" ")
}

#[allow(clippy::too_many_arguments)]
async fn report_page(
    retarus: &RetarusHandle,
    token: &str,
    report: RetarusReport,
    fields: &str,
    customer: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    page: i64,
    size: i64,
    sort: &str,
) -> (u16, Value) {
    let query = format!(
        "query Report($customerId: String!, $period: DatePeriod!, $page: Int, $size: Int, $sort: SortDirection) {{ \
           {}(customerId: $customerId, datePeriod: $period, page: $page, size: $size, sort: $sort) {{ \
             content {{ {fields} }} pageIndex pageSize hasMoreElements }} }}",
        report.query_name()
    );
    let body = json!({
        "query": query,
        "operationName": "Report",
        "variables": {
            "customerId": customer,
            "period": {"fromIncluded": stamp(from), "toExcluded": stamp(to)},
            "page": page,
            "size": size,
            "sort": sort,
        }
    });
    let response = reqwest::Client::new()
        .post(&retarus.graphql_url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("graphql request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Pages through a window with `size` and returns every record served, in order.
#[allow(clippy::too_many_arguments)]
async fn page_through(
    retarus: &RetarusHandle,
    token: &str,
    report: RetarusReport,
    fields: &str,
    customer: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    size: i64,
    sort: &str,
) -> Vec<Value> {
    let mut served = Vec::new();
    for page in 0.. {
        let (status, body) = report_page(
            retarus, token, report, fields, customer, from, to, page, size, sort,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        let result = &body["data"][report.query_name()];
        assert_eq!(result["pageIndex"], json!(page));
        assert_eq!(result["pageSize"], json!(size));
        let content = result["content"].as_array().expect("content");
        assert!(content.len() as i64 <= size);
        served.extend(content.iter().cloned());
        if result["hasMoreElements"] != json!(true) {
            break;
        }
        assert!(page < 1000, "paging does not end");
    }
    served
}

fn window(sandbox: &Sandbox, days: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let _ = sandbox;
    let to = Utc::now();
    (to - TimeDelta::days(days), to)
}

fn first_error(body: &Value) -> &Value {
    &body["errors"][0]
}

#[tokio::test]
async fn a_token_is_issued_for_good_credentials_and_refused_for_bad_ones() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let client = reqwest::Client::new();

    let good: Value = client
        .post(&retarus.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", retarus.client_id.as_str()),
            ("client_secret", retarus.client_secret.as_str()),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        good["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert_eq!(good["expires_in"], json!(300));
    assert_eq!(good["refresh_expires_in"], json!(0));
    assert_eq!(good["token_type"], json!("Bearer"));

    let bad = client
        .post(&retarus.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", retarus.client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"], json!("invalid_client"));
    assert_eq!(
        bad["error_description"],
        json!("Invalid client or Invalid client credentials")
    );

    let wrong_grant = client
        .post(&retarus.token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", retarus.client_id.as_str()),
            ("client_secret", retarus.client_secret.as_str()),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_grant.status(), 400);
    assert_eq!(
        wrong_grant.json::<Value>().await.unwrap()["error"],
        json!("unsupported_grant_type")
    );

    let no_scope = client
        .post(&retarus.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", retarus.client_id.as_str()),
            ("client_secret", retarus.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_scope.status(), 400);
    assert_eq!(
        no_scope.json::<Value>().await.unwrap()["error"],
        json!("invalid_scope")
    );

    let garbage = client
        .post(&retarus.token_url)
        .body("%%%\u{0}")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert_eq!(
        garbage.json::<Value>().await.unwrap()["error"],
        json!("invalid_request")
    );

    assert_eq!(retarus.token_requests(), 5);
}

#[tokio::test]
async fn a_46_day_period_is_refused_with_a_graphql_error() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let to = Utc::now();
    let (status, body) = report_page(
        retarus,
        &token,
        RetarusReport::FaxOut,
        "faxId",
        "99999",
        to - TimeDelta::days(46),
        to,
        0,
        10,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["faxOutUdrReport"], Value::Null);
    assert!(
        first_error(&body)["message"]
            .as_str()
            .unwrap()
            .contains("45 days"),
        "{body}"
    );
    assert_eq!(
        first_error(&body)["extensions"]["classification"],
        json!("BAD_REQUEST")
    );

    let (_, ok) = report_page(
        retarus,
        &token,
        RetarusReport::FaxOut,
        "faxId",
        "99999",
        to - TimeDelta::days(45),
        to,
        0,
        10,
        "ASC",
    )
    .await;
    assert!(ok.get("errors").is_none(), "exactly 45 days is allowed: {ok}");
}

#[tokio::test]
async fn a_period_starting_more_than_90_days_ago_is_refused() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let from = Utc::now() - TimeDelta::days(91);
    let (status, body) = report_page(
        retarus,
        &token,
        RetarusReport::SmsOut,
        "smsId",
        "99999",
        from,
        from + TimeDelta::days(5),
        0,
        10,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["smsOutUdrReport"], Value::Null);
    assert!(
        first_error(&body)["message"]
            .as_str()
            .unwrap()
            .contains("90 days"),
        "{body}"
    );
    assert_eq!(
        first_error(&body)["extensions"]["classification"],
        json!("BAD_REQUEST")
    );
}

#[tokio::test]
async fn a_customer_the_client_is_not_entitled_to_is_refused() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 3);
    let (status, body) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "12345",
        from,
        to,
        0,
        10,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["faxInUdrReport"], Value::Null);
    assert_eq!(
        first_error(&body)["extensions"]["classification"],
        json!("FORBIDDEN")
    );
    assert_eq!(first_error(&body)["path"], json!(["faxInUdrReport"]));
    assert!(retarus.records(RetarusReport::FaxIn, "88888", from, to).len() > 1);
    let (_, other) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "88888",
        from,
        to,
        0,
        10,
        "ASC",
    )
    .await;
    assert!(
        other.get("errors").is_none(),
        "the second entitled customer is allowed: {other}"
    );
}

#[tokio::test]
async fn a_size_over_10000_is_refused() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 3);
    let (_, body) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        10_001,
        "ASC",
    )
    .await;
    assert_eq!(body["data"]["faxInUdrReport"], Value::Null);
    assert_eq!(
        first_error(&body)["extensions"]["classification"],
        json!("BAD_REQUEST")
    );
}

#[tokio::test]
async fn paging_with_size_7_returns_every_record_once_and_equals_the_expected_records() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 10);
    for report in RetarusReport::ALL {
        let expected = retarus.records(report, "99999", from, to);
        assert!(expected.len() > 14, "{report:?} has enough records to page");
        let served = page_through(
            retarus,
            &token,
            report,
            &all_fields(&expected),
            "99999",
            from,
            to,
            7,
            "ASC",
        )
        .await;
        let ids: std::collections::HashSet<&str> = served
            .iter()
            .filter_map(|r| r[report.id_field()].as_str())
            .collect();
        assert_eq!(ids.len(), served.len(), "{report:?}: no record twice");
        assert_eq!(served, expected, "{report:?}");
    }
}

#[tokio::test]
async fn sort_desc_returns_the_window_in_reverse() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 6);
    let mut expected = retarus.records(RetarusReport::SmsOut, "88888", from, to);
    expected.reverse();
    let served = page_through(
        retarus,
        &token,
        RetarusReport::SmsOut,
        &all_fields(&expected),
        "88888",
        from,
        to,
        7,
        "DESC",
    )
    .await;
    assert_eq!(served, expected);
}

#[tokio::test]
async fn records_are_realistic_and_the_window_is_half_open() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let (from, to) = window(&sandbox, 20);
    let sms_in = retarus.records(RetarusReport::SmsIn, "99999", from, to);
    assert!(
        sms_in
            .iter()
            .all(|r| r["trackingId"].as_str().is_some_and(|t| t.ends_with(' ')))
    );
    let fax_out = retarus.records(RetarusReport::FaxOut, "99999", from, to);
    assert!(fax_out.iter().any(|r| r["statusName"] == json!("OK")));
    assert!(
        fax_out
            .iter()
            .any(|r| r["faxCustomerRef"] == json!("") || r["faxCustomerRef"].is_null())
    );
    assert!(fax_out.iter().all(|r| r["callDuration"].is_i64()));
    // A record's own filter timestamp is inside a window starting at it, outside one ending at it.
    let at = chrono::DateTime::parse_from_rfc3339(fax_out[3]["keyTimestamp"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let starting = retarus.records(
        RetarusReport::FaxOut,
        "99999",
        at,
        at + TimeDelta::milliseconds(1),
    );
    let ending = retarus.records(RetarusReport::FaxOut, "99999", at - TimeDelta::hours(1), at);
    assert!(starting.iter().any(|r| r["faxId"] == fax_out[3]["faxId"]));
    assert!(!ending.iter().any(|r| r["faxId"] == fax_out[3]["faxId"]));
    // Nothing lies in the future of the anchor.
    assert!(
        retarus
            .records(
                RetarusReport::FaxIn,
                "99999",
                Utc::now(),
                Utc::now() + TimeDelta::days(3)
            )
            .is_empty()
    );
}

#[tokio::test]
async fn the_status_name_filter_keeps_only_matching_faxes() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 20);
    let expected: Vec<Value> = retarus
        .records(RetarusReport::FaxOut, "99999", from, to)
        .into_iter()
        .filter(|r| r["statusName"] == json!("OK"))
        .map(|r| json!({"faxId": r["faxId"], "statusName": r["statusName"]}))
        .collect();
    let body = json!({
        "query": "query($p: DatePeriod!) { faxOutUdrReport(customerId: \"99999\", datePeriod: $p, size: 1000, \
                  filter: {statusName: {values: [\"OK\"]}}) { content { faxId statusName } hasMoreElements } }",
        "variables": {"p": {"fromIncluded": stamp(from), "toExcluded": stamp(to)}}
    });
    let served: Value = reqwest::Client::new()
        .post(&retarus.graphql_url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served["data"]["faxOutUdrReport"]["content"],
        json!(expected),
        "{served}"
    );
}

#[tokio::test]
async fn edits_delete_and_change_served_records() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 4);
    let before = retarus.records(RetarusReport::FaxIn, "99999", from, to);
    let deleted = before[0]["faxId"].as_str().unwrap().to_string();
    let changed = before[1]["faxId"].as_str().unwrap().to_string();
    retarus.edits.delete(&deleted);
    retarus.edits.change(&changed, "billingCode", json!("RE-BILLED"));
    let after = retarus.records(RetarusReport::FaxIn, "99999", from, to);
    assert_eq!(after.len(), before.len() - 1);
    assert_eq!(after[0]["billingCode"], json!("RE-BILLED"));
    let served = page_through(
        retarus,
        &token,
        RetarusReport::FaxIn,
        &all_fields(&after),
        "99999",
        from,
        to,
        50,
        "ASC",
    )
    .await;
    assert_eq!(served, after);
}

#[tokio::test]
async fn an_expired_or_missing_token_gets_401() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 2);
    let (status, _) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
    retarus.expire_tokens();
    let (status, body) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"error": "invalid_token"}));
    let (status, _) = report_page(
        retarus,
        "not-a-token",
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 401);
    let anonymous = reqwest::Client::new()
        .post(&retarus.graphql_url)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(retarus.graphql_calls(), 4);
}

#[tokio::test]
async fn a_token_is_refused_once_its_lifetime_has_passed() {
    let mut options = SandboxOptions::default();
    options.retarus.token_lifetime = std::time::Duration::from_secs(1);
    let sandbox = Sandbox::start(options).await.unwrap();
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 2);
    let (status, _) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
    // Move the tokio clock (which token expiry follows) past the lifetime without sleeping.
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    tokio::time::resume();
    let (status, _) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_token_endpoint_can_be_taken_down() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    retarus.set_token_endpoint_down(true);
    let response = reqwest::Client::new()
        .post(&retarus.token_url)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    retarus.set_token_endpoint_down(false);
    token(retarus).await;
}

#[tokio::test]
async fn injected_faults_hit_the_graphql_route_but_not_the_token_route() {
    let sandbox = sandbox().await;
    let retarus = &sandbox.retarus;
    retarus.faults.set(sandbox::faults::FaultPlan {
        server_error_rate: 1.0,
        ..Default::default()
    });
    let token = token(retarus).await;
    let (from, to) = window(&sandbox, 2);
    let (status, _) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert!(status >= 500);
    assert_eq!(retarus.faults.counts().server_errors, 1);
    assert_eq!(retarus.graphql_calls(), 1, "faulted calls are counted too");
    retarus.faults.clear();
    let (status, _) = report_page(
        retarus,
        &token,
        RetarusReport::FaxIn,
        "faxId",
        "99999",
        from,
        to,
        0,
        5,
        "ASC",
    )
    .await;
    assert_eq!(status, 200);
}
