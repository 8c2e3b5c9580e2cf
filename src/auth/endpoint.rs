//! Token endpoint requests, in each vendor's dialect (where the grant type goes, how the client
//! authenticates), and the one place their answers are read.
//!
//! Errors keep the vendor's OAuth `error` code and description (never a token), split into a
//! refusal (the vendor said no) and unavailability (transport, 5xx, garbage: try again later).

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::token::{AccessToken, RefreshToken};
use crate::config::HttpUrl;

/// How a vendor wants the client to authenticate at its token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// Retarus (Keycloak): `client_id`/`client_secret` and `scope=openid` in the form body.
    FormWithScope { client_id: String, secret: SecretString },
    /// Altrata: `grant_type` in the query string, Basic `username:password`, `x-api-key` header.
    AltrataBasic {
        username: String,
        password: SecretString,
        api_key: SecretString,
    },
    /// Roubler (Hydra): Basic `client_id:client_secret` (client_secret_basic).
    Basic { client_id: String, secret: SecretString },
    /// Retently: `client_id`/`client_secret` in the form body.
    Form { client_id: String, secret: SecretString },
}

/// `application/x-www-form-urlencoded` encoding of one value (space as `+`), as RFC 6749
/// Appendix B specifies for client credentials in a Basic header.
fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// What is being exchanged.
pub enum Grant<'a> {
    ClientCredentials,
    Refresh(&'a RefreshToken),
    Code {
        code: &'a str,
        redirect_uri: &'a str,
        verifier: Option<&'a str>,
    },
}

/// A token endpoint's successful answer, with the lifetime turned into an instant on arrival.
pub struct Issued {
    pub access_token: AccessToken,
    pub expires_at: DateTime<Utc>,
    pub refresh_token: Option<RefreshToken>,
}

#[derive(Debug, Clone)]
pub enum EndpointError {
    /// The vendor answered with an OAuth error (`invalid_grant`, `invalid_client`, …).
    Refused {
        status: u16,
        error: String,
        description: String,
    },
    /// Transport failure, 5xx, 429 or an unreadable body.
    Unavailable(String),
}

impl EndpointError {
    pub fn reason(&self) -> String {
        match self {
            EndpointError::Refused {
                status,
                error,
                description,
            } if description.is_empty() => format!("HTTP {status} {error}"),
            EndpointError::Refused {
                status,
                error,
                description,
            } => format!("HTTP {status} {error}: {description}"),
            EndpointError::Unavailable(reason) => reason.clone(),
        }
    }

    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, EndpointError::Refused { error, .. } if error == "invalid_grant")
    }
}

/// A client for token endpoints: redirects are never followed (a redirect could carry the
/// client secret to another host), and every request has a timeout.
pub fn token_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("reporting-etl/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS backend is compiled in")
}

/// Sends one token request.
pub async fn request(
    client: &reqwest::Client,
    token_url: &HttpUrl,
    auth: &ClientAuth,
    grant: Grant<'_>,
) -> Result<Issued, EndpointError> {
    let mut form: Vec<(&str, String)> = Vec::new();
    match &grant {
        Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
        Grant::Refresh(token) => {
            form.push(("grant_type", "refresh_token".into()));
            form.push(("refresh_token", token.secret().to_owned()));
        }
        Grant::Code {
            code,
            redirect_uri,
            verifier,
        } => {
            form.push(("grant_type", "authorization_code".into()));
            form.push(("code", (*code).to_owned()));
            form.push(("redirect_uri", (*redirect_uri).to_owned()));
            if let Some(verifier) = verifier {
                form.push(("code_verifier", (*verifier).to_owned()));
            }
        }
    }
    let mut builder = client.post(token_url.url().clone());
    match auth {
        ClientAuth::FormWithScope { client_id, secret } => {
            form.push(("client_id", client_id.clone()));
            form.push(("client_secret", secret.expose_secret().to_owned()));
            form.push(("scope", "openid".into()));
        }
        ClientAuth::AltrataBasic {
            username,
            password,
            api_key,
        } => {
            // Altrata reads grant_type from the query string, not the body.
            form.clear();
            builder = builder
                .query(&[("grant_type", "client_credentials")])
                .basic_auth(username, Some(password.expose_secret()))
                .header("x-api-key", api_key.expose_secret());
        }
        ClientAuth::Basic { client_id, secret } => {
            // RFC 6749 §2.3.1: client_secret_basic form-urlencodes id and secret before they are
            // joined with `:` and base64-encoded; a standards-following server (Hydra) decodes
            // them, so a secret with `+`, `%`, `/`, `:` or a space fails unless encoded. (Altrata's
            // Basic above is a plain username and password, as its docs want.)
            builder = builder.basic_auth(
                form_urlencode(client_id),
                Some(form_urlencode(secret.expose_secret())),
            );
        }
        ClientAuth::Form { client_id, secret } => {
            form.push(("client_id", client_id.clone()));
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
    }
    let response = builder
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            EndpointError::Unavailable(format!(
                "token request to {} failed: {}",
                host(token_url),
                without_url(&e)
            ))
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        EndpointError::Unavailable(format!("reading the token response failed: {}", without_url(&e)))
    })?;
    if status.is_server_error() || status.as_u16() == 429 || status.is_redirection() {
        return Err(EndpointError::Unavailable(format!(
            "the token endpoint at {} answered HTTP {status}",
            host(token_url)
        )));
    }
    if !status.is_success() {
        #[derive(Deserialize)]
        struct OAuthError {
            error: Option<String>,
            error_description: Option<String>,
            message: Option<String>,
        }
        let parsed: Option<OAuthError> = serde_json::from_slice(&body).ok();
        let (error, description) = match parsed {
            Some(e) => (
                e.error.unwrap_or_else(|| "error".into()),
                e.error_description.or(e.message).unwrap_or_default(),
            ),
            None => ("error".into(), String::new()),
        };
        return Err(EndpointError::Refused {
            status: status.as_u16(),
            error,
            description: truncate(&description, 200),
        });
    }
    #[derive(Deserialize)]
    struct Success {
        access_token: String,
        expires_in: Option<serde_json::Value>,
        refresh_token: Option<String>,
    }
    let success: Success = serde_json::from_slice(&body).map_err(|_| {
        EndpointError::Unavailable(format!(
            "the token endpoint at {} answered HTTP {status} with a body that is not a token response",
            host(token_url)
        ))
    })?;
    if success.access_token.is_empty() {
        return Err(EndpointError::Unavailable(
            "the token endpoint returned an empty access token".into(),
        ));
    }
    let lifetime = match success.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(3600)
    .max(1);
    Ok(Issued {
        access_token: AccessToken::new(success.access_token),
        expires_at: Utc::now() + chrono::Duration::seconds(lifetime),
        refresh_token: success
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new),
    })
}

fn host(url: &HttpUrl) -> String {
    url.url().host_str().unwrap_or("?").to_owned()
}

/// reqwest errors print the URL; token URLs carry no secrets, but keep messages short anyway.
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut last = error.to_string();
    while let Some(e) = source {
        last = e.to_string();
        source = e.source();
    }
    if error.is_timeout() {
        format!("timed out ({last})")
    } else {
        last
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
