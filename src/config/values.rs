//! Typed configuration values that validate themselves while being deserialised, so a bad value
//! fails at load time with an error that quotes it (the key is added by the loader).

use std::fmt;
use std::str::FromStr;

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Deserializer};
use url::Url;

use super::redact::redact_userinfo;

/// An absolute `http` or `https` URL. Whether plain `http` is allowed is decided per source.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(Url);

impl HttpUrl {
    /// Refuses user-info (`https://user:pass@host`): credentials have their own keys, and a URL
    /// is printed by `check` and in errors. Errors quote the value with any user-info redacted.
    pub fn parse(value: &str) -> Result<Self, String> {
        let shown = redact_userinfo(value);
        let url = Url::parse(value).map_err(|e| format!("`{shown}` is not a valid URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{shown}` carries credentials (user:password@); put them in their own keys, never in a URL"
            ));
        }
        match url.scheme() {
            "http" | "https" if url.host().is_some() => Ok(HttpUrl(url)),
            _ => Err(format!("`{shown}` is not an http(s) URL with a host")),
        }
    }

    pub(crate) fn url(&self) -> &Url {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub(crate) fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// A URL relative to this one's origin, e.g. `/oauth2/token` on the same host.
    pub(crate) fn join(&self, path: &str) -> Result<HttpUrl, String> {
        self.0
            .join(path)
            .map(HttpUrl)
            .map_err(|e| format!("cannot join `{path}` to `{}`: {e}", self.0))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        HttpUrl::parse(value.trim()).map_err(serde::de::Error::custom)
    }
}

/// A 6-field cron expression, seconds first (`"0 30 2 * * *"`), as tokio-cron-scheduler reads it.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
}

impl CronSchedule {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let fields = value.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "`{value}` has {fields} fields; a schedule needs 6 (seconds first), e.g. \"0 30 2 * * *\""
            ));
        }
        let cron = cron_parser()
            .parse(value)
            .map_err(|e| format!("`{value}` is not a valid cron expression: {e}"))?;
        Ok(CronSchedule {
            expression: value.to_owned(),
            cron,
        })
    }

    pub(crate) fn expression(&self) -> &str {
        &self.expression
    }

    pub(crate) fn cron(&self) -> &Cron {
        &self.cron
    }
}

/// The parser tokio-cron-scheduler uses, so what validates here also schedules there.
pub fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.expression)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        CronSchedule::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone name such as `Europe/Berlin`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub Tz);

impl TimeZone {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        Tz::from_str(value.trim())
            .map(TimeZone)
            .map_err(|_| format!("`{value}` is not an IANA time zone name (e.g. \"Europe/Berlin\", \"UTC\")"))
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(Tz::UTC)
    }
}

impl fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.name())
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        TimeZone::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// A list that environment variables can give as one comma-separated string
/// (`REPORTING_ETL__SOURCES__RETARUS__CUSTOMER_IDS=99999,88888`) and files as an array.
///
/// A visitor rather than an untagged enum: serde's untagged error ("did not match any variant")
/// would hide the offending value.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;
    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or one comma-separated string")
        }
        fn visit_str<E: serde::de::Error>(self, joined: &str) -> Result<Self::Value, E> {
            Ok(joined.split(',').map(str::to_owned).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    let items = deserializer.deserialize_any(ListVisitor)?;
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// A socket address (`127.0.0.1:9187`); the error quotes the value, which std's does not.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::net::SocketAddr, D::Error> {
    let value = String::deserialize(deserializer)?;
    value.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{value}` is not an IP address with a port (e.g. \"127.0.0.1:9187\")"
        ))
    })
}

/// A boolean that is a boolean: `true`/`false` in the file, or exactly the text `true`/`false`
/// in an environment variable. The `config` crate alone would also take `"yes"`, `"on"` or `1`.
pub(crate) fn strict_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct BoolVisitor;
    impl<'de> serde::de::Visitor<'de> for BoolVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<bool, E> {
            match value.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::custom(format!(
                    "`{value}` is not a boolean; use true or false"
                ))),
            }
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<bool, E> {
            Err(E::custom(format!(
                "`{value}` is not a boolean; use true or false"
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<bool, E> {
            Err(E::custom(format!(
                "`{value}` is not a boolean; use true or false"
            )))
        }
        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<bool, E> {
            Err(E::custom(format!(
                "`{value}` is not a boolean; use true or false"
            )))
        }
    }
    deserializer.deserialize_any(BoolVisitor)
}

/// An optional calendar date (`2025-01-31`); the error quotes the value, which chrono's does not.
pub(crate) fn optional_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<chrono::NaiveDate>, D::Error> {
    let Some(value) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{value}` is not a date (YYYY-MM-DD)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_five_field_cron_expression_is_refused_with_a_hint() {
        let error = CronSchedule::parse("30 2 * * *").err().unwrap();
        assert!(error.contains("`30 2 * * *`") && error.contains("6"), "{error}");
    }

    #[test]
    fn a_url_must_be_absolute_http() {
        assert!(HttpUrl::parse("ftp://example.com").is_err());
        assert!(HttpUrl::parse("example.com/x").is_err());
        assert!(HttpUrl::parse("https://example.com/x").unwrap().is_https());
    }
}
