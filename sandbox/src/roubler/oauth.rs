//! Roubler's OIDC endpoints, shaped like Ory Hydra's (`/oauth2/auth`, `/oauth2/token`): the
//! authorize step approves at once (no browser, no login) and redirects with a code; the token
//! endpoint authenticates the client (`client_secret_basic`, or `client_secret_post` leniently)
//! and hands the grant to [`crate::authcode::AuthServer`], which owns the rotation rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::authcode::{AuthServer, OAuthError};

/// What the OAuth routes share. `token_endpoint_down` is flipped by tests through the handle.
#[derive(Clone)]
pub struct OAuthState {
    pub auth: AuthServer,
    /// Exact redirect URIs registered for the client.
    pub redirect_uris: Arc<Vec<String>>,
    /// Also accept any `http://` loopback redirect (localhost, 127.0.0.1, [::1]) on any port/path.
    pub allow_loopback_redirects: bool,
    pub token_endpoint_down: Arc<AtomicBool>,
    /// While `true`, a granted token answer is held back (the grant has happened: a refresh
    /// token is used up) until it turns `false`. Tests use it to kill a client at exactly that
    /// moment.
    pub hold_granted_answers: tokio::sync::watch::Sender<bool>,
}

/// Scopes the sandbox client may ask for (Hydra refuses others with `invalid_scope`).
const KNOWN_SCOPES: &[&str] = &["offline_access", "offline", "openid"];

fn form(bytes: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(bytes) {
        map.entry(key.into_owned()).or_insert_with(|| value.into_owned());
    }
    map
}

fn oauth_json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn refusal(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    oauth_json(status, error.body())
}

fn is_loopback_http(uri: &url::Url) -> bool {
    uri.scheme() == "http"
        && match uri.host() {
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// Redirects to `redirect` with `params` appended to its query.
fn redirect_with(mut redirect: url::Url, params: &[(&str, &str)]) -> Response {
    {
        let mut pairs = redirect.query_pairs_mut();
        for (key, value) in params {
            pairs.append_pair(key, value);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(redirect.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `GET /oauth2/auth`: validates client and redirect URI (errors about those are shown, never
/// redirected), then redirects back with either a code or an OAuth error.
pub async fn authorize(State(state): State<OAuthState>, RawQuery(query): RawQuery) -> Response {
    let params = form(query.unwrap_or_default().as_bytes());
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());

    if get("client_id") != Some(state.auth.config.client_id.as_str()) {
        return refusal(&OAuthError::new(
            400,
            "invalid_client",
            "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method). The requested OAuth 2.0 Client does not exist.",
        ));
    }
    let redirect_text = match get("redirect_uri") {
        Some(uri) => uri.to_owned(),
        None => match state.redirect_uris.first() {
            Some(uri) => uri.clone(),
            None => {
                return refusal(&OAuthError::new(
                    400,
                    "invalid_request",
                    "The request is missing a required parameter. The 'redirect_uri' parameter is required.",
                ));
            }
        },
    };
    let redirect = match url::Url::parse(&redirect_text) {
        Ok(uri)
            if state.redirect_uris.contains(&redirect_text)
                || (state.allow_loopback_redirects && is_loopback_http(&uri)) =>
        {
            uri
        }
        _ => {
            return refusal(&OAuthError::new(
                400,
                "invalid_request",
                "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed. The 'redirect_uri' parameter does not match any of the OAuth 2.0 Client's pre-registered redirect urls.",
            ));
        }
    };
    let state_param = get("state").unwrap_or_default();
    let fail = |error: &str, description: &str| {
        redirect_with(
            redirect.clone(),
            &[
                ("error", error),
                ("error_description", description),
                ("state", state_param),
            ],
        )
    };
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "The authorization server does not support obtaining a token using this method.",
        );
    }
    if state_param.chars().count() < 8 {
        return fail(
            "invalid_state",
            "The state is missing or does not have enough characters and is therefore considered too weak. Request parameter 'state' must be at least be 8 characters long to ensure sufficient entropy.",
        );
    }
    let scope = get("scope").unwrap_or_default();
    if let Some(unknown) = scope.split_whitespace().find(|s| !KNOWN_SCOPES.contains(s)) {
        return fail(
            "invalid_scope",
            &format!(
                "The requested scope is invalid, unknown, or malformed. The OAuth 2.0 Client is not allowed to request scope '{unknown}'."
            ),
        );
    }
    let challenge = get("code_challenge");
    if challenge.is_some() && get("code_challenge_method") != Some("S256") {
        return fail(
            "invalid_request",
            "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed. Clients must use code_challenge_method=S256, plain is not allowed.",
        );
    }
    let code = state.auth.issue_code(
        &state.auth.config.client_id,
        get("redirect_uri"),
        scope,
        challenge,
    );
    redirect_with(
        redirect,
        &[("code", &code), ("scope", scope), ("state", state_param)],
    )
}

/// `POST /oauth2/token`.
pub async fn token(State(state): State<OAuthState>, headers: HeaderMap, body: Bytes) -> Response {
    if state.token_endpoint_down.load(Ordering::SeqCst) {
        state.auth.count_error();
        return oauth_json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": "The authorization server is currently unable to handle the request due to a temporary overloading or maintenance of the server."
            }),
        );
    }
    let params = form(&body);
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());

    let client = match crate::gql::client_basic(&headers) {
        Some((id, secret)) => Some((id, secret)),
        None => match (get("client_id"), get("client_secret")) {
            (Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned())),
            _ => None,
        },
    };
    let client_id = match client {
        Some((id, secret)) if state.auth.client_matches(&id, &secret) => id,
        _ => {
            state.auth.count_error();
            return refusal(&OAuthError::new(
                401,
                "invalid_client",
                "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method).",
            ));
        }
    };
    let result = match get("grant_type") {
        Some("authorization_code") => match get("code") {
            Some(code) => {
                state
                    .auth
                    .exchange_code(&client_id, code, get("redirect_uri"), get("code_verifier"))
            }
            None => Err(OAuthError::new(
                400,
                "invalid_request",
                "The request is missing a required parameter. The 'code' parameter is required.",
            )),
        },
        Some("refresh_token") => match get("refresh_token") {
            Some(refresh) => state.auth.refresh(&client_id, refresh),
            None => Err(OAuthError::new(
                400,
                "invalid_request",
                "The request is missing a required parameter. The 'refresh_token' parameter is required.",
            )),
        },
        Some(_) => Err(OAuthError::new(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        )),
        None => Err(OAuthError::new(
            400,
            "invalid_request",
            "The request is missing a required parameter. The 'grant_type' parameter is required.",
        )),
    };
    match result {
        Ok(grant) => {
            let mut released = state.hold_granted_answers.subscribe();
            // Err only when the sender is gone, i.e. the server is shutting down: answer then.
            let _ = released.wait_for(|held| !held).await;
            let mut body = serde_json::json!({
                "access_token": grant.access_token,
                "token_type": "bearer",
                "expires_in": grant.expires_in,
                "scope": grant.scope,
            });
            if let Some(refresh) = grant.refresh_token {
                body["refresh_token"] = serde_json::Value::String(refresh);
            }
            oauth_json(StatusCode::OK, body)
        }
        Err(error) => {
            if matches!(error.error, "invalid_request" | "unsupported_grant_type") {
                state.auth.count_error();
            }
            refusal(&error)
        }
    }
}
