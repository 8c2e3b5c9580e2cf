//! One Retarus report page decoded record by record, straight from the answer's bytes into COPY
//! text: each record into the query's generated type, then mapped to its row and encoded at
//! once, so a page never exists as a vector of records or rows (a serde seed, run by the
//! executor's `execute_seeded`).

use std::time::{Duration, Instant};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::datasets::Report;
use crate::datasets::rows::TableRow;
use crate::datasets::sink::PageText;
use crate::executor::Nullable;
use crate::stages::Stage;

/// One page of a report as decoded: its rows in COPY text and what the loader checks.
pub(super) struct DecodedPage {
    pub text: PageText,
    /// The natural-key hash of every record (skipped ones included), for [`SeenInLoad`].
    pub keys: Vec<u64>,
    /// Entries of `content`, nulls included.
    pub fetched: usize,
    /// Records without their filter timestamp: they belong to no window, so they are not stored
    /// (they could never be replaced or removed).
    pub untimed: usize,
    /// `hasMoreElements`.
    pub more: Option<bool>,
    /// The first customer id, other than the one asked for, that a record named (truncated):
    /// the page belongs to another customer and must not replace this one's rows.
    pub foreign_customer: Option<String>,
}

/// Decodes a report's `data` (`{ <FIELD>: { content: [...], hasMoreElements } }`) record by
/// record: each record is decoded into the query's generated type, mapped to its row and
/// encoded at once. The value is `None` when the report is null or absent.
pub(super) struct PageSeed<'a, R> {
    pub customer: &'a str,
    pub page: PageText,
    pub report: std::marker::PhantomData<R>,
}

impl<'de, R: Report> DeserializeSeed<'de> for PageSeed<'_, R> {
    type Value = Option<DecodedPage>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, R: Report> Visitor<'de> for PageSeed<'_, R> {
    type Value = Option<DecodedPage>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the query's data with `{}`", R::FIELD)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seed = Some(self);
        let mut decoded = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == R::FIELD {
                let seed = seed.take().ok_or_else(|| de::Error::duplicate_field(R::FIELD))?;
                decoded = map.next_value_seed(Nullable(ReportSeed(seed)))?;
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(decoded)
    }
}

/// The report object: `content` and `hasMoreElements`.
struct ReportSeed<'a, R>(PageSeed<'a, R>);

impl<'de, R: Report> DeserializeSeed<'de> for ReportSeed<'_, R> {
    type Value = DecodedPage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, R: Report> Visitor<'de> for ReportSeed<'_, R> {
    type Value = DecodedPage;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a report page object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let PageSeed { customer, page, .. } = self.0;
        let mut content = Some(ContentSeed::<R> {
            customer,
            page,
            report: std::marker::PhantomData,
        });
        let mut decoded = None;
        let mut more = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "content" => {
                    let seed = content
                        .take()
                        .ok_or_else(|| de::Error::duplicate_field("content"))?;
                    decoded = Some(map.next_value_seed(seed)?);
                }
                "hasMoreElements" => more = map.next_value()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        // No `content`: a page without records.
        let mut decoded = match (decoded, content) {
            (Some(decoded), _) => decoded,
            (None, Some(seed)) => seed.empty(),
            (None, None) => return Err(de::Error::custom("`content` was taken but not decoded")),
        };
        decoded.more = more;
        Ok(decoded)
    }
}

/// The `content` list, each record mapped and encoded as soon as it is decoded.
struct ContentSeed<'a, R> {
    customer: &'a str,
    page: PageText,
    report: std::marker::PhantomData<R>,
}

impl<R: Report> ContentSeed<'_, R> {
    fn empty(self) -> DecodedPage {
        DecodedPage {
            text: self.page,
            keys: Vec::new(),
            fetched: 0,
            untimed: 0,
            more: None,
            foreign_customer: None,
        }
    }
}

impl<'de, R: Report> DeserializeSeed<'de> for ContentSeed<'_, R> {
    type Value = DecodedPage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, R: Report> Visitor<'de> for ContentSeed<'_, R> {
    type Value = DecodedPage;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of records or null")
    }
    /// `content: null`: a page without records.
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let customer = self.customer;
        let mut decoded = self.empty();
        decoded.keys.reserve(seq.size_hint().unwrap_or(0));
        let mut scratch = String::new();
        let (mut mapping, mut encoding) = (Duration::ZERO, Duration::ZERO);
        while let Some(record) = seq.next_element::<Option<R::Record>>()? {
            decoded.fetched += 1;
            let Some(record) = record else { continue };
            let started = Instant::now();
            if decoded.foreign_customer.is_none()
                && let Some(other) = R::record_customer(&record).filter(|id| id.trim() != customer)
            {
                decoded.foreign_customer = Some(other.chars().take(64).collect());
            }
            let timed = R::filter_time(&record).is_some();
            let row = R::row(customer, record);
            decoded.keys.push(row.key_hash(&mut scratch));
            let mapped = Instant::now();
            mapping += mapped - started;
            if timed {
                decoded.text.push(&row).map_err(de::Error::custom)?;
            } else {
                decoded.untimed += 1;
            }
            encoding += mapped.elapsed();
        }
        // Mapping and encoding happen inside the decode: their time is theirs, not decoding's.
        Stage::Map.add(mapping);
        Stage::Encode.add(encoding);
        Stage::Decode.exclude(mapping + encoding);
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::rows::TableRow;
    use crate::vendors::retarus::datasets::{SmsInRow, SmsInUdr};

    fn decode(data: &str) -> Result<Option<DecodedPage>, serde_json::Error> {
        let seed = PageSeed::<SmsInUdr> {
            customer: "99",
            page: PageText::for_test(SmsInRow::spec()),
            report: std::marker::PhantomData,
        };
        seed.deserialize(&mut serde_json::Deserializer::from_str(data))
    }

    #[test]
    fn a_page_is_decoded_record_by_record_into_copy_text() {
        let page = decode(
            r#"{"other": [1, {"a": null}], "smsInUdrReport": {"pageIndex": 0, "content": [
                {"smsId": "s1", "receivedTs": "2026-03-01T10:00:00Z", "sender": "  +49 1\t2  ", "numberOfParts": 2},
                null,
                {"smsId": "s2", "receivedTs": null},
                {"smsId": "s1", "receivedTs": "2026-03-01T11:00:00Z"}
            ], "hasMoreElements": true}}"#,
        )
        .unwrap()
        .expect("a page");
        assert_eq!((page.fetched, page.untimed, page.more), (4, 1, Some(true)));
        assert_eq!(page.foreign_customer, None);
        assert_eq!(page.keys.len(), 3, "every record's key, the untimed one's too");
        assert_eq!(page.keys[0], page.keys[2], "same key, same hash");
        assert_eq!(page.text.rows(), 2);
        let text = page.text.text();
        let first: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
        assert_eq!(first.len(), 1 + SmsInRow::spec().columns.len() + 2);
        assert_eq!(&first[..4], ["test", "99", "s1", "2026-03-01 10:00:00+00"]);
        assert!(first.contains(&"+49 1\\t2"), "trimmed and escaped: {first:?}");
        assert_eq!(&first[first.len() - 2..], ["1", "1"], "run id, then _seq");
        assert!(text.lines().nth(1).unwrap().ends_with("\t1\t2"));
    }

    #[test]
    fn a_record_of_another_customer_is_noticed() {
        let page = decode(
            r#"{"smsInUdrReport": {"content": [
                {"smsId": "s1", "receivedTs": "2026-03-01T10:00:00Z", "customerId": "99"},
                {"smsId": "s2", "receivedTs": "2026-03-01T10:00:00Z", "customerId": "88888"},
                {"smsId": "s3", "receivedTs": "2026-03-01T10:00:00Z"}
            ], "hasMoreElements": false}}"#,
        )
        .unwrap()
        .expect("a page");
        assert_eq!(page.foreign_customer.as_deref(), Some("88888"));
    }

    #[test]
    fn a_null_report_or_content_and_a_wrong_shape_are_told_apart() {
        assert!(decode(r#"{"smsInUdrReport": null}"#).unwrap().is_none());
        assert!(decode(r#"{}"#).unwrap().is_none());
        let empty = decode(r#"{"smsInUdrReport": {"content": null, "hasMoreElements": false}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (empty.fetched, empty.more, empty.text.rows()),
            (0, Some(false), 0)
        );
        let error = decode(r#"{"smsInUdrReport": {"content": [{"smsId": 5}]}}"#)
            .err()
            .unwrap();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
