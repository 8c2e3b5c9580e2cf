//! A Retently list answer, `{"data": {"<resource>": [...], "page", "pages", "total"}}`, decoded
//! straight into its records' types: the records sit under the resource's own key (`customers`,
//! `responses`, `companies`), so the key is given at run time, through a serde seed.

use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::executor::Nullable;

/// The `data` of a list answer: its records and paging.
#[derive(Debug)]
pub(super) struct ListData<T> {
    pub page: Option<i64>,
    pub pages: Option<i64>,
    /// Records matching the query, over all pages (documented: `"total":1000`).
    pub total: Option<i64>,
    /// The records under the resource's key; empty when the key is absent or null.
    pub records: Vec<Option<T>>,
}

/// Decodes a whole list answer; its value is `None` when the answer has no `data`.
pub(super) struct ListAnswer<'k, T> {
    /// The resource's key inside `data`.
    pub key: &'k str,
    pub records: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ListAnswer<'_, T> {
    type Value = Option<ListData<T>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ListAnswer<'_, T> {
    type Value = Option<ListData<T>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Retently answer object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut data = None;
        while let Some(field) = map.next_key::<String>()? {
            if field == "data" {
                if data.is_some() {
                    return Err(de::Error::duplicate_field("data"));
                }
                data = Some(map.next_value_seed(Nullable(ListDataSeed::<T> {
                    key: self.key,
                    records: PhantomData,
                }))?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(data.flatten())
    }
}

struct ListDataSeed<'k, T> {
    key: &'k str,
    records: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ListDataSeed<'_, T> {
    type Value = ListData<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ListDataSeed<'_, T> {
    type Value = ListData<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list's data with `{}`", self.key)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut data = ListData {
            page: None,
            pages: None,
            total: None,
            records: Vec::new(),
        };
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "page" => data.page = map.next_value()?,
                "pages" => data.pages = map.next_value()?,
                "total" => data.total = map.next_value()?,
                key if key == self.key => {
                    // The error names the field: an operator reads which list had the wrong shape.
                    data.records = map
                        .next_value::<Option<Vec<Option<T>>>>()
                        .map_err(|e| de::Error::custom(format_args!("data.{key}: {e}")))?
                        .unwrap_or_default();
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Item {
        id: String,
    }

    fn decode(answer: &str) -> Result<Option<ListData<Item>>, serde_json::Error> {
        ListAnswer {
            key: "customers",
            records: PhantomData,
        }
        .deserialize(&mut serde_json::Deserializer::from_str(answer))
    }

    #[test]
    fn the_records_under_the_resources_key_are_decoded_with_the_paging() {
        let data = decode(
            r#"{"code": 200, "data": {"page": 2, "pages": 3, "total": 5, "other": [{"x": 1}],
                "customers": [{"id": "a"}, null, {"id": "b"}]}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((data.page, data.pages, data.total), (Some(2), Some(3), Some(5)));
        let ids: Vec<_> = data.records.into_iter().map(|r| r.map(|i| i.id)).collect();
        assert_eq!(ids, [Some("a".to_owned()), None, Some("b".to_owned())]);
    }

    #[test]
    fn no_data_no_records_and_records_of_the_wrong_shape_are_told_apart() {
        assert!(decode(r#"{"message": "x"}"#).unwrap().is_none());
        assert!(decode(r#"{"data": null}"#).unwrap().is_none());
        let empty = decode(r#"{"data": {"page": 1, "customers": null}}"#)
            .unwrap()
            .unwrap();
        assert!(empty.records.is_empty());
        let error = decode(r#"{"data": {"customers": [{"id": 5}]}}"#).unwrap_err();
        assert!(error.is_data(), "{error}");
        assert!(
            error.to_string().starts_with("data.customers: invalid type"),
            "{error}"
        );
    }
}
