//! Reading an answer's body within the size limit, and decoding a GraphQL answer straight into
//! the query's types (or, when that fails, telling garbled JSON, GraphQL errors and data of the
//! wrong shape apart).

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::classify::{GraphqlClass, GraphqlError, Verdict};
use super::{GraphqlOutcome, classify};
use crate::failure::FailureKind;

/// A body read up to the size limit.
pub(super) enum Body {
    Complete(Bytes),
    TooLarge,
}

/// Reads the answer's body chunk by chunk, stopping as soon as it exceeds `max` bytes (the
/// announced length is checked first, so an honest oversized answer is not read at all).
pub(super) async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Body, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(Body::TooLarge);
    }
    // Sized from the announced length: growing by doubling held up to twice a page's size.
    let announced = response.content_length().map_or(0, |n| n as usize);
    let mut body = bytes::BytesMut::with_capacity(announced.min(max));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body.freeze()))
}

/// GraphQL answer body in any vendor's dialect (see [`classify::GraphqlError`]).
#[derive(Deserialize)]
pub(super) struct GraphqlBody {
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

/// A GraphQL answer decoded straight into the query's types.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
pub(super) struct TypedGraphqlBody<T> {
    #[serde(default = "none")]
    data: Option<T>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

pub(super) fn none<T>() -> Option<T> {
    None
}

pub(super) fn decode_graphql<T: DeserializeOwned>(body: &[u8]) -> Result<GraphqlOutcome<T>, Verdict> {
    // Straight into the query's types: building a `serde_json::Value` tree first and converting
    // it was half the loader's CPU time and most of its memory. An answer that does not decode
    // this way takes the untyped path below, which tells garbled JSON, GraphQL errors and data
    // of the wrong shape apart.
    if let Ok(typed) = serde_json::from_slice::<TypedGraphqlBody<T>>(body) {
        let mut warnings = Vec::new();
        if let Some(errors) = typed.errors.filter(|e| !e.is_empty()) {
            match classify::graphql(&errors, typed.data.is_some()) {
                GraphqlClass::Partial { warnings: w } => warnings = w,
                GraphqlClass::Failed(verdict) => return Err(verdict),
            }
        }
        if let Some(data) = typed.data {
            return Ok(GraphqlOutcome { data, warnings });
        }
    }
    let parsed: GraphqlBody = serde_json::from_slice(body).map_err(|e| classify::undecodable(&e, body))?;
    let data = parsed.data.filter(|d| !d.is_null());
    let mut warnings = Vec::new();
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        match classify::graphql(&errors, data.is_some()) {
            GraphqlClass::Partial { warnings: w } => warnings = w,
            GraphqlClass::Failed(verdict) => return Err(verdict),
        }
    }
    let Some(data) = data else {
        return Err(Verdict::Retry {
            cause: "the answer has neither data nor errors".into(),
            after: None,
            kind: FailureKind::InvalidAnswer,
        });
    };
    let data = serde_json::from_value::<T>(data).map_err(|e| Verdict::Fatal {
        cause: format!("the data does not match the query's types: {e}"),
        kind: FailureKind::SchemaMismatch,
    })?;
    Ok(GraphqlOutcome { data, warnings })
}
