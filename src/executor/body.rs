//! Decoding a GraphQL answer straight into the query's types (or, when that fails, telling
//! garbled JSON, GraphQL errors and data of the wrong shape apart). Bodies arrive whole and
//! within the size limit from [`crate::transport`].

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::classify::{Dialect, GraphqlClass, GraphqlError, Verdict};
use super::{GraphqlOutcome, classify};
use crate::failure::FailureKind;

/// GraphQL answer body in any vendor's dialect (see [`classify::GraphqlError`]).
#[derive(Deserialize)]
pub(super) struct GraphqlBody {
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

/// `null` or absent as `None`, anything else through the inner seed.
pub(crate) struct Nullable<S>(pub S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

/// A GraphQL answer (`data` through the seed, `errors` in any vendor's dialect, anything else
/// ignored) decoded in one pass over the body.
struct Envelope<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Envelope<S> {
    type Value = (Option<S::Value>, Option<Vec<GraphqlError>>);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Envelope<S> {
    type Value = (Option<S::Value>, Option<Vec<GraphqlError>>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a GraphQL answer object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seed = Some(self.0);
        let (mut data, mut errors) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => {
                    let seed = seed.take().ok_or_else(|| de::Error::duplicate_field("data"))?;
                    data = map.next_value_seed(Nullable(seed))?;
                }
                "errors" => errors = map.next_value()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok((data, errors))
    }
}

/// Decodes a GraphQL answer's `data` with a fresh seed from `seed` (one per attempt, so a failed
/// attempt's partial work is dropped): into the query's types (`PhantomData<T>`), or straight
/// into what a loader makes of it, such as a page's COPY text.
pub(super) fn decode_graphql<S, T>(
    dialect: &dyn Dialect,
    body: &[u8],
    seed: &impl Fn() -> S,
) -> Result<GraphqlOutcome<T>, Verdict>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    // Straight into the seed's types: building a `serde_json::Value` tree first and converting
    // it was half the loader's CPU time and most of its memory. An answer that does not decode
    // this way takes the untyped path below, which tells garbled JSON, GraphQL errors and data
    // of the wrong shape apart.
    let mut json = serde_json::Deserializer::from_slice(body);
    if let Ok((data, errors)) = Envelope(seed()).deserialize(&mut json)
        && json.end().is_ok()
    {
        let mut warnings = Vec::new();
        if let Some(errors) = errors.filter(|e| !e.is_empty()) {
            match classify::graphql(dialect, &errors, data.is_some()) {
                GraphqlClass::Partial { warnings: w } => warnings = w,
                GraphqlClass::Failed(verdict) => return Err(verdict),
            }
        }
        if let Some(data) = data {
            return Ok(GraphqlOutcome { data, warnings });
        }
    }
    let parsed: GraphqlBody = serde_json::from_slice(body).map_err(|e| classify::undecodable(&e, body))?;
    let data = parsed.data.filter(|d| !d.is_null());
    let mut warnings = Vec::new();
    if let Some(errors) = parsed.errors.filter(|e| !e.is_empty()) {
        match classify::graphql(dialect, &errors, data.is_some()) {
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
    let data = seed().deserialize(data).map_err(|e| Verdict::Fatal {
        cause: format!("the data does not match the query's types: {e}"),
        kind: FailureKind::SchemaMismatch,
    })?;
    Ok(GraphqlOutcome { data, warnings })
}
