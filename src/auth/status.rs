//! `reporting-etl auth status`: what `etl.tokens` says about every configured source.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::store::TokenStore;
use super::{Flow, setup};
use crate::config::Settings;

/// `auth status` rows: never a secret.
pub(crate) struct StatusRow {
    pub source: String,
    pub flow: &'static str,
    /// Whether a run could authenticate with what is stored (`auth status` exits 1 otherwise).
    pub usable: bool,
    pub state: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub chain_started_at: Option<DateTime<Utc>>,
    pub has_refresh_token: bool,
}

/// What `etl.tokens` says about every configured source.
pub(crate) async fn status(settings: &Settings, pool: PgPool) -> anyhow::Result<Vec<StatusRow>> {
    let store = TokenStore::new(pool, settings.security.token_key.as_ref());
    let mut rows = Vec::new();
    for (name, source) in &settings.sources {
        let flow = setup(source).flow;
        let stored = match store.read(name).await {
            Ok(stored) => stored,
            Err(reason) => {
                rows.push(StatusRow {
                    source: name.clone(),
                    flow: flow.name(),
                    usable: false,
                    state: format!("unreadable: {}", crate::failure::chain_text(&reason)),
                    expires_at: None,
                    last_refresh_at: None,
                    chain_started_at: None,
                    has_refresh_token: false,
                });
                continue;
            }
        };
        let (usable, state) = match (&flow, &stored) {
            (Flow::StaticKey(_), _) => (true, "static API key".to_owned()),
            (_, Some(s)) if s.needs_login() => (
                false,
                format!(
                    "re-authorise with `reporting-etl auth login {name}` ({})",
                    s.status_reason.as_deref().unwrap_or("refused")
                ),
            ),
            (Flow::RefreshChain { .. }, Some(s)) if s.refresh_token.is_none() => (
                false,
                format!("not authorised: run `reporting-etl auth login {name}`"),
            ),
            (Flow::RefreshChain { .. }, None) => (
                false,
                format!("not authorised: run `reporting-etl auth login {name}`"),
            ),
            (_, None) => (true, "no token yet (fetched on first use)".to_owned()),
            (_, Some(_)) => (true, "ok".to_owned()),
        };
        rows.push(StatusRow {
            source: name.clone(),
            flow: flow.name(),
            usable,
            state,
            expires_at: stored.as_ref().and_then(|s| s.access_expires_at),
            last_refresh_at: stored.as_ref().and_then(|s| s.last_refresh_at),
            chain_started_at: stored.as_ref().and_then(|s| s.chain_started_at),
            has_refresh_token: stored.as_ref().is_some_and(|s| s.refresh_token.is_some()),
        });
    }
    Ok(rows)
}
