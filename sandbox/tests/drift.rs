//! A GraphQL vendor started with a field removed (`removed_fields`): introspection no longer
//! shows it, a query selecting it is refused as an unknown field, and the rest of the schema
//! works as before. One started with a field retyped (`retyped_fields`): introspection names the
//! new scalar and answers carry the values as that scalar sends them.

use sandbox::drift::{NewScalar, RemovedField, RetypedField};
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

/// A Roubler GraphQL call for one location: the answer's JSON.
async fn roubler_post(
    sandbox: &Sandbox,
    token: &str,
    location: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = reqwest::Client::new()
        .post(&sandbox.roubler.graphql_url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(location) = location {
        request = request.header("X-Location-ID", location);
    }
    let response = request.send().await.expect("GraphQL request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("GraphQL JSON")
}

#[tokio::test]
async fn a_retyped_field_is_introspected_as_its_new_scalar_and_served_as_it() {
    for (to, name) in [(NewScalar::String, "String"), (NewScalar::Int, "Int")] {
        let mut options = SandboxOptions::default();
        options.roubler.retyped_fields = vec![RetypedField::new("LocationSalesDay", "day", to)];
        let sandbox = Sandbox::start(options).await.expect("sandbox starts");
        let token = sandbox.roubler.grant_tokens().access_token;

        let introspected = roubler_post(
            &sandbox,
            &token,
            None,
            r#"{ __type(name: "LocationSalesDay") { name fields { name type { kind name ofType { kind name } } } } }"#,
            json!({}),
        )
        .await;
        let fields = introspected["data"]["__type"]["fields"]
            .as_array()
            .expect("fields");
        let ty = |field: &str| fields.iter().find(|f| f["name"] == field).expect(field)["type"].clone();
        assert_eq!(
            ty("day"),
            json!({"kind": "SCALAR", "name": name, "ofType": null}),
            "{to:?}"
        );
        assert_eq!(ty("actual")["name"], json!("Float"));

        let company = sandbox.roubler.companies()[0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let location = sandbox.roubler.locations(&company)[0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let end = chrono::Utc::now();
        let start = end - chrono::TimeDelta::days(3);
        let expected = sandbox.roubler.location_sales(&location, start, end);
        assert!(!expected.is_empty());
        let instant =
            |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Under an alias and through a fragment, as a client may select it.
        let served = roubler_post(
            &sandbox,
            &token,
            Some(&location),
            "query($s: DateTime!, $e: DateTime!) { sales: locationSales(startTime: $s, endTime: $e) { d: day ...F } } fragment F on LocationSalesDay { day actual }",
            json!({"s": instant(start), "e": instant(end)}),
        )
        .await;
        let served = served["data"]["sales"]
            .as_array()
            .unwrap_or_else(|| panic!("{served}"));
        assert_eq!(served.len(), expected.len());
        for (served, expected) in served.iter().zip(&expected) {
            let text = expected["day"].as_str().expect("day");
            let day = match to {
                NewScalar::Int => json!(text.replace('-', "").parse::<i64>().expect("digits")),
                _ => json!(text),
            };
            assert_eq!(served["d"], day, "{to:?}");
            assert_eq!(served["day"], day, "{to:?}");
            assert_eq!(served["actual"], expected["actual"]);
        }
    }
}

#[tokio::test]
async fn a_retyping_naming_no_scalar_field_fails_every_request_saying_so() {
    let mut options = SandboxOptions::default();
    options.roubler.retyped_fields = vec![RetypedField::new("Query", "locationSales", NewScalar::String)];
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let token = sandbox.roubler.grant_tokens().access_token;
    let body = roubler_post(&sandbox, &token, None, "{ __typename }", json!({})).await;
    assert_eq!(
        body["errors"][0]["message"],
        json!("sandbox misconfigured: the schema has no scalar field Query.locationSales:String to retype")
    );
}
