//! The OAuth 2.0 authorization-code grant with refresh tokens, as a token store shared by the
//! vendors that use it (Roubler: Ory-Hydra-like, single-use rotating refresh tokens; Retently:
//! undocumented rotation, so a lenient policy).
//!
//! The store knows codes, access tokens, refresh tokens and the *chain* (one authorization: the
//! code and every token descended from it). The vendor modules own the HTTP shape (paths, client
//! authentication, JSON field spelling); this module owns the rules, so both vendors' rules are
//! visible in one place and tested once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// What happens to a refresh token when it is redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRotation {
    /// Ory Hydra: every refresh returns a new refresh token and kills the redeemed one. Redeeming
    /// a dead one is treated as theft: the whole chain (every access and refresh token descended
    /// from the same authorization) is revoked. With `revoke_access_on_refresh`, the access token
    /// issued together with the redeemed refresh token stops working too (Hydra does this).
    SingleUse { revoke_access_on_refresh: bool },
    /// Every refresh returns a new refresh token; the redeemed one stays valid for exactly one
    /// more redemption (a grace for a client that crashed before saving the new one), then dies.
    /// Redeeming a dead one is refused with `invalid_grant` but revokes nothing.
    RotateWithGrace,
    /// The same refresh token comes back on every refresh and never dies (until it expires).
    Static,
}

/// The rules of one vendor's authorization server.
#[derive(Debug, Clone)]
pub struct AuthCodeConfig {
    pub client_id: String,
    pub client_secret: String,
    pub code_lifetime: Duration,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub rotation: RefreshRotation,
    /// RFC 6749 §4.1.2: a code used twice SHOULD revoke the tokens issued for it (Hydra does).
    pub revoke_chain_on_code_reuse: bool,
    /// When true, a refresh token is issued only if the granted scope contains `offline_access`
    /// (or `offline`), as in Hydra; when false, always.
    pub refresh_needs_offline_access: bool,
    /// Prefixes of generated secrets, e.g. `("ory_ac_", "ory_at_", "ory_rt_")`.
    pub prefixes: (&'static str, &'static str, &'static str),
}

/// A refusal, in OAuth's JSON shape (`{"error", "error_description"}`) with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.error, "error_description": self.description })
    }
}

/// What the token endpoint hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub scope: String,
}

/// Event counts, for tests that check what a client did to the authorization server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// Authorization codes handed out by the authorize endpoint.
    pub codes_issued: u64,
    /// Successful `authorization_code` exchanges.
    pub token_grants: u64,
    /// Successful `refresh_token` grants.
    pub refreshes: u64,
    /// Redemptions of a refresh token that was already used up.
    pub reused_refresh_tokens: u64,
    /// Chains revoked (by reuse detection, code reuse or [`AuthServer::revoke_all`]).
    pub revoked_chains: u64,
    /// Every refused token request, whatever the reason.
    pub token_errors: u64,
    /// Data calls made with an access token that had expired (each one a wasted 401 that a
    /// vendor counts against the client's limit).
    pub expired_access_used: u64,
    /// Data calls made with an access token that had been revoked (its refresh token was redeemed
    /// or its chain revoked): the client raced a refresh.
    pub revoked_access_used: u64,
}

/// The store. Shared by the vendor's routes (every token request and every data call takes the
/// mutex briefly) and its handle (tests inspect counts and pull knobs).
#[derive(Clone)]
pub struct AuthServer {
    pub config: Arc<AuthCodeConfig>,
    inner: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    codes: HashMap<String, CodeEntry>,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    /// chain id → revoked
    chains: HashMap<u64, bool>,
    next_chain: u64,
    counts: AuthCounts,
}

struct CodeEntry {
    client_id: String,
    redirect_uri: Option<String>,
    scope: String,
    challenge: Option<String>,
    issued: Instant,
    /// The chain created when the code was exchanged.
    chain: Option<u64>,
}

struct AccessEntry {
    chain: u64,
    expires: Instant,
    revoked: bool,
}

struct RefreshEntry {
    chain: u64,
    client_id: String,
    scope: String,
    expires: Instant,
    /// Redemptions left: 1 for single-use, 2 with a grace, `u32::MAX` for static tokens.
    uses_left: u32,
    /// The access token issued together with this refresh token.
    access: String,
}

fn secret(prefix: &str) -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 PKCE transform: BASE64URL(SHA256(verifier)), unpadded.
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn has_offline(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| s == "offline_access" || s == "offline")
}

impl AuthServer {
    pub fn new(config: AuthCodeConfig) -> Self {
        AuthServer {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Store::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `client_id`/`client_secret` are this server's client.
    pub fn client_matches(&self, client_id: &str, client_secret: &str) -> bool {
        client_id == self.config.client_id && client_secret == self.config.client_secret
    }

    pub fn counts(&self) -> AuthCounts {
        self.lock().counts.clone()
    }

    /// Counts a refusal made by the vendor module before it reached the store (bad client auth).
    pub fn count_error(&self) {
        self.lock().counts.token_errors += 1;
    }

    /// Hands out a code for an approved authorization request.
    pub fn issue_code(
        &self,
        client_id: &str,
        redirect_uri: Option<&str>,
        scope: &str,
        challenge: Option<&str>,
    ) -> String {
        let code = secret(self.config.prefixes.0);
        let mut store = self.lock();
        store.counts.codes_issued += 1;
        store.codes.insert(
            code.clone(),
            CodeEntry {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.map(str::to_owned),
                scope: scope.to_owned(),
                challenge: challenge.map(str::to_owned),
                issued: Instant::now(),
                chain: None,
            },
        );
        code
    }

    /// The `authorization_code` grant. The client is already authenticated as `client_id`.
    pub fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenGrant, OAuthError> {
        let mut store = self.lock();
        let result = self.exchange_locked(&mut store, client_id, code, redirect_uri, verifier);
        match &result {
            Ok(_) => store.counts.token_grants += 1,
            Err(_) => store.counts.token_errors += 1,
        }
        result
    }

    fn exchange_locked(
        &self,
        store: &mut Store,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenGrant, OAuthError> {
        const BAD: &str = "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
        let Some(entry) = store.codes.get(code) else {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The authorization code is unknown."
            )));
        };
        if let Some(chain) = entry.chain {
            if self.config.revoke_chain_on_code_reuse {
                Self::revoke_chain(store, chain);
            }
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The authorization code has already been used."
            )));
        }
        if entry.issued.elapsed() >= self.config.code_lifetime {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The authorization code has expired."
            )));
        }
        if entry.client_id != client_id {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The authorization code was issued to another client."
            )));
        }
        if entry.redirect_uri.is_some() && entry.redirect_uri.as_deref() != redirect_uri {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The 'redirect_uri' from this request does not match the one from the authorize request."
            )));
        }
        if let Some(challenge) = &entry.challenge {
            match verifier {
                None => {
                    return Err(OAuthError::invalid_grant(format!(
                        "{BAD} The PKCE code verifier must be at least 43 characters."
                    )));
                }
                Some(v) if pkce_s256(v) != *challenge => {
                    return Err(OAuthError::invalid_grant(format!(
                        "{BAD} The PKCE code challenge did not match the code verifier."
                    )));
                }
                Some(_) => {}
            }
        }
        let scope = entry.scope.clone();
        let chain = store.next_chain;
        store.next_chain += 1;
        store.chains.insert(chain, false);
        if let Some(entry) = store.codes.get_mut(code) {
            entry.chain = Some(chain);
        }
        Ok(self.mint(store, chain, client_id, &scope))
    }

    /// Issues an access token (and a refresh token when the scope allows) in `chain`.
    fn mint(&self, store: &mut Store, chain: u64, client_id: &str, scope: &str) -> TokenGrant {
        let access = secret(self.config.prefixes.1);
        let now = Instant::now();
        store.access.insert(
            access.clone(),
            AccessEntry {
                chain,
                expires: now + self.config.access_token_lifetime,
                revoked: false,
            },
        );
        let wants_refresh = !self.config.refresh_needs_offline_access || has_offline(scope);
        let refresh = wants_refresh.then(|| {
            let token = secret(self.config.prefixes.2);
            let uses_left = match self.config.rotation {
                RefreshRotation::SingleUse { .. } => 1,
                RefreshRotation::RotateWithGrace => 2,
                RefreshRotation::Static => u32::MAX,
            };
            store.refresh.insert(
                token.clone(),
                RefreshEntry {
                    chain,
                    client_id: client_id.to_owned(),
                    scope: scope.to_owned(),
                    expires: now + self.config.refresh_token_lifetime,
                    uses_left,
                    access: access.clone(),
                },
            );
            token
        });
        TokenGrant {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.config.access_token_lifetime.as_secs(),
            scope: scope.to_owned(),
        }
    }

    fn revoke_chain(store: &mut Store, chain: u64) {
        if let Some(revoked) = store.chains.get_mut(&chain)
            && !*revoked
        {
            *revoked = true;
            store.counts.revoked_chains += 1;
        }
    }

    /// The `refresh_token` grant. The client is already authenticated as `client_id`.
    pub fn refresh(&self, client_id: &str, refresh_token: &str) -> Result<TokenGrant, OAuthError> {
        let mut store = self.lock();
        let result = self.refresh_locked(&mut store, client_id, refresh_token);
        match &result {
            Ok(_) => store.counts.refreshes += 1,
            Err(_) => store.counts.token_errors += 1,
        }
        result
    }

    fn refresh_locked(
        &self,
        store: &mut Store,
        client_id: &str,
        token: &str,
    ) -> Result<TokenGrant, OAuthError> {
        const BAD: &str = "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
        let Some(entry) = store.refresh.get(token) else {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The refresh token is unknown."
            )));
        };
        let chain = entry.chain;
        if entry.client_id != client_id {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The refresh token was issued to another client."
            )));
        }
        if entry.uses_left == 0 {
            store.counts.reused_refresh_tokens += 1;
            if matches!(self.config.rotation, RefreshRotation::SingleUse { .. }) {
                Self::revoke_chain(store, chain);
                return Err(OAuthError::invalid_grant(format!(
                    "{BAD} The refresh token has been used already; the token chain has been revoked."
                )));
            }
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The refresh token has been used already."
            )));
        }
        if store.chains.get(&chain).copied().unwrap_or(true) {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The refresh token has been revoked."
            )));
        }
        if Instant::now() >= entry.expires {
            return Err(OAuthError::invalid_grant(format!(
                "{BAD} The refresh token has expired."
            )));
        }
        let scope = entry.scope.clone();
        let old_access = entry.access.clone();
        if let RefreshRotation::Static = self.config.rotation {
            // Static tokens: a new access token, the same refresh token back.
            let mut grant = self.mint(store, chain, client_id, &scope);
            if let Some(fresh) = grant.refresh_token.take() {
                store.refresh.remove(&fresh);
            }
            if let Some(entry) = store.refresh.get_mut(token) {
                entry.access = grant.access_token.clone();
            }
            grant.refresh_token = Some(token.to_owned());
            return Ok(grant);
        }
        if let Some(entry) = store.refresh.get_mut(token) {
            entry.uses_left -= 1;
        }
        if let RefreshRotation::SingleUse {
            revoke_access_on_refresh: true,
        } = self.config.rotation
            && let Some(access) = store.access.get_mut(&old_access)
        {
            access.revoked = true;
        }
        Ok(self.mint(store, chain, client_id, &scope))
    }

    /// True when `token` is a live access token. A data call with an expired or revoked one is
    /// counted ([`AuthCounts::expired_access_used`], [`AuthCounts::revoked_access_used`]).
    pub fn access_token_is_valid(&self, token: &str) -> bool {
        let mut store = self.lock();
        let Some(entry) = store.access.get(token) else {
            return false;
        };
        let revoked = entry.revoked || store.chains.get(&entry.chain).copied().unwrap_or(true);
        let expired = Instant::now() >= entry.expires;
        if revoked {
            store.counts.revoked_access_used += 1;
        } else if expired {
            store.counts.expired_access_used += 1;
        }
        !revoked && !expired
    }

    /// Makes every access token issued so far expired (refresh tokens keep working).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for entry in self.lock().access.values_mut() {
            entry.expires = now;
        }
    }

    /// Revokes every chain, as a vendor-side revocation would: all tokens stop working and the
    /// client needs a new authorization (a human in the browser).
    pub fn revoke_all(&self) {
        let mut store = self.lock();
        let chains: Vec<u64> = store.chains.keys().copied().collect();
        for chain in chains {
            Self::revoke_chain(&mut store, chain);
        }
    }

    /// Creates an authorization without the browser round trip and returns its first tokens, for
    /// tests that need a refresh token to configure a client with. Counts nothing.
    pub fn grant_directly(&self, scope: &str) -> TokenGrant {
        let mut store = self.lock();
        let chain = store.next_chain;
        store.next_chain += 1;
        store.chains.insert(chain, false);
        let client_id = self.config.client_id.clone();
        self.mint(&mut store, chain, &client_id, scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(rotation: RefreshRotation) -> AuthServer {
        AuthServer::new(AuthCodeConfig {
            client_id: "c".into(),
            client_secret: "s".into(),
            code_lifetime: Duration::from_secs(300),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(3600),
            rotation,
            revoke_chain_on_code_reuse: true,
            refresh_needs_offline_access: true,
            prefixes: ("ac_", "at_", "rt_"),
        })
    }

    #[test]
    fn the_pkce_transform_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_grace_token_works_twice_and_then_never_again() {
        let server = server(RefreshRotation::RotateWithGrace);
        let first = server.grant_directly("offline_access");
        let rt = first.refresh_token.clone().unwrap_or_default();
        assert!(server.refresh("c", &rt).is_ok());
        assert!(server.refresh("c", &rt).is_ok());
        assert_eq!(
            server.refresh("c", &rt).map_err(|e| e.error),
            Err("invalid_grant")
        );
        assert!(
            server.access_token_is_valid(&first.access_token),
            "grace revokes nothing"
        );
    }

    #[test]
    fn without_offline_access_no_refresh_token_is_issued() {
        let server = server(RefreshRotation::SingleUse {
            revoke_access_on_refresh: true,
        });
        assert_eq!(server.grant_directly("openid").refresh_token, None);
    }
}
