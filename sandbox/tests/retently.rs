//! The Retently stand-in over loopback HTTP: OAuth code + refresh, API-key auth, page-number
//! paging, date filters, the nps score, and the 150-per-minute limit.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use sandbox::retently::{RetentlyHandle, RetentlyOptions};
use sandbox::{SandboxOptions, ServerGuard};
use serde_json::{Value, json};

async fn start(retently: RetentlyOptions) -> (RetentlyHandle, ServerGuard) {
    let options = SandboxOptions {
        seed: 11,
        anchor: Utc.with_ymd_and_hms(2025, 6, 4, 8, 0, 0).unwrap(),
        history_days: 20,
        records_per_day: 4,
        retently,
        ..SandboxOptions::default()
    };
    sandbox::retently::start(&options).await.expect("retently starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// GET with `Authorization: <auth>`; returns status, headers and JSON body.
async fn get(
    handle: &RetentlyHandle,
    auth: &str,
    path: &str,
    query: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client()
        .get(format!("{}{path}", handle.base_url))
        .header("Authorization", auth)
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("json body"))
}

fn key(handle: &RetentlyHandle) -> String {
    format!("api_key={}", handle.api_key)
}

async fn token(handle: &RetentlyHandle, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client()
        .post(&handle.token_url)
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    (status, response.json().await.expect("token json"))
}

#[tokio::test]
async fn the_code_and_refresh_flow_gives_bearer_tokens_that_open_the_api() {
    let (handle, _guard) = start(RetentlyOptions::default()).await;
    let response = client()
        .get(&handle.authorize_url)
        .query(&[
            ("client_id", handle.client_id.as_str()),
            ("redirect_uri", "https://www.example.com/"),
            ("response_type", "code"),
            ("state", "xyz"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = url::Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("url");
    let pairs: std::collections::HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "xyz");
    let code = pairs["code"].clone();

    let (status, first) = token(
        &handle,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &handle.client_id),
            ("client_secret", &handle.client_secret),
            ("redirect_uri", "https://www.example.com/"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["expires_in"], 21600);
    assert_eq!(first["token_type"], "Bearer");
    let access = first["access_token"].as_str().expect("access token");
    let (status, _, body) = get(&handle, &format!("Bearer {access}"), "/api/v2/customers", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let refresh_form = |refresh: String| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", handle.client_id.clone()),
            ("client_secret", handle.client_secret.clone()),
            ("refresh_token", refresh),
        ]
    };
    let first_refresh = first["refresh_token"].as_str().expect("refresh token").to_owned();
    let form = refresh_form(first_refresh.clone());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, second) = token(&handle, &form).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(
        second["refresh_token"], first["refresh_token"],
        "rotated by default"
    );
    let access = second["access_token"].as_str().expect("access token");
    let (status, _, _) = get(&handle, &format!("Bearer {access}"), "/api/v2/feedback", &[]).await;
    assert_eq!(status, StatusCode::OK);

    // The redeemed refresh token has a grace of one more use, then it is dead.
    let (status, _) = token(&handle, &form).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = token(&handle, &form).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );

    let (status, body) = token(
        &handle,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "x"),
            ("client_secret", "y"),
            ("refresh_token", "z"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_client"))
    );
}

#[tokio::test]
async fn without_rotation_the_same_refresh_token_comes_back() {
    let (handle, _guard) = start(RetentlyOptions {
        rotate_refresh_tokens: false,
        ..Default::default()
    })
    .await;
    let grant = handle.grant_tokens();
    let refresh = grant.refresh_token.expect("refresh token");
    for _ in 0..3 {
        let (status, body) = token(
            &handle,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &handle.client_id),
                ("client_secret", &handle.client_secret),
                ("refresh_token", &refresh),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["refresh_token"], refresh.as_str());
    }
}

#[tokio::test]
async fn the_api_key_opens_every_endpoint_and_a_bad_key_gets_the_documented_401() {
    let (handle, _guard) = start(RetentlyOptions::default()).await;
    for path in [
        "/api/v2/customers",
        "/api/v2/feedback",
        "/api/v2/companies",
        "/api/v2/campaigns",
        "/api/v2/nps/score",
    ] {
        let (status, _, body) = get(&handle, &key(&handle), path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let expected =
        json!({"message": "Please check your API Key to make sure it's valid.", "code": 401, "data": null});
    let (status, _, body) = get(&handle, "api_key=wrong", "/api/v2/customers", &[]).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, expected.clone()));
    let (status, _, body) = get(&handle, "Bearer not-a-token", "/api/v2/feedback", &[]).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, expected.clone()));
    let response = client()
        .get(format!("{}/api/v2/companies", handle.base_url))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.json::<Value>().await.expect("json"), expected);
}

/// Walks every page of a list endpoint and returns the records and the page count seen.
async fn walk(
    handle: &RetentlyHandle,
    path: &str,
    collection: &str,
    query: &[(&str, &str)],
) -> (Vec<Value>, u64) {
    let mut records = Vec::new();
    let mut page = 1u64;
    loop {
        let page_text = page.to_string();
        let mut q = query.to_vec();
        q.push(("page", &page_text));
        let (status, _, body) = get(handle, &key(handle), path, &q).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["message"], "Success.");
        assert_eq!(body["code"], 200);
        let data = &body["data"];
        assert_eq!(data["page"], page);
        records.extend(data[collection].as_array().expect("collection").iter().cloned());
        let pages = data["pages"].as_u64().expect("pages");
        if page >= pages {
            assert_eq!(data["total"].as_u64(), Some(records.len() as u64));
            return (records, pages);
        }
        page += 1;
    }
}

#[tokio::test]
async fn paging_covers_every_record_exactly_once() {
    let (handle, _guard) = start(RetentlyOptions::default()).await;
    let (customers, pages) = walk(&handle, "/api/v2/customers", "subscribers", &[("limit", "7")]).await;
    assert_eq!(pages, 120u64.div_ceil(7));
    assert_eq!(
        customers,
        handle.customers(None, None),
        "default order is -createdDate"
    );
    let ids: HashSet<&str> = customers.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 120);

    let (responses, _) = walk(&handle, "/api/v2/feedback", "responses", &[]).await;
    assert_eq!(responses, handle.feedback(None, None));
    let (companies, _) = walk(
        &handle,
        "/api/v2/companies",
        "companies",
        &[("sort", "companyName")],
    )
    .await;
    let mut expected = handle.companies();
    expected.sort_by(|a, b| a["companyName"].as_str().cmp(&b["companyName"].as_str()));
    assert_eq!(companies, expected);

    let (_, _, body) = get(&handle, &key(&handle), "/api/v2/customers", &[]).await;
    assert_eq!(
        (body["data"]["limit"].clone(), body["data"]["sort"].clone()),
        (json!(20), json!("-createdDate"))
    );
    let (status, _, body) = get(&handle, &key(&handle), "/api/v2/customers", &[("limit", "1001")]).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(400))
    );
    let (status, _, _) = get(&handle, &key(&handle), "/api/v2/customers", &[("page", "0")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn created(record: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(record["createdDate"].as_str().expect("createdDate"))
        .expect("instant")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn date_filters_take_iso_or_unix_seconds_and_match_the_expected_records() {
    let (handle, _guard) = start(RetentlyOptions::default()).await;
    let start = Utc.with_ymd_and_hms(2025, 5, 25, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2025, 5, 30, 0, 0, 0).unwrap();
    let expected = handle.feedback(Some(start), Some(end));
    assert!(expected.len() >= 16, "about 4 a day: {}", expected.len());
    assert!(expected.iter().all(|r| (start..=end).contains(&created(r))));

    let (iso, _) = walk(
        &handle,
        "/api/v2/feedback",
        "responses",
        &[
            ("startDate", "2025-05-25T00:00:00.000Z"),
            ("endDate", "2025-05-30T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(iso, expected);
    let (start_s, end_s) = (start.timestamp().to_string(), end.timestamp().to_string());
    let (unix, _) = walk(
        &handle,
        "/api/v2/feedback",
        "responses",
        &[("startDate", &start_s), ("endDate", &end_s)],
    )
    .await;
    assert_eq!(unix, expected);

    let (customers, _) = walk(
        &handle,
        "/api/v2/customers",
        "subscribers",
        &[("startDate", &start_s), ("endDate", &end_s)],
    )
    .await;
    assert_eq!(customers, handle.customers(Some(start), Some(end)));
    assert!(!customers.is_empty() && customers.len() < 120);

    let (status, _, _) = get(
        &handle,
        &key(&handle),
        "/api/v2/feedback",
        &[("startDate", "yesterday")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn campaigns_are_top_level_and_the_nps_score_is_computed_from_feedback() {
    let (handle, _guard) = start(RetentlyOptions::default()).await;
    let (_, _, body) = get(&handle, &key(&handle), "/api/v2/campaigns", &[]).await;
    assert_eq!(body["campaigns"], Value::Array(handle.campaigns()));

    let (_, _, body) = get(&handle, &key(&handle), "/api/v2/nps/score", &[]).await;
    let score = &body["data"];
    assert_eq!(score, &handle.nps_score());
    let feedback = handle.feedback(None, None);
    let promoters = feedback.iter().filter(|f| f["score"].as_u64() >= Some(9)).count();
    assert_eq!(score["promotersCount"], promoters);
    assert_eq!(score["totalResponses"], feedback.len());

    // Edits change what the API serves and the score it computes.
    let gone = feedback[0]["id"].as_str().expect("id").to_owned();
    handle.edits.delete(gone);
    let (_, _, body) = get(&handle, &key(&handle), "/api/v2/nps/score", &[]).await;
    assert_eq!(body["data"]["totalResponses"], feedback.len() - 1);
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_retry_after() {
    let (handle, _guard) = start(RetentlyOptions {
        rate_limit: 5,
        rate_window: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    for _ in 0..5 {
        let (status, _, _) = get(&handle, &key(&handle), "/api/v2/campaigns", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = get(&handle, &key(&handle), "/api/v2/campaigns", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({"message": "Too Many Requests", "code": 429, "data": null})
    );
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after));
    assert_eq!(handle.rate_limited_responses(), 1);
    assert_eq!(handle.max_calls_in_any_window(Duration::from_secs(2)), 6);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, _) = get(&handle, &key(&handle), "/api/v2/campaigns", &[]).await;
    assert_eq!(status, StatusCode::OK, "a new window began");
}
