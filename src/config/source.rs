//! Source settings: one configured upstream account (its kind, endpoints, credentials, limits).
//!
//! Defaults are the vendors' documented production endpoints (`docs/vendors/<vendor>.md`), so a
//! real deployment usually sets only credentials and scope.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::values::{HttpUrl, string_list};
use crate::catalog::SourceKind;

/// One upstream account. The `kind` key picks the variant.
#[derive(Debug, Clone)]
pub enum SourceSettings {
    Retarus(RetarusSettings),
    Roubler(RoublerSettings),
    Altrata(AltrataSettings),
    Retently(RetentlySettings),
}

/// Marks an error message whose text starts with the path inside a source (`@graphql_url: …`),
/// so the loader can report the full key. serde's internally tagged enums lose that path.
pub(super) const NESTED_PATH_MARK: char = '@';

impl<'de> Deserialize<'de> for SourceSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = config::Value::deserialize(deserializer)?;
        let table = value.clone().into_table().map_err(D::Error::custom)?;
        let kind = table
            .get("kind")
            .ok_or_else(|| D::Error::custom(format!("missing field `kind` ({})", kinds())))?
            .clone()
            .into_string()
            .map_err(D::Error::custom)?;
        // `kind` is consumed here; the variant structs deny unknown fields, so drop it first.
        let mut rest = table;
        rest.remove("kind");
        let rest = config::Value::new(None, config::ValueKind::Table(rest));
        fn variant<'de, T: Deserialize<'de>, E: Error>(value: config::Value) -> Result<T, E> {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let message = super::clean_serde_message(&e.inner().to_string());
                if path == "." || path.is_empty() {
                    E::custom(message)
                } else {
                    E::custom(format!("{NESTED_PATH_MARK}{path}: {message}"))
                }
            })
        }
        match SourceKind::from_name(&kind) {
            Some(SourceKind::Retarus) => variant(rest).map(SourceSettings::Retarus),
            Some(SourceKind::Roubler) => variant(rest).map(SourceSettings::Roubler),
            Some(SourceKind::Altrata) => variant(rest).map(SourceSettings::Altrata),
            Some(SourceKind::Retently) => variant(rest).map(SourceSettings::Retently),
            None => Err(D::Error::custom(format!(
                "kind `{kind}` is not one of {}",
                kinds()
            ))),
        }
    }
}

/// The kinds, for messages: `retarus, roubler, altrata, retently`.
fn kinds() -> String {
    SourceKind::ALL.map(SourceKind::as_str).join(", ")
}

/// `sources.NAME.archive`: the raw archive of the source's answers (`crate::archive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Days an archived answer is kept, counted from its window's commit (the service deletes
    /// older ones). 0 archives nothing and keeps nothing.
    #[serde(default = "ArchiveSettings::default_keep_days")]
    pub keep_days: u32,
}

impl ArchiveSettings {
    /// Longer than any vendor keeps its history (Retarus 90 days), so the archive outlives it.
    pub const DEFAULT_KEEP_DAYS: u32 = 400;

    fn default_keep_days() -> u32 {
        Self::DEFAULT_KEEP_DAYS
    }

    /// Whether loads of the source archive their answers.
    pub fn keeps_answers(&self) -> bool {
        self.keep_days > 0
    }
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            keep_days: Self::DEFAULT_KEEP_DAYS,
        }
    }
}

/// Calls allowed per period, enforced for all jobs of a source together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed in one period.
    pub calls: u32,
    /// Length of the period in milliseconds.
    pub per_ms: u64,
}

impl RateLimit {
    pub(crate) const fn new(calls: u32, per: Duration) -> Self {
        RateLimit {
            calls,
            per_ms: per.as_millis() as u64,
        }
    }

    pub(crate) fn period(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetarusSettings {
    #[serde(default = "RetarusSettings::default_token_url")]
    pub token_url: HttpUrl,
    #[serde(default = "RetarusSettings::default_graphql_url")]
    pub graphql_url: HttpUrl,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// Retarus customer account ids (a business id, not the OAuth client id).
    #[serde(deserialize_with = "string_list")]
    pub customer_ids: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    /// Allow plain `http://` endpoints (the sandbox); production endpoints are https.
    #[serde(default, deserialize_with = "super::values::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived (see `ArchiveSettings`).
    #[serde(default)]
    pub archive: ArchiveSettings,
}

impl RetarusSettings {
    fn default_token_url() -> HttpUrl {
        HttpUrl::parse(
            "https://api-auth-service.eu.retarus.com/realms/platform/protocol/openid-connect/token",
        )
        .expect("static URL")
    }
    fn default_graphql_url() -> HttpUrl {
        HttpUrl::parse("https://api.retarus.com/stable/external-reporting-service/v1").expect("static URL")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoublerSettings {
    #[serde(default = "RoublerSettings::default_authorize_url")]
    pub authorize_url: HttpUrl,
    #[serde(default = "RoublerSettings::default_token_url")]
    pub token_url: HttpUrl,
    /// Region endpoint, e.g. `https://graphql.au.roubler.com/graphql`.
    pub graphql_url: HttpUrl,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    /// Where the vendor sends the browser back after consent (`auth login` listens there).
    #[serde(default = "default_redirect_uri")]
    pub redirect_uri: HttpUrl,
    pub rate_limit: Option<RateLimit>,
    #[serde(default, deserialize_with = "super::values::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived (see `ArchiveSettings`).
    #[serde(default)]
    pub archive: ArchiveSettings,
    /// How long discovered companies and locations are used before they are asked for again
    /// (`etl.scope_cache`); 0 asks at every run.
    #[serde(default = "RoublerSettings::default_discovery_ttl_secs")]
    pub discovery_ttl_secs: u64,
}

impl RoublerSettings {
    /// An hour: discovery costs `1 + companies` calls of the 100-per-minute budget, and new
    /// locations are rare.
    fn default_discovery_ttl_secs() -> u64 {
        3600
    }
    fn default_authorize_url() -> HttpUrl {
        HttpUrl::parse("https://oidc.roubler.com/oauth2/auth").expect("static URL")
    }
    fn default_token_url() -> HttpUrl {
        HttpUrl::parse("https://oidc.roubler.com/oauth2/token").expect("static URL")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AltrataSettings {
    #[serde(default = "AltrataSettings::default_token_url")]
    pub token_url: HttpUrl,
    #[serde(default = "AltrataSettings::default_events_url")]
    pub events_url: HttpUrl,
    #[serde(default = "AltrataSettings::default_profile_url")]
    pub profile_url: HttpUrl,
    /// Service-user name (not the account e-mail).
    pub username: String,
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    /// Altrata ids (`1-per-<n>`, `1-org-<n>`) whose events and profiles are extracted.
    #[serde(default, deserialize_with = "string_list")]
    pub watch_ids: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    #[serde(default, deserialize_with = "super::values::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived (see `ArchiveSettings`).
    #[serde(default)]
    pub archive: ArchiveSettings,
}

impl AltrataSettings {
    fn default_token_url() -> HttpUrl {
        HttpUrl::parse("https://api-auth.altrata.com/oauth2/token").expect("static URL")
    }
    fn default_events_url() -> HttpUrl {
        HttpUrl::parse("https://events.altrata.com/v1/graphql").expect("static URL")
    }
    fn default_profile_url() -> HttpUrl {
        HttpUrl::parse("https://profile.altrata.com/v1/graphql/").expect("static URL")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentlySettings {
    #[serde(default = "RetentlySettings::default_base_url")]
    pub base_url: HttpUrl,
    #[serde(default = "RetentlySettings::default_authorize_url")]
    pub authorize_url: HttpUrl,
    #[serde(default = "RetentlySettings::default_token_url")]
    pub token_url: HttpUrl,
    /// Static API key (sent as `Authorization: api_key=KEY`); alternative to OAuth.
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_redirect_uri")]
    pub redirect_uri: HttpUrl,
    pub rate_limit: Option<RateLimit>,
    #[serde(default, deserialize_with = "super::values::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived (see `ArchiveSettings`).
    #[serde(default)]
    pub archive: ArchiveSettings,
}

impl RetentlySettings {
    fn default_base_url() -> HttpUrl {
        HttpUrl::parse("https://app.retently.com").expect("static URL")
    }
    fn default_authorize_url() -> HttpUrl {
        HttpUrl::parse("https://app.retently.com/api/oauth/authorize").expect("static URL")
    }
    fn default_token_url() -> HttpUrl {
        HttpUrl::parse("https://app.retently.com/api/oauth/token").expect("static URL")
    }
}

fn default_redirect_uri() -> HttpUrl {
    HttpUrl::parse("http://127.0.0.1:8788/callback").expect("static URL")
}

/// The proactive limit used when a source sets none: the vendor's documented budget, or a polite
/// guess where none is documented (Retarus; see `docs/vendors/README.md`, "At a glance").
fn default_rate_limit(kind: SourceKind) -> RateLimit {
    match kind {
        SourceKind::Retarus => RateLimit::new(5, Duration::from_secs(1)),
        SourceKind::Roubler => RateLimit::new(100, Duration::from_secs(60)),
        SourceKind::Altrata => RateLimit::new(2, Duration::from_secs(1)),
        SourceKind::Retently => RateLimit::new(150, Duration::from_secs(60)),
    }
}

impl SourceSettings {
    pub(crate) fn kind(&self) -> SourceKind {
        match self {
            SourceSettings::Retarus(_) => SourceKind::Retarus,
            SourceSettings::Roubler(_) => SourceKind::Roubler,
            SourceSettings::Altrata(_) => SourceKind::Altrata,
            SourceSettings::Retently(_) => SourceKind::Retently,
        }
    }

    pub(crate) fn rate_limit(&self) -> RateLimit {
        let configured = match self {
            SourceSettings::Retarus(s) => s.rate_limit,
            SourceSettings::Roubler(s) => s.rate_limit,
            SourceSettings::Altrata(s) => s.rate_limit,
            SourceSettings::Retently(s) => s.rate_limit,
        };
        configured.unwrap_or_else(|| default_rate_limit(self.kind()))
    }

    /// How long this source's discovered scopes may be reused (`sources.NAME.discovery_ttl_secs`);
    /// `None` for kinds whose scopes come from the configuration and cost no call.
    pub(crate) fn discovery_ttl(&self) -> Option<Duration> {
        match self {
            SourceSettings::Roubler(s) => Some(Duration::from_secs(s.discovery_ttl_secs)),
            _ => None,
        }
    }

    /// `sources.NAME.archive`.
    pub fn archive(&self) -> &ArchiveSettings {
        match self {
            SourceSettings::Retarus(s) => &s.archive,
            SourceSettings::Roubler(s) => &s.archive,
            SourceSettings::Altrata(s) => &s.archive,
            SourceSettings::Retently(s) => &s.archive,
        }
    }

    pub(crate) fn allow_http(&self) -> bool {
        match self {
            SourceSettings::Retarus(s) => s.allow_http,
            SourceSettings::Roubler(s) => s.allow_http,
            SourceSettings::Altrata(s) => s.allow_http,
            SourceSettings::Retently(s) => s.allow_http,
        }
    }

    /// Every endpoint with its key name, for validation and for `check`.
    pub(crate) fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        match self {
            SourceSettings::Retarus(s) => vec![("token_url", &s.token_url), ("graphql_url", &s.graphql_url)],
            SourceSettings::Roubler(s) => vec![
                ("authorize_url", &s.authorize_url),
                ("token_url", &s.token_url),
                ("graphql_url", &s.graphql_url),
            ],
            SourceSettings::Altrata(s) => vec![
                ("token_url", &s.token_url),
                ("events_url", &s.events_url),
                ("profile_url", &s.profile_url),
            ],
            SourceSettings::Retently(s) => vec![
                ("base_url", &s.base_url),
                ("authorize_url", &s.authorize_url),
                ("token_url", &s.token_url),
            ],
        }
    }

    /// The authentication flow, in words, for `check` and `auth status`.
    pub(crate) fn flow(&self) -> &'static str {
        match self {
            SourceSettings::Retarus(_) => "client credentials (form body)",
            SourceSettings::Roubler(_) => "authorization code + rotating refresh token",
            SourceSettings::Altrata(_) => "client credentials (Basic + x-api-key)",
            SourceSettings::Retently(s) if s.api_key.is_some() => "static API key",
            SourceSettings::Retently(_) => "authorization code + refresh token",
        }
    }
}
