//! How a source renews: retrying storage of tokens the database could not take, the
//! single-flight refresh against the token endpoint, and when a cached token stops being used.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::endpoint::{self, EndpointError, Grant};
use super::store::{NewTokens, StoredToken, TokenStoreError};
use super::{
    AccessToken, AuthError, Cached, Credential, Flow, PENDING_RETRY, Pending, RefreshToken, Slot, SourceAuth,
};
use crate::failure::chain_text;

impl SourceAuth {
    /// Retries storing [`Pending`] tokens when due. While they stay unstored, `Ok` means the
    /// in-memory access token is still good to use; once it is not, the source is paused: this
    /// returns a retryable storage error and nothing renews.
    pub(super) async fn settle_pending(&self, slot: &mut Slot, now: DateTime<Utc>) -> Result<(), AuthError> {
        let usable = slot.current.as_ref().is_some_and(|c| now < c.use_until);
        let Some(pending) = slot.pending.as_mut() else {
            return Ok(());
        };
        if usable && Instant::now() < pending.retry_at {
            return Ok(());
        }
        match self.store_pending(pending).await {
            Ok(true) => {
                tracing::info!(source = %self.name, "Stored the tokens of a refresh the database had missed.");
                slot.pending = None;
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(source = %self.name,
                    "etl.tokens was replaced while our refreshed tokens waited to be stored; using the stored ones.");
                slot.pending = None;
                slot.current = None;
                Ok(())
            }
            Err(reason) => {
                pending.retry_at = Instant::now() + PENDING_RETRY;
                if usable {
                    tracing::warn!(source = %self.name, error = %chain_text(&reason),
                        "Refreshed tokens are still not stored; using them from memory and retrying.");
                    return Ok(());
                }
                tracing::warn!(source = %self.name, error = %chain_text(&reason),
                    "Refreshed tokens are still not stored and their access token is used up; the source is paused until they are.");
                Err(self.pending(
                    "a refreshed token waits in memory to be stored; the source is paused until the database accepts it",
                    Some(reason),
                ))
            }
        }
    }

    /// Writes pending tokens under the row lock. `Ok(false)`: the row was replaced meanwhile by
    /// someone else's tokens, which win; nothing was written.
    pub(super) async fn store_pending(&self, pending: &Pending) -> Result<bool, TokenStoreError> {
        let (lock, stored) = self.store.lock(&self.name, self.flow.name()).await?;
        let secret = |t: &Option<RefreshToken>| t.as_ref().map(|t| t.secret().to_owned());
        let unchanged = match self.flow {
            Flow::RefreshChain { .. } => {
                // A commit whose answer was lost may already have written ours.
                if pending.refresh_token.is_some()
                    && secret(&stored.refresh_token) == secret(&pending.refresh_token)
                {
                    return Ok(true);
                }
                secret(&stored.refresh_token) == secret(&pending.previous_refresh)
            }
            _ => stored.access_token == pending.previous_access,
        };
        if !unchanged {
            return Ok(false); // dropping the lock rolls back
        }
        let tokens = NewTokens {
            access_token: &pending.access_token,
            access_expires_at: pending.access_expires_at,
            refresh_token: pending.refresh_token.as_ref(),
        };
        lock.save(tokens, false).await?;
        Ok(true)
    }

    /// Fetches or refreshes under the source's row lock, unless (`force` aside) the process that
    /// held the lock before us already did. If the new tokens cannot be stored, they go to
    /// `slot.pending` and the new access token is returned all the same.
    pub(super) async fn renew(&self, slot: &mut Slot, force: bool) -> Result<Cached, AuthError> {
        if slot.pending.is_some() {
            return Err(self.pending(
                "a refreshed token waits in memory to be stored; not renewing until it is",
                None,
            ));
        }
        let (lock, stored) = self
            .store
            .lock(&self.name, self.flow.name())
            .await
            .map_err(|e| self.storage(e))?;
        if !force && let Some(cached) = self.usable(&stored, Utc::now()) {
            return Ok(cached); // dropping the lock rolls back: nothing was written
        }
        // The new token kills the old one: wait until no call of this process is in flight with
        // it (each holds the gate shared until its answer is in). No new call can take it
        // meanwhile: they all wait for the slot lock held by the caller.
        let _exclusive = match self.kills_previous {
            true => Some(self.gate.write().await),
            false => None,
        };
        match &self.flow {
            Flow::StaticKey(_) => unreachable!("static keys never renew"),
            Flow::ClientCredentials {
                token_url, client, ..
            } => {
                let issued = endpoint::request(&self.transport, token_url, client, Grant::ClientCredentials)
                    .await
                    .map_err(|e| self.endpoint_failed(e))?;
                let tokens = NewTokens {
                    access_token: &issued.access_token,
                    access_expires_at: issued.expires_at,
                    refresh_token: None,
                };
                if let Err(reason) = lock.save(tokens, false).await {
                    return Ok(self.hold_unstored(
                        slot,
                        &stored,
                        issued.access_token,
                        issued.expires_at,
                        None,
                        &reason,
                    ));
                }
                tracing::info!(source = %self.name, expires_at = %issued.expires_at, "Fetched a new access token.");
                Ok(self.cached(
                    Credential::Bearer(issued.access_token),
                    issued.expires_at,
                    Utc::now(),
                ))
            }
            Flow::RefreshChain {
                token_url, client, ..
            } => {
                if stored.needs_login() {
                    return Err(self.reauthorize(
                        stored
                            .status_reason
                            .clone()
                            .unwrap_or_else(|| "refused earlier".into()),
                    ));
                }
                let Some(refresh_token) = &stored.refresh_token else {
                    return Err(self.reauthorize("no authorisation is stored for this source".into()));
                };
                match endpoint::request(&self.transport, token_url, client, Grant::Refresh(refresh_token))
                    .await
                {
                    Ok(issued) => {
                        // Commit the rotated refresh token before anyone uses the new access token.
                        let tokens = NewTokens {
                            access_token: &issued.access_token,
                            access_expires_at: issued.expires_at,
                            refresh_token: issued.refresh_token.as_ref(),
                        };
                        if let Err(reason) = lock.save(tokens, false).await {
                            return Ok(self.hold_unstored(
                                slot,
                                &stored,
                                issued.access_token,
                                issued.expires_at,
                                issued.refresh_token,
                                &reason,
                            ));
                        }
                        tracing::info!(source = %self.name, expires_at = %issued.expires_at, "Refreshed the access token.");
                        Ok(self.cached(
                            Credential::Bearer(issued.access_token),
                            issued.expires_at,
                            Utc::now(),
                        ))
                    }
                    Err(error @ EndpointError::Refused { .. }) => {
                        // invalid_grant (or any refusal of the refresh token): retrying cannot help,
                        // and replaying a used token may revoke the whole chain.
                        let reason = error.reason();
                        lock.require_reauthorization(&reason)
                            .await
                            .map_err(|e| self.storage(e))?;
                        tracing::error!(source = %self.name, reason = %reason,
                            "The vendor refused the refresh token; re-authorise with `reporting-etl auth login`.");
                        Err(self.reauthorize(reason))
                    }
                    // Not a refusal of the refresh token (unavailable, or not even read): keep it.
                    Err(error) => Err(self.endpoint_failed(error)),
                }
            }
        }
    }

    /// The vendor issued tokens but `etl.tokens` failed to take them: keep them as pending (the
    /// old refresh token is used up) and hand out the new access token.
    pub(super) fn hold_unstored(
        &self,
        slot: &mut Slot,
        stored: &StoredToken,
        access_token: AccessToken,
        expires_at: DateTime<Utc>,
        refresh_token: Option<RefreshToken>,
        reason: &TokenStoreError,
    ) -> Cached {
        tracing::error!(source = %self.name, error = %chain_text(reason),
            "Renewed the token but could not store it; holding it in memory and retrying, and pausing further renewals.");
        slot.pending = Some(Pending {
            access_token: access_token.clone(),
            access_expires_at: expires_at,
            refresh_token,
            previous_refresh: stored.refresh_token.clone(),
            previous_access: stored.access_token.clone(),
            retry_at: Instant::now() + PENDING_RETRY,
        });
        self.cached(Credential::Bearer(access_token), expires_at, Utc::now())
    }

    /// The stored token as a cache entry, if it is still good to use.
    pub(super) fn usable(&self, stored: &StoredToken, now: DateTime<Utc>) -> Option<Cached> {
        if stored.status != "ok" {
            return None;
        }
        let token = stored.access_token.clone()?;
        let expires_at = stored.access_expires_at?;
        let margin = self.margin_for(stored, expires_at);
        (now < self.last_use(expires_at, margin)).then(|| Cached {
            use_until: self.use_until(expires_at, margin),
            credential: Credential::Bearer(token),
        })
    }

    /// When the stored token is in its quiet period (see [`SourceAuth::last_use`]): the instant
    /// it may be renewed, which every caller waits for.
    pub(super) fn quiet_until(&self, stored: &StoredToken, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.kills_previous || stored.status != "ok" || stored.access_token.is_none() {
            return None;
        }
        let expires_at = stored.access_expires_at?;
        let margin = self.margin_for(stored, expires_at);
        let renew_at = expires_at - margin;
        (now >= self.last_use(expires_at, margin) && now < renew_at).then_some(renew_at)
    }

    /// The last instant a call may *start* with a token that expires at `expires_at`.
    ///
    /// Where a new token kills the previous one (Altrata; Roubler's Hydra revokes the old access
    /// token on refresh), a renewal would refuse every call still in flight with the old token.
    /// In this process the renewal gate waits for them; other processes cannot be seen, so every
    /// process stops starting calls with the old token a quiet period before anyone may renew
    /// (`expires_at - margin`), long enough for a call in flight to finish: calls meanwhile wait
    /// for the renewal. Elsewhere a token is used until the renewal is due.
    pub(super) fn last_use(&self, expires_at: DateTime<Utc>, margin: chrono::Duration) -> DateTime<Utc> {
        if self.kills_previous {
            expires_at - margin - quiet_period(margin)
        } else {
            expires_at - margin
        }
    }

    /// Until when this process may hand out a token from its cache without asking the database.
    pub(super) fn use_until(&self, expires_at: DateTime<Utc>, margin: chrono::Duration) -> DateTime<Utc> {
        use_until(expires_at, margin).min(self.last_use(expires_at, margin))
    }

    pub(super) fn cached(
        &self,
        credential: Credential,
        expires_at: DateTime<Utc>,
        issued_at: DateTime<Utc>,
    ) -> Cached {
        let margin = scaled_margin(self.flow.margin(), expires_at - issued_at);
        Cached {
            credential,
            use_until: self.use_until(expires_at, margin),
        }
    }

    pub(super) fn margin_for(&self, stored: &StoredToken, expires_at: DateTime<Utc>) -> chrono::Duration {
        let lifetime = stored
            .last_refresh_at
            .map_or(chrono::Duration::hours(1), |at| expires_at - at);
        scaled_margin(self.flow.margin(), lifetime)
    }

    pub(super) fn storage(&self, cause: TokenStoreError) -> AuthError {
        AuthError::Storage {
            source_name: self.name.clone(),
            pending: None,
            cause: Some(cause),
        }
    }

    /// Tokens a refresh got wait in memory to be stored: `pending` says what that means now.
    pub(super) fn pending(&self, pending: &'static str, cause: Option<TokenStoreError>) -> AuthError {
        AuthError::Storage {
            source_name: self.name.clone(),
            pending: Some(pending),
            cause,
        }
    }

    /// What a token request's failure is for this source.
    pub(super) fn endpoint_failed(&self, cause: EndpointError) -> AuthError {
        let source_name = self.name.clone();
        match cause {
            EndpointError::Refused { .. } => AuthError::Refused { source_name, cause },
            EndpointError::Unavailable { .. } => AuthError::Unavailable { source_name, cause },
            EndpointError::Unusable { kind, .. } => AuthError::Unusable {
                source_name,
                kind,
                cause,
            },
        }
    }

    pub(super) fn reauthorize(&self, reason: String) -> AuthError {
        AuthError::Reauthorize {
            source_name: self.name.clone(),
            reason,
        }
    }
}

/// The longest quiet period before a kill-on-renew renewal (see [`SourceAuth::last_use`]): calls
/// take well under a second; the cap keeps a long-lived token's pause short.
pub(super) const MAX_QUIET: Duration = Duration::from_secs(10);

/// The quiet period before a kill-on-renew renewal: the renewal margin, at most [`MAX_QUIET`].
pub(super) fn quiet_period(margin: chrono::Duration) -> chrono::Duration {
    margin.min(chrono::Duration::from_std(MAX_QUIET).unwrap_or(chrono::Duration::MAX))
}

/// Renew `margin` before expiry, but never more than a fifth of the token's life (short-lived
/// test tokens would otherwise be renewed on every call).
pub(super) fn scaled_margin(margin: Duration, lifetime: chrono::Duration) -> chrono::Duration {
    let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
    margin.min(lifetime / 5).max(chrono::Duration::zero())
}

/// A process stops using its cached token a little before anyone may replace it, and re-reads
/// the database from then on: when another process renews (and Altrata kills the old token),
/// calls already use the stored one instead of failing with 401.
pub(super) fn use_until(expires_at: DateTime<Utc>, margin: chrono::Duration) -> DateTime<Utc> {
    expires_at - margin - margin / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_renewal_margin_is_the_configured_one_but_never_more_than_a_fifth_of_the_lifetime() {
        let margin = Duration::from_secs(60);
        assert_eq!(
            scaled_margin(margin, chrono::Duration::hours(1)),
            chrono::Duration::seconds(60)
        );
        // A 100 s token would be renewed at once with a 60 s margin (plus half): 20 s instead.
        assert_eq!(
            scaled_margin(margin, chrono::Duration::seconds(100)),
            chrono::Duration::seconds(20)
        );
        assert_eq!(
            scaled_margin(margin, chrono::Duration::seconds(-5)),
            chrono::Duration::zero()
        );
    }

    #[test]
    pub(super) fn a_cached_token_is_used_until_one_and_a_half_margins_before_it_expires() {
        let expires = Utc::now();
        assert_eq!(
            use_until(expires, chrono::Duration::seconds(20)),
            expires - chrono::Duration::seconds(30)
        );
    }
}
