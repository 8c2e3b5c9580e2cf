//! Token endpoint requests, in each vendor's dialect (where the grant type goes, how the client
//! authenticates), and the one place their answers are read.
//!
//! Requests go out through the one [`Transport`] (no redirects, timeouts, the body size limit),
//! as data calls do. Errors keep the vendor's OAuth `error` code and description (never a token),
//! split into a refusal (the vendor said no), an answer that can never be used (a redirect, an
//! oversized body: not worth asking again) and unavailability (transport, 5xx, garbage: try again
//! later). The token's lifetime is read into [`TokenLifetime`], which holds it to its bounds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::token::{AccessToken, RefreshToken};
use crate::config::HttpUrl;
use crate::failure::FailureKind;
use crate::transport::{Limits, Transport, TransportError};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// How long one token request may take, from sending to the last byte of the answer (shorter
/// than a data call's: a token answer is small, and every call of the source waits for it).
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest token answer read. Real ones are a few kilobytes (a JWT with its claims); a
/// megabyte leaves room for any of them and keeps a hostile endpoint from filling memory.
pub const MAX_TOKEN_BODY_BYTES: usize = 1024 * 1024;

/// The transport limits of token requests: a data call's, with the shorter timeout and the
/// smaller body above.
pub fn limits() -> Limits {
    Limits {
        request_timeout: TOKEN_REQUEST_TIMEOUT,
        max_body_bytes: MAX_TOKEN_BODY_BYTES,
        ..Limits::default()
    }
}

/// How a vendor wants the client to authenticate at its token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// `client_id`/`client_secret` and `scope=openid` in the form body (Keycloak).
    FormWithScope { client_id: String, secret: SecretString },
    /// `grant_type` in the query string, a plain Basic `username:password` and an `x-api-key`
    /// header (AWS API Gateway).
    BasicWithApiKey {
        username: String,
        password: SecretString,
        api_key: SecretString,
    },
    /// Basic `client_id:client_secret`, form-encoded first (client_secret_basic, Hydra).
    Basic { client_id: String, secret: SecretString },
    /// `client_id`/`client_secret` in the form body.
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

/// Why a token request brought no token. A transport failure is kept as the source; the vendor's
/// own words are the OAuth fields it answered with (never the request's secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// The vendor answered with an OAuth error (`invalid_grant`, `invalid_client`, …).
    #[error(
        "HTTP {status} {error}{}",
        if description.is_empty() { String::new() } else { format!(": {description}") }
    )]
    Refused {
        status: u16,
        error: String,
        description: String,
    },
    /// Transport failure (its error the source), 5xx, 429 or an unreadable body.
    #[error("{reason}")]
    Unavailable {
        reason: String,
        #[source]
        cause: Option<Arc<TransportError>>,
        /// The answer's status and headers when the endpoint answered (a 429 or a 5xx): a
        /// `Retry-After` or a rate-limit reset in them says when to ask again, read by the
        /// executor as it reads a data answer's (`executor::headers::RateHeaders`).
        answer: Option<Box<(StatusCode, HeaderMap)>>,
    },
    /// An answer that will come back the same however often it is asked for (a redirect, a body
    /// past the size limit, the transport's error the source): fails at once with `kind`.
    #[error("{reason}")]
    Unusable {
        reason: String,
        kind: FailureKind,
        #[source]
        cause: Arc<TransportError>,
    },
}

impl EndpointError {
    /// The whole reason, causes included, as one line: what `etl.tokens.status_reason` stores
    /// and `auth login` prints.
    pub fn reason(&self) -> String {
        crate::failure::chain_text(self)
    }

    /// Unavailable for `reason`, with no error value behind it (a status, a body).
    fn unavailable(reason: impl Into<String>) -> EndpointError {
        EndpointError::Unavailable {
            reason: reason.into(),
            cause: None,
            answer: None,
        }
    }

    /// The status and headers of the answer that made the endpoint unavailable, if it answered.
    pub fn unavailable_answer(&self) -> Option<(StatusCode, &HeaderMap)> {
        match self {
            EndpointError::Unavailable {
                answer: Some(answer), ..
            } => Some((answer.0, &answer.1)),
            _ => None,
        }
    }
}

/// Sends one token request.
pub async fn request(
    transport: &Transport,
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
    let mut builder = transport.request(reqwest::Method::POST, token_url.url().clone());
    match auth {
        ClientAuth::FormWithScope { client_id, secret } => {
            form.push(("client_id", client_id.clone()));
            form.push(("client_secret", secret.expose_secret().to_owned()));
            form.push(("scope", "openid".into()));
        }
        ClientAuth::BasicWithApiKey {
            username,
            password,
            api_key,
        } => {
            // The gateway reads grant_type from the query string, not the body.
            form.clear();
            builder = builder
                .query(&[("grant_type", "client_credentials")])
                .basic_auth(username, Some(password.expose_secret()))
                .header("x-api-key", api_key.expose_secret());
        }
        ClientAuth::Basic { client_id, secret } => {
            // RFC 6749 §2.3.1: client_secret_basic form-urlencodes id and secret before they are
            // joined with `:` and base64-encoded; a standards-following server (Hydra) decodes
            // them, so a secret with `+`, `%`, `/`, `:` or a space fails unless encoded. (The
            // gateway's Basic above is a plain username and password, as its docs want.)
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
    super::count_token_request();
    let request = builder
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form);
    let answer = transport.send(request).await.map_err(|e| match e {
        TransportError::Unreachable { .. } => EndpointError::Unavailable {
            reason: format!("token request to {} failed", host(token_url)),
            cause: Some(Arc::new(e)),
            answer: None,
        },
        _ => EndpointError::Unusable {
            reason: format!("the token endpoint at {}", host(token_url)),
            kind: e.kind(),
            cause: Arc::new(e),
        },
    })?;
    let (status, body) = (answer.status, answer.body);
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(EndpointError::Unavailable {
            reason: format!("the token endpoint at {} answered HTTP {status}", host(token_url)),
            cause: None,
            answer: Some(Box::new((status, answer.headers))),
        });
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
    // serde's error would quote the body, and a body may hold a token: it is not kept.
    let success: Success = serde_json::from_slice(&body).map_err(|_| {
        EndpointError::unavailable(format!(
            "the token endpoint at {} answered HTTP {status} with a body that is not a token response",
            host(token_url)
        ))
    })?;
    if success.access_token.is_empty() {
        return Err(EndpointError::unavailable(
            "the token endpoint returned an empty access token",
        ));
    }
    let lifetime = TokenLifetime::read(success.expires_in.as_ref());
    if let Some(warning) = &lifetime.warning {
        tracing::warn!(token_endpoint = %host(token_url), warning = %warning,
            "The token's lifetime is out of bounds; using the nearest bound.");
    }
    Ok(Issued {
        access_token: AccessToken::new(success.access_token),
        expires_at: Utc::now() + lifetime.duration(),
        refresh_token: success
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new),
    })
}

/// A token's lifetime as the endpoint announced it (`expires_in`), held to
/// [`TokenLifetime::MIN_SECS`]..=[`TokenLifetime::MAX_SECS`]: a lifetime out of bounds (zero,
/// negative, 10^13 seconds, not a number) becomes the nearest bound, or an hour when absent or
/// unreadable (RFC 6749 §5.1 makes it only RECOMMENDED), with a warning. A shorter lifetime than
/// announced only renews the token earlier; a longer one could never be stored or computed with.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLifetime {
    secs: i64,
    /// Why the announced value was not taken as it was.
    pub warning: Option<String>,
}

impl TokenLifetime {
    /// The shortest lifetime believed (a token must outlive the call it is fetched for).
    pub const MIN_SECS: i64 = 1;
    /// The longest lifetime believed: a day. Every vendor's tokens live 5 minutes to 6 hours; a
    /// token that really lives longer is renewed daily, which costs one request a day.
    pub const MAX_SECS: i64 = 86_400;
    /// Assumed when the endpoint does not say.
    pub const DEFAULT_SECS: i64 = 3_600;

    /// Reads `expires_in` as a number or a numeric string (integer or decimal).
    pub fn read(value: Option<&serde_json::Value>) -> TokenLifetime {
        let announced: Option<f64> = match value {
            None | Some(serde_json::Value::Null) => {
                return TokenLifetime {
                    secs: Self::DEFAULT_SECS,
                    warning: None,
                };
            }
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        let shown = || truncate(&value.map(|v| v.to_string()).unwrap_or_default(), 40);
        match announced {
            Some(secs) if secs.is_finite() => {
                let bounded = secs.clamp(Self::MIN_SECS as f64, Self::MAX_SECS as f64);
                let out_of_bounds = secs < Self::MIN_SECS as f64 || secs > Self::MAX_SECS as f64;
                let warning = out_of_bounds.then(|| {
                    format!(
                        "expires_in {} is outside {}..={} s; using {} s",
                        shown(),
                        Self::MIN_SECS,
                        Self::MAX_SECS,
                        bounded as i64
                    )
                });
                TokenLifetime {
                    secs: bounded as i64,
                    warning,
                }
            }
            _ => TokenLifetime {
                secs: Self::DEFAULT_SECS,
                warning: Some(format!(
                    "expires_in {} is not a number of seconds; assuming {} s",
                    shown(),
                    Self::DEFAULT_SECS
                )),
            },
        }
    }

    pub fn secs(&self) -> i64 {
        self.secs
    }

    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.secs)
    }
}

fn host(url: &HttpUrl) -> String {
    url.url().host_str().unwrap_or("?").to_owned()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    //! Each vendor's dialect on the wire, and how answers are read, against a loopback server
    //! that records the raw request and answers with a canned response.

    use super::*;
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request as the server received it.
    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn form(&self) -> Vec<(String, String)> {
            url::form_urlencoded::parse(self.body.as_bytes())
                .into_owned()
                .collect()
        }
    }

    /// Serves one request with `status` and `body`; returns the token URL and what was received.
    async fn serve_once(status: u16, body: &'static str) -> (HttpUrl, tokio::task::JoinHandle<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = HttpUrl::parse(&format!("http://{}/oauth/token", listener.local_addr().unwrap())).unwrap();
        let seen = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buffer = [0u8; 4096];
            let (head, body_start) = loop {
                let read = stream.read(&mut buffer).await.unwrap();
                assert!(read > 0, "the client closed before sending a request");
                raw.extend_from_slice(&buffer[..read]);
                if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8(raw[..at].to_vec()).unwrap(), at + 4);
                }
            };
            let mut lines = head.lines();
            let request_line = lines.next().unwrap().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while raw.len() < body_start + length {
                let read = stream.read(&mut buffer).await.unwrap();
                raw.extend_from_slice(&buffer[..read]);
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            Seen {
                request_line,
                headers,
                body: String::from_utf8(raw[body_start..body_start + length].to_vec()).unwrap(),
            }
        });
        (url, seen)
    }

    const TOKEN: &str =
        r#"{"access_token":"at-1","expires_in":300,"refresh_token":"rt-1","token_type":"bearer"}"#;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    async fn exchange(
        status: u16,
        answer: &'static str,
        auth: &ClientAuth,
        grant: Grant<'_>,
    ) -> (Result<Issued, EndpointError>, Seen) {
        let (url, seen) = serve_once(status, answer).await;
        let transport = Transport::new(limits()).unwrap();
        let result = request(&transport, &url, auth, grant).await;
        (result, seen.await.unwrap())
    }

    fn retarus() -> ClientAuth {
        ClientAuth::FormWithScope {
            client_id: "etl".into(),
            secret: secret("s3cret"),
        }
    }

    #[tokio::test]
    async fn retarus_sends_client_credentials_and_scope_openid_in_the_form_body() {
        let (issued, seen) = exchange(200, TOKEN, &retarus(), Grant::ClientCredentials).await;
        assert_eq!(seen.request_line, "POST /oauth/token HTTP/1.1");
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("accept"), Some("application/json"));
        assert_eq!(
            seen.form(),
            [
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "etl".into()),
                ("client_secret".into(), "s3cret".into()),
                ("scope".into(), "openid".into()),
            ]
        );
        let issued = issued.unwrap();
        assert_eq!(issued.access_token.secret(), "at-1");
        assert_eq!(issued.refresh_token.unwrap().secret(), "rt-1");
    }

    #[tokio::test]
    async fn altrata_sends_the_grant_in_the_query_with_basic_auth_and_the_api_key_and_no_body() {
        let auth = ClientAuth::BasicWithApiKey {
            username: "svc".into(),
            password: secret("pw"),
            api_key: secret("key-1"),
        };
        let (issued, seen) = exchange(200, TOKEN, &auth, Grant::ClientCredentials).await;
        assert_eq!(
            seen.request_line,
            "POST /oauth/token?grant_type=client_credentials HTTP/1.1"
        );
        assert_eq!(seen.header("authorization"), Some(basic("svc", "pw").as_str()));
        assert_eq!(seen.header("x-api-key"), Some("key-1"));
        assert_eq!(seen.body, "");
        assert!(issued.is_ok());
    }

    #[tokio::test]
    async fn roubler_refreshes_with_client_secret_basic_and_only_the_grant_in_the_body() {
        let auth = ClientAuth::Basic {
            client_id: "roubler-client".into(),
            secret: secret("hydra"),
        };
        let refresh = RefreshToken::new("rt-0");
        let (issued, seen) = exchange(200, TOKEN, &auth, Grant::Refresh(&refresh)).await;
        assert_eq!(
            seen.header("authorization"),
            Some(basic("roubler-client", "hydra").as_str())
        );
        assert_eq!(
            seen.form(),
            [
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), "rt-0".into()),
            ]
        );
        assert_eq!(issued.unwrap().refresh_token.unwrap().secret(), "rt-1");
    }

    #[tokio::test]
    async fn retently_exchanges_a_code_with_pkce_and_the_client_in_the_form_body() {
        let auth = ClientAuth::Form {
            client_id: "ret".into(),
            secret: secret("ret-secret"),
        };
        let grant = Grant::Code {
            code: "c0de",
            redirect_uri: "http://127.0.0.1:8788/callback",
            verifier: Some("v3rifier"),
        };
        let (issued, seen) = exchange(200, TOKEN, &auth, grant).await;
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(
            seen.form(),
            [
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), "c0de".into()),
                ("redirect_uri".into(), "http://127.0.0.1:8788/callback".into()),
                ("code_verifier".into(), "v3rifier".into()),
                ("client_id".into(), "ret".into()),
                ("client_secret".into(), "ret-secret".into()),
            ]
        );
        assert!(issued.is_ok());
    }

    #[tokio::test]
    async fn a_lifetime_given_as_a_string_or_missing_is_read_and_an_empty_refresh_token_is_none() {
        let before = Utc::now();
        let as_string = r#"{"access_token":"a","expires_in":"120","refresh_token":""}"#;
        let issued = exchange(200, as_string, &retarus(), Grant::ClientCredentials)
            .await
            .0
            .unwrap();
        let lifetime = issued.expires_at - before;
        assert!((119..=121).contains(&lifetime.num_seconds()), "{lifetime}");
        assert!(issued.refresh_token.is_none());

        // RFC 6749 §5.1: expires_in is RECOMMENDED; without it we assume an hour.
        let missing = r#"{"access_token":"a"}"#;
        let issued = exchange(200, missing, &retarus(), Grant::ClientCredentials)
            .await
            .0
            .unwrap();
        let lifetime = issued.expires_at - before;
        assert!((3599..=3601).contains(&lifetime.num_seconds()), "{lifetime}");
    }

    #[tokio::test]
    async fn an_oauth_error_is_a_refusal_with_the_vendors_code_and_description() {
        let answer =
            r#"{"error":"invalid_grant","error_description":"The refresh token has been used already."}"#;
        let refresh = RefreshToken::new("rt-used");
        let error = exchange(400, answer, &retarus(), Grant::Refresh(&refresh))
            .await
            .0
            .err()
            .unwrap();
        assert!(matches!(&error, EndpointError::Refused { error, .. } if error == "invalid_grant"));
        assert_eq!(
            error.reason(),
            "HTTP 400 invalid_grant: The refresh token has been used already."
        );
        // Altrata's gateway says `message` instead of `error_description`.
        let answer = r#"{"message":"Unauthorized"}"#;
        let error = exchange(401, answer, &retarus(), Grant::ClientCredentials)
            .await
            .0
            .err()
            .unwrap();
        assert!(matches!(&error, EndpointError::Refused { error, .. } if error == "error"));
        assert_eq!(error.reason(), "HTTP 401 error: Unauthorized");
    }

    #[tokio::test]
    async fn server_errors_rate_limits_and_garbage_are_unavailable_not_refusals() {
        for (status, body) in [
            (503, "{}"),
            (429, "{}"),
            (200, "<html>maintenance</html>"),
            (200, r#"{"access_token":""}"#),
        ] {
            let error = exchange(status, body, &retarus(), Grant::ClientCredentials)
                .await
                .0
                .err()
                .unwrap_or_else(|| panic!("HTTP {status} {body} was accepted"));
            assert!(
                matches!(error, EndpointError::Unavailable { .. }),
                "HTTP {status} {body}: {}",
                error.reason()
            );
            assert!(!error.reason().contains("s3cret"), "{}", error.reason());
        }
    }

    #[tokio::test]
    async fn a_redirect_is_rejected_at_once_as_on_a_data_call() {
        let error = exchange(302, "", &retarus(), Grant::ClientCredentials)
            .await
            .0
            .err()
            .expect("a redirect is no token");
        assert!(
            matches!(
                error,
                EndpointError::Unusable {
                    kind: FailureKind::UpstreamRejected,
                    ..
                }
            ),
            "{}",
            error.reason()
        );
        assert!(
            error.reason().contains("redirects are not followed"),
            "{}",
            error.reason()
        );
    }

    #[test]
    fn a_lifetime_out_of_bounds_becomes_the_nearest_bound_with_a_warning() {
        use serde_json::json;
        let read = |v: serde_json::Value| TokenLifetime::read(Some(&v));
        for huge in [
            json!(10_000_000_000_000i64),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
            json!("1e13"),
            json!("10000000000000"),
            json!(1_000_000_000_000i64),
        ] {
            let lifetime = read(huge.clone());
            assert_eq!(lifetime.secs(), TokenLifetime::MAX_SECS, "{huge}");
            assert!(lifetime.warning.is_some(), "{huge}: no warning");
            // Computing the expiry from it cannot overflow.
            let _ = Utc::now() + lifetime.duration();
        }
        for tiny in [json!(0), json!(-5), json!(i64::MIN), json!("-1e13")] {
            let lifetime = read(tiny.clone());
            assert_eq!(lifetime.secs(), TokenLifetime::MIN_SECS, "{tiny}");
            assert!(lifetime.warning.is_some(), "{tiny}: no warning");
        }
        for garbage in [
            json!("soon"),
            json!(true),
            json!([300]),
            json!({"s": 1}),
            json!("NaN"),
            json!("inf"),
        ] {
            let lifetime = read(garbage.clone());
            assert_eq!(lifetime.secs(), TokenLifetime::DEFAULT_SECS, "{garbage}");
            assert!(lifetime.warning.is_some(), "{garbage}: no warning");
        }
        for (fine, secs) in [
            (json!(300), 300),
            (json!("21600"), 21_600),
            (json!(299.9), 299),
            (json!(86_400), 86_400),
        ] {
            let lifetime = read(fine.clone());
            assert_eq!(lifetime.secs(), secs, "{fine}");
            assert_eq!(lifetime.warning, None, "{fine}");
        }
        assert_eq!(TokenLifetime::read(None).secs(), TokenLifetime::DEFAULT_SECS);
        assert_eq!(TokenLifetime::read(None).warning, None);
    }

    #[test]
    fn long_descriptions_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("äöü", 2), "äö…");
        assert_eq!(truncate("short", 200), "short");
    }
}
