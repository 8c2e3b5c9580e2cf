//! The Altrata stand-in over loopback: a new token kills the old one, the two 429s differ only
//! in their message, cursor paging covers every event once, and `errorType` tells partial
//! results (`unauthorized`, `deprecated`) from discarded ones (`error`).

use std::collections::HashSet;
use std::time::Duration;

use sandbox::altrata::{AltrataHandle, AltrataService};
use sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

/// A sandbox whose Altrata rate limit does not get in the way of tests about something else.
async fn relaxed() -> Sandbox {
    let mut options = SandboxOptions::default();
    options.altrata.rate_per_sec = 1000.0;
    options.altrata.burst = 1000;
    Sandbox::start(options).await.expect("sandbox starts")
}

async fn token(altrata: &AltrataHandle) -> String {
    let response = reqwest::Client::new()
        .post(&altrata.token_url)
        .query(&[("grant_type", "client_credentials")])
        .basic_auth(&altrata.username, Some(&altrata.password))
        .header("x-api-key", &altrata.api_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("token JSON");
    assert_eq!(body["token_type"], json!("bearer"));
    assert_eq!(body["expires_in"], json!(28_800));
    body["access_token"].as_str().expect("access_token").to_string()
}

async fn call(url: &str, token: &str, query: &str, variables: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("graphql request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const PERSON: &str =
    "query($id: String!) { personIdSearch(altrataId: $id) { altrataId fullName title netWorthUsd } }";

#[tokio::test]
async fn an_old_token_gets_401_after_a_new_one_is_issued_and_counts_as_stale() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let first = token(altrata).await;
    let (status, _) = call(&altrata.profile_url, &first, PERSON, json!({"id": "1-per-1"})).await;
    assert_eq!(status, 200);

    let second = token(altrata).await;
    assert_ne!(first, second);
    let (status, body) = call(&altrata.profile_url, &first, PERSON, json!({"id": "1-per-1"})).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "Unauthorized"}));
    let (status, _) = call(
        &altrata.events_url,
        &first,
        "{ events(altrataId: \"1-per-1\") { items { eventId } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 401, "an old token fails on every Altrata API");
    let (status, _) = call(&altrata.profile_url, &second, PERSON, json!({"id": "1-per-1"})).await;
    assert_eq!(status, 200);

    assert_eq!(altrata.tokens_issued(), 2);
    assert_eq!(altrata.stale_token_rejections(), 2);
    assert_eq!(altrata.other_unauthorized(), 0);

    // An expired token is a 401 too, but not a stale one.
    altrata.expire_tokens();
    let (status, _) = call(&altrata.profile_url, &second, PERSON, json!({"id": "1-per-1"})).await;
    assert_eq!(status, 401);
    assert_eq!(altrata.stale_token_rejections(), 2);
    assert_eq!(altrata.other_unauthorized(), 1);
}

#[tokio::test]
async fn wrong_credentials_or_api_key_get_no_token() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let client = reqwest::Client::new();
    let wrong_password = client
        .post(&altrata.token_url)
        .query(&[("grant_type", "client_credentials")])
        .basic_auth(&altrata.username, Some("nope"))
        .header("x-api-key", &altrata.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_password.status(), 401);
    assert!(wrong_password.json::<Value>().await.unwrap()["message"].is_string());
    let wrong_key = client
        .post(&altrata.token_url)
        .query(&[("grant_type", "client_credentials")])
        .basic_auth(&altrata.username, Some(&altrata.password))
        .header("x-api-key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 403);
    assert_eq!(
        wrong_key.json::<Value>().await.unwrap(),
        json!({"message": "Forbidden"})
    );
    let grant_in_body = client
        .post(&altrata.token_url)
        .basic_auth(&altrata.username, Some(&altrata.password))
        .header("x-api-key", &altrata.api_key)
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        grant_in_body.status(),
        400,
        "grant_type belongs in the query string"
    );
    assert_eq!(altrata.tokens_issued(), 0);
}

/// Moves the tokio clock (which the rate limiter follows) without sleeping. The clock is paused
/// only while no request is in flight, so no HTTP timer can jump it further.
async fn let_time_pass(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_burst_gets_too_many_requests_and_a_spent_quota_gets_limit_exceeded() {
    let mut options = SandboxOptions::default();
    options.altrata.daily_quota = Some(1000);
    let sandbox = Sandbox::start(options).await.unwrap();
    let altrata = &sandbox.altrata;
    let token = token(altrata).await;

    // Burst 2 per service at 2 per second: back-to-back calls are refused from the third on.
    let mut statuses = Vec::new();
    let mut refused = Value::Null;
    for _ in 0..6 {
        let (status, body) = call(&altrata.profile_url, &token, PERSON, json!({"id": "1-per-2"})).await;
        statuses.push(status);
        if status == 429 {
            refused = body;
            break;
        }
    }
    assert_eq!(&statuses[..2], &[200, 200]);
    assert_eq!(statuses.last(), Some(&429));
    assert_eq!(refused, json!({"message": "Too Many Requests"}));
    let (status, _) = call(
        &altrata.events_url,
        &token,
        "{ events(altrataId: \"1-per-2\") { items { eventId } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "the events service has its own bucket");

    // A second later the bucket has refilled.
    let_time_pass(Duration::from_secs(1)).await;
    let (status, _) = call(&altrata.profile_url, &token, PERSON, json!({"id": "1-per-2"})).await;
    assert_eq!(status, 200);

    // Once today's quota is used up every call says "Limit Exceeded" (the same 429 status).
    altrata.set_daily_quota(Some(3));
    let_time_pass(Duration::from_secs(1)).await;
    let (status, body) = call(&altrata.profile_url, &token, PERSON, json!({"id": "1-per-2"})).await;
    assert_eq!(status, 429);
    assert_eq!(body, json!({"message": "Limit Exceeded"}));

    let log = altrata.call_log();
    assert_eq!(log.len(), statuses.len() + 3);
    assert_eq!(log.iter().filter(|c| c.status == 429).count(), 2);
    assert_eq!(
        log.iter().filter(|c| c.service == AltrataService::Events).count(),
        1
    );
    // The log shows the refused call arrived within the first second of the burst.
    let first_refusal = log.iter().position(|c| c.status == 429).unwrap();
    assert!(log[first_refusal].at.duration_since(log[0].at) < Duration::from_secs(1));
}

#[tokio::test]
async fn cursor_paging_covers_every_event_exactly_once() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let token = token(altrata).await;
    let id = altrata
        .person_ids()
        .into_iter()
        .find(|id| altrata.events(id).len() >= 7)
        .expect("a person with several events");
    let expected = altrata.events(&id);
    let fields = "eventId eventDateInfo { date datePrecision displayDate } eventType eventText \
                  personMentions { altrataId name } organizationMentions { altrataId name } eventPublishedDate \
                  announcementDateInfo { date datePrecision displayDate } startRoleTitle endRoleTitle";
    let query = format!(
        "query($id: String!, $after: String) {{ events(altrataId: $id, pageInfo: {{first: 3, after: $after}}) {{ \
           items {{ {fields} }} pageInfoResponse {{ totalCount pageInfo {{ hasNextPage startCursor endCursor }} }} }} }}"
    );
    let mut served = Vec::new();
    let mut after = Value::Null;
    loop {
        let (status, body) = call(
            &altrata.events_url,
            &token,
            &query,
            json!({"id": id, "after": after}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.get("errors").is_none(), "{body}");
        let page = &body["data"]["events"];
        assert_eq!(page["pageInfoResponse"]["totalCount"], json!(expected.len()));
        served.extend(page["items"].as_array().unwrap().iter().cloned());
        let info = &page["pageInfoResponse"]["pageInfo"];
        assert!(info["endCursor"].as_str().unwrap().starts_with("altptr"));
        if info["hasNextPage"] != json!(true) {
            break;
        }
        after = info["endCursor"].clone();
    }
    let ids: HashSet<&str> = served.iter().filter_map(|e| e["eventId"].as_str()).collect();
    assert_eq!(ids.len(), served.len());
    assert_eq!(served, expected);
    // Newest first.
    let dates: Vec<&str> = served
        .iter()
        .filter_map(|e| e["eventDateInfo"]["date"].as_str())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]));
}

#[tokio::test]
async fn unauthorized_and_deprecated_error_types_keep_data_and_error_discards_it() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let token = token(altrata).await;
    let query = "query($id: String!) { personIdSearch(altrataId: $id) { altrataId fullName netWorthUsd wxPersonId } }";
    let expected = altrata.person("1-per-3").unwrap();

    let (_, clean) = call(
        &altrata.profile_url,
        &token,
        "query($id: String!) { personIdSearch(altrataId: $id) { altrataId fullName netWorthUsd } }",
        json!({"id": "1-per-3"}),
    )
    .await;
    assert!(clean.get("errors").is_none(), "{clean}");
    assert_eq!(
        clean["data"]["personIdSearch"]["netWorthUsd"],
        expected["netWorthUsd"]
    );

    altrata.set_unauthorized_fields(&["netWorthUsd"]);
    let (status, body) = call(&altrata.profile_url, &token, query, json!({"id": "1-per-3"})).await;
    assert_eq!(status, 200);
    let person = &body["data"]["personIdSearch"];
    assert_eq!(person["fullName"], expected["fullName"]);
    assert_eq!(person["wxPersonId"], expected["wxPersonId"]);
    assert_eq!(person["netWorthUsd"], Value::Null);
    let types: HashSet<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["errorType"].as_str())
        .collect();
    assert_eq!(types, HashSet::from(["unauthorized", "deprecated"]), "{body}");

    altrata.fail_altrata_id("1-per-3");
    let (status, body) = call(&altrata.profile_url, &token, query, json!({"id": "1-per-3"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], Value::Null, "{body}");
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["errorType"] == json!("error"))
    );
    let (_, events) = call(
        &altrata.events_url,
        &token,
        "{ events(altrataId: \"1-per-3\") { items { eventId } } }",
        json!({}),
    )
    .await;
    assert_eq!(events["data"], Value::Null);
    assert_eq!(events["errors"][0]["errorType"], json!("error"));
}

#[tokio::test]
async fn profiles_match_the_expected_person_and_organization() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let token = token(altrata).await;
    let person_query = "query($id: String!) { personIdSearch(altrataId: $id) { altrataId fullName firstName lastName title \
        primaryOrganizationId primaryOrganizationName country city updatedAt netWorthUsd } }";
    let (_, body) = call(
        &altrata.profile_url,
        &token,
        person_query,
        json!({"id": "1-per-5"}),
    )
    .await;
    let mut expected = altrata.person("1-per-5").unwrap();
    expected.as_object_mut().unwrap().remove("wxPersonId");
    assert_eq!(body["data"]["personIdSearch"], expected);

    let org_query = "query($id: String!) { organizationIdSearch(altrataId: $id) { altrataId name industry country \
        employeeCount website updatedAt revenueUsd } }";
    let (_, body) = call(&altrata.profile_url, &token, org_query, json!({"id": "1-org-2"})).await;
    assert_eq!(
        body["data"]["organizationIdSearch"],
        altrata.organization("1-org-2").unwrap()
    );

    let (_, missing) = call(
        &altrata.profile_url,
        &token,
        person_query,
        json!({"id": "1-per-9999"}),
    )
    .await;
    assert_eq!(missing["data"]["personIdSearch"], Value::Null);

    // The profile path does not answer the events service's query, and vice versa.
    let (_, wrong) = call(
        &altrata.events_url,
        &token,
        person_query,
        json!({"id": "1-per-5"}),
    )
    .await;
    assert_eq!(wrong["errors"][0]["errorType"], json!("ValidationError"));
}

#[tokio::test]
async fn anonymous_calls_are_refused_like_the_vendor() {
    let sandbox = relaxed().await;
    let altrata = &sandbox.altrata;
    let client = reqwest::Client::new();
    let profile = client
        .post(&altrata.profile_url)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 401);
    assert_eq!(
        profile.json::<Value>().await.unwrap()["errorType"],
        json!("UnauthorizedException")
    );
    let events = client
        .post(&altrata.events_url)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 403);
}
