//! A GraphQL vendor started with a field removed (`removed_fields`): introspection no longer
//! shows it, a query selecting it is refused as an unknown field, and the rest of the schema
//! works as before.

use sandbox::drift::RemovedField;
use sandbox::retarus::RetarusHandle;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

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
    let body: Value = response.json().await.expect("token JSON");
    body["access_token"].as_str().expect("access_token").to_string()
}

async fn post(retarus: &RetarusHandle, token: &str, query: &str) -> Value {
    let response = reqwest::Client::new()
        .post(&retarus.graphql_url)
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("GraphQL request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("GraphQL JSON")
}

fn field_names(body: &Value) -> Vec<&str> {
    body["data"]["__type"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn a_removed_field_is_gone_from_introspection_and_refused_in_queries() {
    let mut options = SandboxOptions::default();
    options.retarus.removed_fields = vec!["FaxInUdrReportRecord.faxId".parse().expect("Type.field")];
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let retarus = &sandbox.retarus;
    let token = token(retarus).await;

    // (`name` is selected: the removal recognises the type by it.)
    let introspected = post(
        retarus,
        &token,
        r#"{ __type(name: "FaxInUdrReportRecord") { name fields { name } } }"#,
    )
    .await;
    let fields = field_names(&introspected);
    assert!(!fields.contains(&"faxId"), "{fields:?}");
    assert!(fields.contains(&"customerId"), "{fields:?}");
    // The same field of another type stays.
    let other = post(
        retarus,
        &token,
        r#"{ __type(name: "FaxOutUdrReportRecord") { name fields { name } } }"#,
    )
    .await;
    assert!(field_names(&other).contains(&"faxId"));

    let to = chrono::Utc::now().format("%Y-%m-%dT00:00:00.000Z");
    let from = (chrono::Utc::now() - chrono::TimeDelta::days(3)).format("%Y-%m-%dT00:00:00.000Z");
    let query = |selection: &str| {
        format!(
            r#"{{ faxInUdrReport(customerId: "99999", datePeriod: {{fromIncluded: "{from}", toExcluded: "{to}"}}) {{ content {{ {selection} }} }} }}"#
        )
    };
    let refused = post(retarus, &token, &query("customerId faxId")).await;
    assert_eq!(refused["data"], Value::Null, "{refused}");
    assert_eq!(
        refused["errors"][0]["message"],
        json!(r#"Unknown field "faxId" on type "FaxInUdrReportRecord"."#)
    );
    let served = post(retarus, &token, &query("customerId")).await;
    assert!(served.get("errors").is_none(), "{served}");
    assert!(
        !served["data"]["faxInUdrReport"]["content"]
            .as_array()
            .expect("content")
            .is_empty()
    );
}

#[tokio::test]
async fn a_removal_naming_no_field_fails_every_request_saying_so() {
    let mut options = SandboxOptions::default();
    options.retarus.removed_fields = vec![RemovedField::new("FaxInUdrReportRecord", "nope")];
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let token = token(&sandbox.retarus).await;
    let body = post(&sandbox.retarus, &token, "{ __typename }").await;
    assert_eq!(
        body["errors"][0]["message"],
        json!("sandbox misconfigured: the schema has no field FaxInUdrReportRecord.nope to remove")
    );
}
