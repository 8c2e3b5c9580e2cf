//! The `kind = "altrata"` section of a source: its two GraphQL services, the service user with
//! its API key, and the watch-list.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::catalog::SourceKind;
use crate::auth::{self, AuthSetup, Flow, endpoint::ClientAuth};
use crate::executor::CallSetup;
use crate::config::{ArchiveSettings, Parts, HttpUrl, RateLimit, Section, SectionCheck, string_list};

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
    #[serde(default, deserialize_with = "crate::config::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived.
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

impl Section for AltrataSettings {
    fn kind(&self) -> SourceKind {
        super::KIND
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The usage plan's documented two calls a second.
    fn default_rate_limit(&self) -> RateLimit {
        RateLimit::new(2, Duration::from_secs(1))
    }

    fn allow_http(&self) -> bool {
        self.allow_http
    }

    fn archive(&self) -> ArchiveSettings {
        self.archive
    }

    fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        vec![
            ("token_url", &self.token_url),
            ("events_url", &self.events_url),
            ("profile_url", &self.profile_url),
        ]
    }

    fn flow(&self) -> &'static str {
        "client credentials (Basic + x-api-key)"
    }

    fn validate(&mut self, check: &mut SectionCheck<'_>) {
        check.non_empty("username", &self.username);
        check.secret("password", &mut self.password, &self.password_file, true);
        check.secret("api_key", &mut self.api_key, &self.api_key_file, true);
    }

    /// Client credentials with Basic `username:password` and the API key; a new token kills the
    /// previous one. Two GraphQL services, the API key sent on every call.
    fn parts(&self, parts: &mut Parts) {
        parts.put(AuthSetup {
            flow: Flow::ClientCredentials {
                token_url: self.token_url.clone(),
                client: ClientAuth::BasicWithApiKey {
                    username: self.username.clone(),
                    password: auth::secret(&self.password),
                    api_key: auth::secret(&self.api_key),
                },
                margin: Duration::from_secs(300),
            },
            kills_previous_token: true,
            login: None,
        });
        parts.put(CallSetup {
            graphql: vec![
                (super::EVENTS, self.events_url.clone()),
                (super::PROFILE, self.profile_url.clone()),
            ],
            rest_base: None,
            api_key: self.api_key.clone(),
            answers: &super::answers::Answers,
        });
    }
}
