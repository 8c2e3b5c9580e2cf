//! Secret newtypes for tokens: `Debug` prints `[redacted]`, the value comes out only through
//! `.secret()`, so a token cannot reach a log line or an error by accident.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// An access token (or a static API key) as sent upstream. Cheap to clone.
#[derive(Clone)]
pub struct AccessToken(Arc<SecretString>);

impl AccessToken {
    pub fn new(value: impl Into<String>) -> Self {
        AccessToken(Arc::new(SecretString::from(value.into())))
    }

    pub fn secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.secret() == other.secret()
    }
}

impl Eq for AccessToken {}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// A refresh token. Never cloned into logs; stored encrypted when a key is configured.
#[derive(Clone)]
pub struct RefreshToken(Arc<SecretString>);

impl RefreshToken {
    pub fn new(value: impl Into<String>) -> Self {
        RefreshToken(Arc::new(SecretString::from(value.into())))
    }

    pub(crate) fn secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// How a call authenticates: the `Authorization` header value to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`
    Bearer(AccessToken),
    /// Retently's static key: `Authorization: api_key=<key>`
    ApiKey(AccessToken),
}

impl Credential {
    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        match self {
            Credential::Bearer(token) => format!("Bearer {}", token.secret()),
            Credential::ApiKey(key) => format!("api_key={}", key.secret()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_token() {
        let access = AccessToken::new("at-very-secret");
        let refresh = RefreshToken::new("rt-very-secret");
        let printed = format!(
            "{access:?} {refresh:?} {:?} {:?}",
            Credential::Bearer(access.clone()),
            Credential::ApiKey(access.clone())
        );
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
    }

    #[test]
    fn the_authorization_header_follows_each_scheme() {
        let token = AccessToken::new("abc");
        assert_eq!(Credential::Bearer(token.clone()).authorization(), "Bearer abc");
        // Retently's static key scheme, as its API documents it.
        assert_eq!(Credential::ApiKey(token).authorization(), "api_key=abc");
    }
}
