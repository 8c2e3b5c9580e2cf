//! `etl.tokens`: the one authoritative place a source's tokens live, shared by restarts and
//! replicas, with refresh tokens encrypted at rest (ChaCha20-Poly1305) when a key is configured.
//!
//! Refreshes happen inside [`TokenStore::lock`]: a transaction holding the source's row lock
//! (`SELECT … FOR UPDATE`), so only one process at a time refreshes a source, and a process that
//! waited re-reads what the other one wrote before deciding to refresh at all.

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

use super::token::{AccessToken, RefreshToken};

/// What `etl.tokens` holds for one source, decrypted.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub access_token: Option<AccessToken>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub refresh_token: Option<RefreshToken>,
    pub version: i64,
    /// `ok`, or [`REAUTHORISE`] after the vendor refused the refresh token (see
    /// [`StoredToken::needs_login`]).
    pub status: String,
    pub status_reason: Option<String>,
    pub chain_started_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub flow: String,
}

/// `etl.tokens.status` of a source a person must log in for again: the one spelling, as
/// `etl.runs.error_kind` has it.
pub(crate) const REAUTHORISE: &str = "reauthorise";
/// The same, as releases before migration 0011 write it: read until its contract migration.
const REAUTHORISE_BEFORE_0011: &str = "reauthorize";

impl StoredToken {
    /// Whether the vendor refused the refresh token and a person must run `auth login`.
    pub fn needs_login(&self) -> bool {
        self.status == REAUTHORISE || self.status == REAUTHORISE_BEFORE_0011
    }
}

/// New tokens to write.
pub struct NewTokens<'a> {
    pub access_token: &'a AccessToken,
    pub access_expires_at: DateTime<Utc>,
    /// `None` keeps the stored refresh token (a vendor that does not rotate sends none).
    pub refresh_token: Option<&'a RefreshToken>,
}

/// Access to `etl.tokens` with the optional encryption key.
#[derive(Clone)]
pub struct TokenStore {
    pool: PgPool,
    cipher: Option<ChaCha20Poly1305>,
}

type Row = (
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<Vec<u8>>,
    bool,
    i64,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

macro_rules! select_tokens {
    () => {
        "SELECT flow, access_token, access_expires_at, refresh_token, refresh_token_encrypted, version,
                             status, status_reason, chain_started_at, last_refresh_at
                      FROM etl.tokens WHERE source = $1"
    };
}

impl TokenStore {
    /// `key`: any string; the cipher key is its SHA-256.
    pub fn new(pool: PgPool, key: Option<&SecretString>) -> TokenStore {
        let cipher = key.map(|key| {
            let digest = Sha256::digest(key.expose_secret().as_bytes());
            ChaCha20Poly1305::new(Key::from_slice(&digest))
        });
        TokenStore { pool, cipher }
    }

    pub(crate) fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored tokens of a source, without locking.
    pub(crate) async fn read(&self, source: &str) -> Result<Option<StoredToken>, TokenStoreError> {
        let row: Option<Row> = sqlx::query_as(select_tokens!())
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map_err(database("reading etl.tokens"))?;
        row.map(|row| self.decode(row)).transpose()
    }

    /// Opens a transaction holding the source's row lock (creating the row if needed) and
    /// returns what is stored now. Commit or drop the guard to release the lock.
    pub async fn lock(&self, source: &str, flow: &str) -> Result<(TokenLock, StoredToken), TokenStoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(database("opening a transaction"))?;
        sqlx::query("INSERT INTO etl.tokens (source, flow) VALUES ($1, $2) ON CONFLICT (source) DO NOTHING")
            .bind(source)
            .bind(flow)
            .execute(&mut *tx)
            .await
            .map_err(database("creating the etl.tokens row"))?;
        let row: Row = sqlx::query_as(concat!(select_tokens!(), " FOR UPDATE"))
            .bind(source)
            .fetch_one(&mut *tx)
            .await
            .map_err(database("locking the etl.tokens row"))?;
        let stored = self.decode(row)?;
        Ok((
            TokenLock {
                tx,
                source: source.to_owned(),
                store: self.clone(),
            },
            stored,
        ))
    }

    fn decode(&self, row: Row) -> Result<StoredToken, TokenStoreError> {
        let (flow, access, expires, refresh, encrypted, version, status, reason, chain, last) = row;
        let refresh_token = match refresh {
            None => None,
            Some(bytes) if encrypted => Some(RefreshToken::new(self.decrypt(&bytes)?)),
            Some(bytes) => Some(RefreshToken::new(String::from_utf8(bytes).map_err(|_| {
                TokenStoreError::Unreadable("the stored refresh token is not valid UTF-8")
            })?)),
        };
        Ok(StoredToken {
            access_token: access.map(AccessToken::new),
            access_expires_at: expires,
            refresh_token,
            version,
            status,
            status_reason: reason,
            chain_started_at: chain,
            last_refresh_at: last,
            flow,
        })
    }

    fn encrypt(&self, plain: &str) -> Result<(Vec<u8>, bool), TokenStoreError> {
        let Some(cipher) = &self.cipher else {
            return Ok((plain.as_bytes().to_vec(), false));
        };
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .map_err(|_| TokenStoreError::Unreadable("encrypting the refresh token failed"))?;
        Ok(([nonce.as_slice(), &sealed].concat(), true))
    }

    // The cipher's errors say nothing useful (and must not say more): each failure is named here.
    fn decrypt(&self, bytes: &[u8]) -> Result<String, TokenStoreError> {
        let cipher = self.cipher.as_ref().ok_or(TokenStoreError::Unreadable(
            "the stored refresh token is encrypted but no security.token_key is configured",
        ))?;
        if bytes.len() < 12 {
            return Err(TokenStoreError::Unreadable(
                "the stored refresh token is truncated",
            ));
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| {
            TokenStoreError::Unreadable(
                "the stored refresh token does not decrypt with security.token_key (wrong key?)",
            )
        })?;
        String::from_utf8(plain)
            .map_err(|_| TokenStoreError::Unreadable("the decrypted refresh token is not valid UTF-8"))
    }
}

/// Why `etl.tokens` could not be read or written. A database failure keeps the driver's error as
/// its source; a token that cannot be read names the problem and never the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenStoreError {
    /// A statement on `etl.tokens` failed (`what` it was doing); shared, so that the auth error
    /// carrying it can be handed to every caller waiting on one refresh.
    #[error("{what}")]
    Database {
        what: &'static str,
        #[source]
        cause: Arc<sqlx::Error>,
    },
    /// The stored refresh token cannot be used (not decryptable with the configured key, not
    /// text), or could not be encrypted.
    #[error("{0}")]
    Unreadable(&'static str),
}

/// Maps a driver error of the statement doing `what`.
fn database(what: &'static str) -> impl FnOnce(sqlx::Error) -> TokenStoreError {
    move |cause| TokenStoreError::Database {
        what,
        cause: Arc::new(cause),
    }
}

/// The sources waiting for `auth login` (a refused refresh marked them), by name.
pub(crate) async fn awaiting_login(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT source FROM etl.tokens WHERE status IN ('reauthorise', 'reauthorize') ORDER BY source",
    )
    .fetch_all(pool)
    .await
    .context("reading token states")?;
    Ok(rows.into_iter().map(|(source,)| source).collect())
}

/// Per source with stored tokens, whether it waits for `auth login`.
pub(crate) async fn login_required(pool: &PgPool) -> anyhow::Result<Vec<(String, bool)>> {
    use anyhow::Context as _;
    sqlx::query_as("SELECT source, status IN ('reauthorise', 'reauthorize') FROM etl.tokens")
        .fetch_all(pool)
        .await
        .context("reading token states")
}

/// A held row lock on one source's tokens. Every write commits and releases it.
pub struct TokenLock {
    tx: Transaction<'static, Postgres>,
    source: String,
    store: TokenStore,
}

impl TokenLock {
    /// Writes new tokens and commits. `new_chain` marks a fresh authorisation (`auth login`).
    pub async fn save(mut self, tokens: NewTokens<'_>, new_chain: bool) -> Result<i64, TokenStoreError> {
        let refresh = tokens
            .refresh_token
            .map(|token| self.store.encrypt(token.secret()))
            .transpose()?;
        let (refresh_bytes, encrypted) =
            refresh.map_or((None, false), |(bytes, encrypted)| (Some(bytes), encrypted));
        let (version,): (i64,) = sqlx::query_as(
            "UPDATE etl.tokens
             SET access_token = $2, access_expires_at = $3,
                 refresh_token = COALESCE($4, refresh_token),
                 refresh_token_encrypted = CASE WHEN $4 IS NULL THEN refresh_token_encrypted ELSE $5 END,
                 version = version + 1, last_refresh_at = now(), updated_at = now(),
                 chain_started_at = CASE WHEN $6 OR chain_started_at IS NULL THEN now() ELSE chain_started_at END,
                 status = 'ok', status_reason = NULL
             WHERE source = $1
             RETURNING version",
        )
        .bind(&self.source)
        .bind(tokens.access_token.secret())
        .bind(tokens.access_expires_at)
        .bind(refresh_bytes)
        .bind(encrypted)
        .bind(new_chain)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(database("writing etl.tokens"))?;
        self.tx
            .commit()
            .await
            .map_err(database("committing etl.tokens"))?;
        Ok(version)
    }

    /// Marks the source as needing a person to re-authorise, and commits.
    pub(crate) async fn require_reauthorization(mut self, reason: &str) -> Result<(), TokenStoreError> {
        sqlx::query(
            "UPDATE etl.tokens SET status = 'reauthorise', status_reason = $2, access_token = NULL,
                    access_expires_at = NULL, version = version + 1, updated_at = now()
             WHERE source = $1",
        )
        .bind(&self.source)
        .bind(reason)
        .execute(&mut *self.tx)
        .await
        .map_err(database("writing etl.tokens"))?;
        self.tx.commit().await.map_err(database("committing etl.tokens"))
    }

    /// Marks the stored access token expired (the upstream rejected it), and commits.
    pub(crate) async fn expire_access_token(mut self) -> Result<(), TokenStoreError> {
        sqlx::query(
            "UPDATE etl.tokens SET access_expires_at = LEAST(access_expires_at, now() - interval '1 second'),
                    version = version + 1, updated_at = now()
             WHERE source = $1",
        )
        .bind(&self.source)
        .execute(&mut *self.tx)
        .await
        .map_err(database("writing etl.tokens"))?;
        self.tx.commit().await.map_err(database("committing etl.tokens"))
    }
}
