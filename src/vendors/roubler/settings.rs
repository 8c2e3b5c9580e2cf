//! The `kind = "roubler"` section of a source: the regional GraphQL endpoint, the OAuth client
//! (authorization code with rotating refresh tokens) and how long discovered scopes are reused.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::catalog::SourceKind;
use crate::auth::{self, AuthSetup, Flow, LoginSetup, endpoint::ClientAuth};
use crate::executor::{CallSetup, Service};
use crate::config::{ArchiveSettings, Parts, HttpUrl, RateLimit, Section, SectionCheck, bounds, default_redirect_uri};

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
    #[serde(default, deserialize_with = "crate::config::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived.
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

impl Section for RoublerSettings {
    fn kind(&self) -> SourceKind {
        super::KIND
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The documented 100 calls a minute.
    fn default_rate_limit(&self) -> RateLimit {
        RateLimit::new(100, Duration::from_secs(60))
    }

    fn allow_http(&self) -> bool {
        self.allow_http
    }

    fn archive(&self) -> ArchiveSettings {
        self.archive
    }

    fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        vec![
            ("authorize_url", &self.authorize_url),
            ("token_url", &self.token_url),
            ("graphql_url", &self.graphql_url),
        ]
    }

    fn flow(&self) -> &'static str {
        "authorization code + rotating refresh token"
    }

    fn discovery_ttl(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.discovery_ttl_secs))
    }

    fn validate(&mut self, check: &mut SectionCheck<'_>) {
        check.in_range(
            "discovery_ttl_secs",
            self.discovery_ttl_secs,
            bounds::DISCOVERY_TTL_SECS,
            "seconds",
        );
        check.non_empty("client_id", &self.client_id);
        check.secret("client_secret", &mut self.client_secret, &self.client_secret_file, true);
    }

    /// Authorization code with PKCE and single-use rotating refresh tokens at Hydra, which
    /// revokes the old access token on refresh; one GraphQL service per region.
    fn parts(&self, parts: &mut Parts) {
        parts.put(AuthSetup {
            flow: Flow::RefreshChain {
                token_url: self.token_url.clone(),
                client: ClientAuth::Basic {
                    client_id: self.client_id.clone(),
                    secret: auth::secret(&self.client_secret),
                },
                margin: Duration::from_secs(120),
            },
            kills_previous_token: true,
            login: Some(LoginSetup {
                authorize_url: self.authorize_url.clone(),
                redirect_uri: self.redirect_uri.clone(),
                client_id: self.client_id.clone(),
                pkce: true,
                scope: Some("offline_access"),
            }),
        });
        parts.put(CallSetup {
            graphql: vec![(Service::DEFAULT, self.graphql_url.clone())],
            rest_base: None,
            api_key: None,
            answers: &super::answers::Answers,
        });
    }
}
