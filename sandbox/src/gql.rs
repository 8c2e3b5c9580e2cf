//! Pieces shared by the GraphQL vendors: the `DateTime` and `Date` scalars every schema uses,
//! bearer-token extraction and a body parser that never panics on malformed input.
//!
//! The scalars exist because async-graphql's chrono scalars print `+00:00` and variable
//! precision (and call the date type `NaiveDate`); the vendors' documents show
//! `"2025-06-04T08:00:00.000Z"` and `"2024-05-19"`, and the service maps exactly those to chrono.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, served as ISO-8601 UTC with millisecond precision and `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GqlDateTime(pub DateTime<Utc>);

impl GqlDateTime {
    /// The wire form, e.g. `2025-06-04T08:00:00.000Z`.
    pub fn format(&self) -> String {
        format_instant(self.0)
    }
}

/// The wire form of an instant, e.g. `2025-06-04T08:00:00.000Z`.
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 instant (any offset) into UTC.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[Scalar(name = "DateTime")]
impl ScalarType for GqlDateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_instant(text)
                .map(GqlDateTime)
                .ok_or_else(|| InputValueError::custom(format!("Invalid DateTime: {text:?}"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.format())
    }
}

impl Serialize for GqlDateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.format())
    }
}

impl<'de> Deserialize<'de> for GqlDateTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_instant(&text)
            .map(GqlDateTime)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid DateTime {text:?}")))
    }
}

/// A calendar date without time zone, served as `YYYY-MM-DD` (AppSync's `AWSDate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GqlDate(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for GqlDate {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map(GqlDate)
                .map_err(|_| InputValueError::custom(format!("Invalid Date: {text:?}"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

impl Serialize for GqlDate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.format("%Y-%m-%d").to_string())
    }
}

impl<'de> Deserialize<'de> for GqlDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(GqlDate)
            .map_err(|_| serde::de::Error::custom(format!("invalid Date {text:?}")))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// `(user, password)` of an `Authorization: Basic base64(user:password)` header, if well formed.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// OAuth client credentials from a Basic header, decoded as RFC 6749 §2.3.1 wants: each part was
/// form-urlencoded before the two were joined, so `+` is a space and `%2B` a plus.
pub fn client_basic(headers: &HeaderMap) -> Option<(String, String)> {
    let (id, secret) = basic(headers)?;
    Some((form_decode(&id), form_decode(&secret)))
}

fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Parses a GraphQL-over-HTTP POST body (`{query, variables, operationName}`).
/// A body that is not such JSON yields the standard error envelope instead of a panic.
pub fn parse_request(body: &[u8]) -> Result<async_graphql::Request, serde_json::Value> {
    serde_json::from_slice::<async_graphql::Request>(body).map_err(|error| {
        serde_json::json!({
            "errors": [{
                "message": format!("Invalid GraphQL request body: {error}"),
                "extensions": {"classification": "BAD_REQUEST"}
            }]
        })
    })
}

/// A JSON response with the given status.
pub fn json(status: axum::http::StatusCode, body: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(body)).into_response()
}
