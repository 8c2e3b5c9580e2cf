//! Auth: one token provider per source, which the executor asks for a valid credential.
//!
//! Tokens live in `etl.tokens` ([`store`]) so restarts and replicas share them; this module is
//! the only place that talks to token endpoints ([`endpoint`]). The executor calls
//! [`SourceAuth::credential`] before each upstream call and [`SourceAuth::rejected`] after a 401.
//!
//! The rules every flow follows (see `docs/lessons.md`):
//! - one refresh at a time per source: in-process through [`SourceAuth::cache`], across processes
//!   through the row lock of `etl.tokens`; whoever waited re-reads before refreshing;
//! - a rotated refresh token is committed before the new access token is used — unless the
//!   database fails between the refresh and the commit: then the new tokens are held in memory as
//!   [`Pending`], the new access token is used, storing is retried on later calls, and the source
//!   is paused (never refreshed again, never with the old refresh token) until they are stored;
//! - a refused refresh (`invalid_grant`) marks the source `reauthorise` and is never retried;
//! - a token is replaced only near its expiry or after the upstream rejected that very token
//!   (Altrata kills the previous token whenever a new one is issued).

pub mod endpoint;
pub(crate) mod login;
mod renewal;
mod status;
pub mod store;
pub(crate) mod token;

pub(crate) use status::{StatusRow, status};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::config::{HttpUrl, Settings, SourceSettings};
use crate::transport::Transport;
use endpoint::ClientAuth;
use store::TokenStore;
pub use token::{AccessToken, Credential, RefreshToken};

tokio::task_local! {
    /// Token-endpoint requests made by the task running [`counting_token_requests`]'s future.
    static TOKEN_REQUESTS: Arc<std::sync::atomic::AtomicU32>;
}

/// Runs `future` (typically [`SourceAuth::credential`]) and counts the requests it sent to a
/// token endpoint, so that a run can be told the token calls it caused. A refresh another caller
/// made while this one waited for it is that caller's, not counted here.
pub(crate) async fn counting_token_requests<F: std::future::Future>(future: F) -> (F::Output, u32) {
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let output = TOKEN_REQUESTS.scope(counter.clone(), future).await;
    (output, counter.load(std::sync::atomic::Ordering::Relaxed))
}

/// Notes one token-endpoint request for the enclosing [`counting_token_requests`], if any.
fn count_token_request() {
    let _ = TOKEN_REQUESTS.try_with(|counter| counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
}

/// Why no credential could be produced. The message names the source and never a secret; the
/// token endpoint's or the token store's error is the source (print the chain with `{:#}`).
/// Cloneable (its causes are shared) so that one failed refresh answers every caller waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The vendor refused the refresh token (or access was revoked): a person must log in again.
    /// `reason` is what `etl.tokens.status_reason` keeps.
    #[error(
        "source {source_name}: the vendor no longer accepts the stored authorisation ({reason}); re-authorise with `reporting-etl auth login {source_name}`"
    )]
    Reauthorize { source_name: String, reason: String },
    /// The token endpoint refused the client credentials: a configuration problem.
    #[error("source {source_name}: the token endpoint refused the credentials")]
    Refused {
        source_name: String,
        #[source]
        cause: endpoint::EndpointError,
    },
    /// The token endpoint could not be reached or failed; worth retrying later.
    #[error("source {source_name}: the token endpoint is unavailable")]
    Unavailable {
        source_name: String,
        #[source]
        cause: endpoint::EndpointError,
    },
    /// The token endpoint's answer can never be used as it comes (a redirect, a body past the
    /// size limit): asking again would get the same, so the run fails at once with `kind`.
    #[error("source {source_name}: the token endpoint's answer cannot be used")]
    Unusable {
        source_name: String,
        kind: crate::failure::FailureKind,
        #[source]
        cause: endpoint::EndpointError,
    },
    /// Reading or writing `etl.tokens` failed (`cause`), or tokens a refresh got wait in memory
    /// until it works (`pending` says what that means for the source).
    #[error(
        "source {source_name}: token storage failed{}",
        pending.map(|p| format!(" ({p})")).unwrap_or_default()
    )]
    Storage {
        source_name: String,
        pending: Option<&'static str>,
        #[source]
        cause: Option<store::TokenStoreError>,
    },
}

impl AuthError {
    /// What a run this error stops fails with.
    pub(crate) fn kind(&self) -> crate::failure::FailureKind {
        use crate::failure::FailureKind;
        match self {
            AuthError::Reauthorize { .. } => FailureKind::Reauthorise,
            AuthError::Refused { .. } => FailureKind::Unauthorised,
            AuthError::Unavailable { .. } => FailureKind::UpstreamUnavailable,
            AuthError::Storage { .. } => FailureKind::Database,
            AuthError::Unusable { kind, .. } => *kind,
        }
    }

    /// Whether waiting and asking again may succeed.
    /// The status and headers of the token endpoint's answer that made it unavailable (a 429 or
    /// a 5xx), if it answered: when to ask again is in them.
    pub fn unavailable_answer(&self) -> Option<(reqwest::StatusCode, &reqwest::header::HeaderMap)> {
        match self {
            AuthError::Unavailable { cause, .. } => cause.unavailable_answer(),
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Unavailable { .. } | AuthError::Storage { .. })
    }
}

/// How a source obtains its access token.
#[derive(Clone)]
pub enum Flow {
    /// Ask the token endpoint for a new token when needed.
    ClientCredentials {
        token_url: HttpUrl,
        client: ClientAuth,
        /// Refresh this long before expiry (scaled down for short-lived tokens).
        margin: Duration,
    },
    /// Authorization code: refresh with the stored refresh token.
    RefreshChain {
        token_url: HttpUrl,
        client: ClientAuth,
        margin: Duration,
    },
    /// A static API key (sent as `Authorization: api_key=KEY`).
    StaticKey(AccessToken),
}

impl Flow {
    fn name(&self) -> &'static str {
        match self {
            Flow::ClientCredentials { .. } => "client_credentials",
            Flow::RefreshChain { .. } => "authorization_code",
            Flow::StaticKey(_) => "api_key",
        }
    }

    fn margin(&self) -> Duration {
        match self {
            Flow::ClientCredentials { margin, .. } | Flow::RefreshChain { margin, .. } => *margin,
            Flow::StaticKey(_) => Duration::ZERO,
        }
    }
}

/// Held by one upstream call from taking its credential until its answer is in: a renewal that
/// kills the previous token waits for every such call of its process.
pub(crate) struct CallGuard(#[allow(dead_code)] Option<tokio::sync::OwnedRwLockReadGuard<()>>);

/// A credential this process may keep using until `use_until` without asking the database.
struct Cached {
    credential: Credential,
    use_until: DateTime<Utc>,
}

/// How often storing [`Pending`] tokens is retried while their access token is still good. Every
/// attempt against an unreachable database waits for the pool's acquire timeout, so calls must
/// not pay that on every request.
const PENDING_RETRY: Duration = Duration::from_secs(2);

/// Tokens the vendor issued that `etl.tokens` could not store (the database failed between the
/// refresh and the commit). A rotated refresh token exists nowhere else: losing it means a person
/// must log in again, and sending the old one again may revoke the whole chain. So while this is
/// set the source never renews; it uses the new access token while that lasts and retries storing.
struct Pending {
    access_token: AccessToken,
    access_expires_at: DateTime<Utc>,
    /// The rotated refresh token (`None`: the vendor kept the old one, or a client-credentials flow).
    refresh_token: Option<RefreshToken>,
    /// What `etl.tokens` held when we renewed: if the row holds something else by the time we can
    /// write, another process (or `auth login`) replaced it and ours must not overwrite it.
    previous_refresh: Option<RefreshToken>,
    previous_access: Option<AccessToken>,
    /// No attempt to store before this while the access token is still good.
    retry_at: Instant,
}

/// What the single-flight lock guards: the current credential and tokens waiting to be stored.
#[derive(Default)]
struct Slot {
    current: Option<Cached>,
    pending: Option<Pending>,
}

/// The token provider of one source.
pub struct SourceAuth {
    name: String,
    flow: Flow,
    store: TokenStore,
    /// The one road out, as data calls take it (see [`crate::transport`]).
    transport: Transport,
    /// Whether a new token kills the previous one (Altrata; Roubler's Hydra revokes the old
    /// access token on refresh): then renewals wait for the calls in flight ([`SourceAuth::gate`])
    /// and every process keeps a quiet period before them (see `renewal::SourceAuth::last_use`).
    kills_previous: bool,
    /// The renewal gate of a kill-on-renew source: every call holds it shared from the moment it
    /// takes the credential until its answer is in ([`CallGuard`]); a renewal takes it
    /// exclusively, so it waits for those calls and none starts until it is done. Taken shared
    /// only while [`SourceAuth::cache`] is held, and exclusively only by a renewal holding it, so
    /// the two locks are always taken in the same order.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// The current credential (and tokens waiting to be stored). Every caller of this source
    /// takes this lock, so while one caller refreshes, the others wait for its result instead of
    /// refreshing too (single flight).
    cache: Mutex<Slot>,
}

impl SourceAuth {
    /// A credential valid for a while yet; fetches or refreshes when needed.
    pub async fn credential(&self) -> Result<Credential, AuthError> {
        self.credential_for_call().await.map(|(credential, _)| credential)
    }

    /// A credential for one upstream call, with the guard the call holds until its answer is in
    /// (a renewal that kills the previous token waits for it). Waits out a quiet period before
    /// such a renewal (see `renewal::SourceAuth::last_use`).
    pub(crate) async fn credential_for_call(&self) -> Result<(Credential, CallGuard), AuthError> {
        loop {
            match self.credential_or_quiet().await? {
                Ok(ready) => return Ok(ready),
                Err(renew_at) => {
                    let wait = (renew_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tracing::debug!(source = %self.name, wait_ms = wait.as_millis() as u64,
                        "Waiting for the quiet period before a renewal that kills the current token.");
                    tokio::time::sleep(wait.min(renewal::MAX_QUIET)).await;
                }
            }
        }
    }

    /// A credential with its call guard, or (`Err` inside) the instant until which every caller
    /// must wait because the token is in its quiet period.
    async fn credential_or_quiet(&self) -> Result<Result<(Credential, CallGuard), DateTime<Utc>>, AuthError> {
        if let Flow::StaticKey(key) = &self.flow {
            return Ok(Ok((Credential::ApiKey(key.clone()), CallGuard(None))));
        }
        let mut slot = self.cache.lock().await;
        let now = Utc::now();
        self.settle_pending(&mut slot, now).await?;
        if let Some(cached) = slot.current.as_ref()
            && now < cached.use_until
        {
            return Ok(Ok((cached.credential.clone(), self.call_guard().await)));
        }
        // Another process may have fetched or refreshed: read before taking any lock.
        let stored = self.store.read(&self.name).await.map_err(|e| self.storage(e))?;
        if let Some(stored) = &stored {
            if let Some(cached) = self.usable(stored, now) {
                let credential = cached.credential.clone();
                slot.current = Some(cached);
                return Ok(Ok((credential, self.call_guard().await)));
            }
            if let Some(renew_at) = self.quiet_until(stored, now) {
                return Ok(Err(renew_at));
            }
        }
        let cached = self.renew(&mut slot, false).await?;
        let credential = cached.credential.clone();
        slot.current = Some(cached);
        Ok(Ok((credential, self.call_guard().await)))
    }

    /// The gate taken shared for one call (immediate: only a renewal, which holds the slot lock
    /// the caller holds now, ever takes it exclusively).
    async fn call_guard(&self) -> CallGuard {
        match self.kills_previous {
            true => CallGuard(Some(self.gate.clone().read_owned().await)),
            false => CallGuard(None),
        }
    }

    /// The upstream answered 401 to `rejected`. If it is still the stored token, mark it expired
    /// so the next [`SourceAuth::credential`] fetches or refreshes; if another process already
    /// replaced it, do nothing: the next call picks up the replacement.
    pub async fn rejected(&self, rejected: &Credential) -> Result<(), AuthError> {
        if matches!(self.flow, Flow::StaticKey(_)) {
            return Ok(());
        }
        let mut slot = self.cache.lock().await;
        if slot.current.as_ref().is_some_and(|c| &c.credential == rejected) {
            slot.current = None;
        }
        // A rejected token that is still only in memory must reach etl.tokens first, or the
        // check below would compare against the older stored token.
        self.settle_pending(&mut slot, Utc::now()).await?;
        let (lock, stored) = self
            .store
            .lock(&self.name, self.flow.name())
            .await
            .map_err(|e| self.storage(e))?;
        let Credential::Bearer(rejected_token) = rejected else {
            return Ok(());
        };
        if stored.access_token.as_ref() == Some(rejected_token) {
            tracing::info!(source = %self.name, "Upstream rejected the current access token; it will be renewed.");
            lock.expire_access_token().await.map_err(|e| self.storage(e))?;
        }
        Ok(())
    }

    /// Whether `sent` has been replaced since it was sent (another job or process renewed the
    /// token while the call was on its way): then a 401 to it says nothing about the current
    /// token, and the call is retried with the current one without renewing anything. Looks at
    /// this process's cache and then at `etl.tokens`; changes neither.
    pub(crate) async fn replaced_since(&self, sent: &Credential) -> bool {
        if matches!(self.flow, Flow::StaticKey(_)) {
            return false;
        }
        let now = Utc::now();
        {
            let slot = self.cache.lock().await;
            if let Some(current) = &slot.current
                && now < current.use_until
                && &current.credential != sent
            {
                return true;
            }
        }
        match self.store.read(&self.name).await {
            Ok(Some(stored)) => self
                .usable(&stored, now)
                .is_some_and(|current| &current.credential != sent),
            // Unknown: treat the 401 as being about the current token (the safe, old way).
            _ => false,
        }
    }

    /// Fetches or refreshes now, even if the stored token is still valid (`auth refresh`: proves
    /// the stored authorisation works). Returns when the new token expires.
    pub(crate) async fn renew_now(&self) -> Result<DateTime<Utc>, AuthError> {
        if matches!(self.flow, Flow::StaticKey(_)) {
            return Ok(DateTime::<Utc>::MAX_UTC);
        }
        let mut slot = self.cache.lock().await;
        // Forced: a pending refresh token must be stored before anything may renew.
        slot.current = None;
        self.settle_pending(&mut slot, Utc::now()).await?;
        let cached = self.renew(&mut slot, true).await?;
        let expires = cached.use_until;
        slot.current = Some(cached);
        Ok(expires)
    }

    /// Whether tokens this process renewed still wait to be stored (the source is paused).
    pub async fn has_pending_tokens(&self) -> bool {
        self.cache.lock().await.pending.is_some()
    }
}

/// Every source's provider, by source name.
pub type AuthRegistry = HashMap<String, Arc<SourceAuth>>;

/// Builds the provider of every configured source. Warns when refresh tokens will be stored
/// unencrypted.
pub fn build(settings: &Settings, pool: PgPool) -> AuthRegistry {
    let store = TokenStore::new(pool, settings.security.token_key.as_ref());
    // Token requests take the same road as data calls, with the same limits.
    let transport = Transport::new(endpoint::limits()).expect("a TLS backend is compiled in");
    let uses_refresh_tokens = settings
        .sources
        .values()
        .any(|s| matches!(setup(s).flow, Flow::RefreshChain { .. }));
    if uses_refresh_tokens && !store.encrypts() {
        tracing::warn!(
            "Refresh tokens are stored unencrypted: set security.token_key (or token_key_file) to encrypt them at rest."
        );
    }
    settings
        .sources
        .iter()
        .map(|(name, source)| {
            let setup = setup(source);
            let auth = SourceAuth {
                name: name.clone(),
                flow: setup.flow,
                kills_previous: setup.kills_previous_token,
                gate: Arc::default(),
                store: store.clone(),
                transport: transport.clone(),
                cache: Mutex::new(Slot::default()),
            };
            (name.clone(), Arc::new(auth))
        })
        .collect()
}

/// A secret of a section for a token request: validation guarantees required secrets are
/// present; an absent optional one is empty.
pub fn secret(value: &Option<SecretString>) -> SecretString {
    value.clone().unwrap_or_else(|| SecretString::from(String::new()))
}

/// What auth needs of a source's vendor, handed over by its configuration section (see
/// `config::Section::parts`): which flow, how a token request authenticates, whether a new token
/// kills the old one, and how a person logs in.
pub struct AuthSetup {
    pub flow: Flow,
    /// Whether the vendor kills the previous access token when it issues a new one (Altrata's
    /// documented rule; Roubler's Hydra revokes the old access token on refresh).
    pub kills_previous_token: bool,
    /// The authorization-code login (`auth login`), for flows that need a person once.
    pub login: Option<LoginSetup>,
}

/// Where and how `auth login` sends a person to approve access.
pub struct LoginSetup {
    pub authorize_url: HttpUrl,
    pub redirect_uri: HttpUrl,
    pub client_id: String,
    /// Send a PKCE challenge (the vendor's server supports it).
    pub pkce: bool,
    /// The `scope` parameter, if the vendor wants one.
    pub scope: Option<&'static str>,
}

/// The source's auth setup; a vendor that hands none has nothing to authenticate with, which a
/// test of every vendor rules out (see `src/vendors/`), so this is an empty static key.
fn setup(source: &SourceSettings) -> AuthSetup {
    source.part::<AuthSetup>().unwrap_or(AuthSetup {
        flow: Flow::StaticKey(AccessToken::new(String::new())),
        kills_previous_token: false,
        login: None,
    })
}
