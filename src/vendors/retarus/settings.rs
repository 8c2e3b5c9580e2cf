//! The `kind = "retarus"` section of a source: endpoints (the documented production ones by
//! default), client credentials and the customer accounts to read.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::catalog::SourceKind;
use crate::auth::{self, AuthSetup, Flow, endpoint::ClientAuth};
use crate::executor::{CallSetup, Service};
use crate::config::{ArchiveSettings, Parts, HttpUrl, RateLimit, Section, SectionCheck, string_list};

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
    #[serde(default, deserialize_with = "crate::config::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived.
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

impl Section for RetarusSettings {
    fn kind(&self) -> SourceKind {
        super::KIND
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Retarus documents no limit: five calls a second is a polite guess.
    fn default_rate_limit(&self) -> RateLimit {
        RateLimit::new(5, Duration::from_secs(1))
    }

    fn allow_http(&self) -> bool {
        self.allow_http
    }

    fn archive(&self) -> ArchiveSettings {
        self.archive
    }

    fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        vec![("token_url", &self.token_url), ("graphql_url", &self.graphql_url)]
    }

    fn flow(&self) -> &'static str {
        "client credentials (form body)"
    }

    fn validate(&mut self, check: &mut SectionCheck<'_>) {
        check.non_empty("client_id", &self.client_id);
        check.secret("client_secret", &mut self.client_secret, &self.client_secret_file, true);
        if self.customer_ids.is_empty() {
            check.problem("customer_ids", "is empty; list at least one Retarus customer id");
        }
    }

    /// OAuth2 client credentials at Keycloak (5-minute tokens, `scope=openid`); one GraphQL service.
    fn parts(&self, parts: &mut Parts) {
        parts.put(AuthSetup {
            flow: Flow::ClientCredentials {
                token_url: self.token_url.clone(),
                client: ClientAuth::FormWithScope {
                    client_id: self.client_id.clone(),
                    secret: auth::secret(&self.client_secret),
                },
                margin: Duration::from_secs(60),
            },
            kills_previous_token: false,
            login: None,
        });
        parts.put(CallSetup {
            graphql: vec![(Service::DEFAULT, self.graphql_url.clone())],
            rest_base: None,
            api_key: None,
            answers: &super::answers::Answers,
        });
    }
}
