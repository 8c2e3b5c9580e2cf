//! The `kind = "retently"` section of a source: the REST base URL and either a static API key
//! or an OAuth client (authorization code + refresh token).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::catalog::SourceKind;
use crate::auth::{self, AccessToken, AuthSetup, Flow, LoginSetup, endpoint::ClientAuth};
use crate::executor::{CallSetup, classify};
use crate::config::{ArchiveSettings, Parts, HttpUrl, RateLimit, Section, SectionCheck, default_redirect_uri};

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
    #[serde(default, deserialize_with = "crate::config::strict_bool")]
    pub allow_http: bool,
    /// `archive.keep_days`: how long this source's answers are archived.
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

impl Section for RetentlySettings {
    fn kind(&self) -> SourceKind {
        super::KIND
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The documented 150 calls a minute.
    fn default_rate_limit(&self) -> RateLimit {
        RateLimit::new(150, Duration::from_secs(60))
    }

    fn allow_http(&self) -> bool {
        self.allow_http
    }

    fn archive(&self) -> ArchiveSettings {
        self.archive
    }

    fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        vec![
            ("base_url", &self.base_url),
            ("authorize_url", &self.authorize_url),
            ("token_url", &self.token_url),
        ]
    }

    fn flow(&self) -> &'static str {
        match self.api_key {
            Some(_) => "static API key",
            None => "authorization code + refresh token",
        }
    }

    fn validate(&mut self, check: &mut SectionCheck<'_>) {
        check.secret("api_key", &mut self.api_key, &self.api_key_file, false);
        check.secret("client_secret", &mut self.client_secret, &self.client_secret_file, false);
        if let Some(client_id) = &self.client_id {
            check.non_empty("client_id", client_id);
        }
        let oauth = self.client_id.is_some() && self.client_secret.is_some();
        if self.api_key.is_none() && !oauth {
            check.problem(
                "api_key",
                "is missing; set api_key, or client_id and client_secret for OAuth",
            );
        }
    }

    /// A static API key, or authorization code + refresh token; a REST API.
    fn parts(&self, parts: &mut Parts) {
        let client_id = self.client_id.clone().unwrap_or_default();
        parts.put(match &self.api_key {
            Some(key) => AuthSetup {
                flow: Flow::StaticKey(AccessToken::new(key.expose_secret())),
                kills_previous_token: false,
                login: None,
            },
            None => AuthSetup {
                flow: Flow::RefreshChain {
                    token_url: self.token_url.clone(),
                    client: ClientAuth::Form {
                        client_id: client_id.clone(),
                        secret: auth::secret(&self.client_secret),
                    },
                    margin: Duration::from_secs(300),
                },
                kills_previous_token: false,
                login: Some(LoginSetup {
                    authorize_url: self.authorize_url.clone(),
                    redirect_uri: self.redirect_uri.clone(),
                    client_id,
                    pkce: false,
                    scope: None,
                }),
            },
        });
        parts.put(CallSetup {
            graphql: Vec::new(),
            rest_base: Some(self.base_url.clone()),
            api_key: None,
            answers: &classify::Generic,
        });
    }
}
