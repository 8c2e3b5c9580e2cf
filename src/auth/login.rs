//! `reporting-etl auth login SOURCE`: the authorization-code bootstrap for Roubler and Retently.
//!
//! Prints the authorize URL (with a fresh random `state`, and PKCE for Roubler, whose Hydra
//! server supports it), then takes the browser's redirect from whichever comes first: a
//! listener on the configured loopback `redirect_uri` (served by axum), or the redirected URL pasted on stdin
//! (for headless servers). A redirect whose `state` differs is refused and nothing is stored.

use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::net::TcpListener;
use url::Url;

use super::endpoint::{self, ClientAuth, Grant};
use super::store::{NewTokens, TokenStore};
use super::{Flow, LoginSetup, setup};
use crate::config::{HttpUrl, Settings};
use crate::transport::Transport;

/// One login in progress: the authorize URL to open, and what must come back.
pub(crate) struct Attempt {
    source_name: String,
    url: Url,
    state: String,
    verifier: Option<String>,
    redirect_uri: HttpUrl,
    token_url: HttpUrl,
    client: ClientAuth,
}

impl Attempt {
    /// Prepares a login for `source_name` (a source whose vendor hands a [`LoginSetup`]).
    pub(crate) fn begin(settings: &Settings, source_name: &str) -> Result<Attempt> {
        let source = settings
            .sources
            .get(source_name)
            .ok_or_else(|| anyhow!("`{source_name}` is not a configured source"))?;
        let setup = setup(source);
        let Some(login) = setup.login else {
            bail!(
                "source `{source_name}` uses {}; it needs no login (its credentials are in the configuration)",
                source.flow()
            );
        };
        let Flow::RefreshChain {
            token_url, client, ..
        } = setup.flow
        else {
            bail!("source `{source_name}` does not use the authorization-code flow");
        };
        let LoginSetup {
            authorize_url,
            redirect_uri,
            client_id,
            pkce,
            scope,
        } = login;
        let (url, state, verifier) =
            authorize_attempt(&authorize_url, &redirect_uri, &client_id, pkce, scope);
        Ok(Attempt {
            source_name: source_name.to_owned(),
            url,
            state,
            verifier,
            redirect_uri,
            token_url,
            client,
        })
    }

    /// The vendor's page a person opens to approve access.
    pub(crate) fn authorize_url(&self) -> &Url {
        &self.url
    }

    pub(crate) fn redirect_uri(&self) -> &HttpUrl {
        &self.redirect_uri
    }

    /// Checks the redirect's state, exchanges its code and stores the tokens.
    pub(crate) async fn finish(self, settings: &Settings, pool: PgPool, redirected: &Url) -> Result<()> {
        let code = check_redirect(redirected, &self.state)?;
        exchange_and_store(
            settings,
            pool,
            &self.source_name,
            &self.token_url,
            &self.client,
            &self.redirect_uri,
            &code,
            self.verifier.as_deref(),
        )
        .await
    }
}

/// Runs the whole login for `source_name`, reading a pasted URL from `input` and printing to `out`.
pub(crate) async fn login(
    settings: &Settings,
    pool: PgPool,
    source_name: &str,
    input: impl AsyncBufRead + Unpin,
    out: &mut (impl Write + Send),
) -> Result<()> {
    let attempt = Attempt::begin(settings, source_name)?;
    let redirect_uri = attempt.redirect_uri().clone();
    writeln!(
        out,
        "Open this URL in a browser, sign in with the API user and approve access:\n\n  {}\n",
        attempt.authorize_url()
    )?;
    let listener = bind_loopback(&redirect_uri).await?;
    match &listener {
        Some(_) => writeln!(
            out,
            "Waiting for the redirect to {redirect_uri} … or paste the URL the browser was sent to and press Enter."
        )?,
        None => writeln!(
            out,
            "{redirect_uri} is not a loopback address, so nothing listens for it: paste the URL the browser was sent to and press Enter."
        )?,
    }
    out.flush()?;
    let redirected = receive_redirect(listener, input).await?;
    attempt.finish(settings, pool, &redirected).await?;
    writeln!(out, "Authorised `{source_name}`: tokens stored in etl.tokens.")?;
    Ok(())
}

fn authorize_attempt(
    authorize_url: &HttpUrl,
    redirect_uri: &HttpUrl,
    client_id: &str,
    pkce: bool,
    scope: Option<&str>,
) -> (Url, String, Option<String>) {
    let state = random_token(24);
    let verifier = pkce.then(|| random_token(48));
    let mut url = authorize_url.url().clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri.as_str());
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        query.append_pair("state", &state);
        if let Some(verifier) = &verifier {
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            query
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
        }
    }
    (url, state, verifier)
}

fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// Listens on the redirect URI's port when its host is loopback (never on other interfaces).
async fn bind_loopback(redirect_uri: &HttpUrl) -> Result<Option<TcpListener>> {
    let url = redirect_uri.url();
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback().then_some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback().then_some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain("localhost")) => Some(std::net::IpAddr::from([127, 0, 0, 1])),
        _ => None,
    };
    let Some(ip) = loopback else { return Ok(None) };
    let port = url.port_or_known_default().unwrap_or(80);
    let listener = TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("listening on {ip}:{port} for the redirect (is another login running?)"))?;
    Ok(Some(listener))
}

/// The redirected URL, from the listener or from a pasted line, whichever comes first.
async fn receive_redirect(
    listener: Option<TcpListener>,
    mut input: impl AsyncBufRead + Unpin,
) -> Result<Url> {
    let pasted = async {
        let mut line = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line).await? == 0 {
                // stdin closed: leave it to the listener.
                std::future::pending::<()>().await;
            }
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                return Url::parse(trimmed).with_context(|| format!("`{trimmed}` is not a URL"));
            }
        }
    };
    let listened = async {
        match listener {
            Some(listener) => accept_redirect(listener).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        url = pasted => url,
        url = listened => url,
    }
}

/// What the browser is shown once the redirect is in.
const RECEIVED: &str = "<html><body><h1>reporting-etl</h1><p>Received. You can close this window and return to the terminal.</p></body></html>";

/// Serves the redirect URI with axum until a GET with a query string arrives (anything else is
/// answered 404 and waited past), answers it, and returns its URL. axum (hyper) parses the
/// HTTP: the browser's request is untrusted input.
async fn accept_redirect(listener: TcpListener) -> Result<Url> {
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{Html, IntoResponse};

    let (sender, mut received) = tokio::sync::mpsc::channel::<Url>(1);
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let sender = sender.clone();
        async move {
            let redirected = (method == Method::GET && uri.query().is_some())
                .then(|| Url::parse(&format!("http://localhost{uri}")).ok())
                .flatten();
            match redirected {
                Some(url) => {
                    // Only the first redirect is taken; a second one finds the channel full.
                    let _ = sender.try_send(url);
                    Html(RECEIVED).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    let url = received.recv().await;
    // Graceful: the browser gets its answer before the listener closes.
    stop.cancel();
    let served = server.await;
    match url {
        Some(url) => Ok(url),
        None => match served {
            Ok(Err(error)) => Err(anyhow!("the redirect listener failed: {error}")),
            _ => Err(anyhow!("the redirect listener stopped before a redirect arrived")),
        },
    }
}

/// The code from a redirect whose state matches; refuses anything else.
fn check_redirect(redirected: &Url, expected_state: &str) -> Result<String> {
    let param = |name: &str| {
        redirected
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        bail!(
            "the vendor refused the authorisation: {error} {}",
            param("error_description").unwrap_or_default()
        );
    }
    match param("state") {
        Some(state) if state == expected_state => {}
        _ => bail!(
            "the redirect's state does not match this login attempt; it was refused and nothing was stored"
        ),
    }
    param("code").ok_or_else(|| anyhow!("the redirect carries no authorization code"))
}

#[allow(clippy::too_many_arguments)]
async fn exchange_and_store(
    settings: &Settings,
    pool: PgPool,
    source_name: &str,
    token_url: &HttpUrl,
    client: &ClientAuth,
    redirect_uri: &HttpUrl,
    code: &str,
    verifier: Option<&str>,
) -> Result<()> {
    let transport = Transport::new(endpoint::limits())?;
    let grant = Grant::Code {
        code,
        redirect_uri: redirect_uri.as_str(),
        verifier,
    };
    let issued = endpoint::request(&transport, token_url, client, grant)
        .await
        .context("exchanging the authorization code failed")?;
    if issued.refresh_token.is_none() {
        tracing::warn!(source = %source_name, "The vendor issued no refresh token; a new login will be needed when the access token expires.");
    }
    let store = TokenStore::new(pool, settings.security.token_key.as_ref());
    let (lock, _) = store
        .lock(source_name, "authorization_code")
        .await
        .context("storing tokens")?;
    let tokens = NewTokens {
        access_token: &issued.access_token,
        access_expires_at: issued.expires_at,
        refresh_token: issued.refresh_token.as_ref(),
    };
    lock.save(tokens, true).await.context("storing tokens")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    fn param(url: &Url, name: &str) -> Option<String> {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    #[test]
    fn the_authorize_url_carries_state_and_an_s256_challenge_of_the_verifier() {
        let (authorize, state, verifier) = authorize_attempt(
            &url("https://auth.example/oauth2/auth?prompt=consent"),
            &url("http://127.0.0.1:8788/callback"),
            "client-1",
            true,
            Some("offline_access openid"),
        );
        let verifier = verifier.expect("PKCE asked for");
        assert_eq!(param(&authorize, "prompt").as_deref(), Some("consent"));
        assert_eq!(param(&authorize, "response_type").as_deref(), Some("code"));
        assert_eq!(param(&authorize, "client_id").as_deref(), Some("client-1"));
        assert_eq!(
            param(&authorize, "redirect_uri").as_deref(),
            Some("http://127.0.0.1:8788/callback")
        );
        assert_eq!(
            param(&authorize, "scope").as_deref(),
            Some("offline_access openid")
        );
        assert_eq!(param(&authorize, "state"), Some(state.clone()));
        // RFC 7636 §4.1: 43–128 characters; §4.2: S256 is BASE64URL(SHA256(verifier)).
        assert!((43..=128).contains(&verifier.len()), "{verifier}");
        assert_eq!(
            param(&authorize, "code_challenge"),
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())))
        );
        assert_eq!(
            param(&authorize, "code_challenge_method").as_deref(),
            Some("S256")
        );
        let (_, other_state, _) = authorize_attempt(
            &url("https://auth.example/oauth2/auth"),
            &url("http://127.0.0.1:8788/callback"),
            "client-1",
            false,
            None,
        );
        assert_ne!(state, other_state, "every attempt has its own state");
    }

    #[test]
    fn without_pkce_or_scope_neither_is_sent() {
        let (authorize, _, verifier) = authorize_attempt(
            &url("https://auth.example/authorize"),
            &url("http://127.0.0.1:8788/callback"),
            "c",
            false,
            None,
        );
        assert!(verifier.is_none());
        assert_eq!(param(&authorize, "code_challenge"), None);
        assert_eq!(param(&authorize, "scope"), None);
    }

    #[test]
    fn a_redirect_gives_its_code_only_with_the_attempts_state() {
        let good = Url::parse("http://127.0.0.1:8788/callback?code=abc&state=s1").unwrap();
        assert_eq!(check_redirect(&good, "s1").unwrap(), "abc");
        let forged = Url::parse("http://127.0.0.1:8788/callback?code=abc&state=other").unwrap();
        let error = check_redirect(&forged, "s1").unwrap_err().to_string();
        assert!(error.contains("state does not match"), "{error}");
        assert!(!error.contains("abc"), "the code leaked into the error: {error}");
        let stateless = Url::parse("http://127.0.0.1:8788/callback?code=abc").unwrap();
        assert!(check_redirect(&stateless, "s1").is_err());
        let codeless = Url::parse("http://127.0.0.1:8788/callback?state=s1").unwrap();
        assert!(check_redirect(&codeless, "s1").is_err());
        let refused = Url::parse(
            "http://127.0.0.1:8788/callback?error=access_denied&error_description=The+user+said+no&state=s1",
        )
        .unwrap();
        let error = check_redirect(&refused, "s1").unwrap_err().to_string();
        assert!(
            error.contains("access_denied") && error.contains("The user said no"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_listener_answers_other_requests_404_and_takes_the_first_get_with_a_query() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let waiting = tokio::spawn(accept_redirect(listener));
        let transport = Transport::new(endpoint::limits()).expect("a transport");
        let send = |method: reqwest::Method, path: &str| {
            let request = transport.request(method, Url::parse(&format!("{base}{path}")).expect("a URL"));
            transport.send(request)
        };
        let favicon = send(reqwest::Method::GET, "/favicon.ico")
            .await
            .expect("answered");
        assert_eq!(favicon.status.as_u16(), 404);
        let posted = send(reqwest::Method::POST, "/callback?code=c&state=s")
            .await
            .expect("answered");
        assert_eq!(posted.status.as_u16(), 404);
        let redirect = send(reqwest::Method::GET, "/callback?code=c1&state=s1")
            .await
            .expect("answered");
        assert_eq!(redirect.status.as_u16(), 200);
        assert!(String::from_utf8_lossy(&redirect.body).contains("Received"));
        let url = waiting.await.expect("joined").expect("a redirect");
        assert_eq!(check_redirect(&url, "s1").expect("matching state"), "c1");
    }
}
