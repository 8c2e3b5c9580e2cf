//! The secret values of one attempt (credential, API key), scrubbed from every message built
//! from an answer before it leaves the executor.

use secrecy::{ExposeSecret, SecretString};

use crate::auth::Credential;

/// The secret values of one attempt, to scrub from anything an answer could echo back.
pub(super) struct Secrets<'a> {
    values: Vec<&'a str>,
}

impl<'a> Secrets<'a> {
    pub(super) fn new(credential: Option<&'a Credential>, api_key: Option<&'a SecretString>) -> Secrets<'a> {
        let mut values = Vec::new();
        if let Some(Credential::Bearer(token) | Credential::ApiKey(token)) = credential {
            values.push(token.secret());
        }
        if let Some(key) = api_key {
            values.push(key.expose_secret());
        }
        // An empty or tiny "secret" would scrub ordinary words; nothing real is that short.
        values.retain(|v| v.len() >= 6);
        Secrets { values }
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value) {
                text = text.replace(value, "[redacted]");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AccessToken;

    #[test]
    fn secrets_echoed_by_an_upstream_are_scrubbed() {
        let credential = Credential::Bearer(AccessToken::new("ory_at_secret-token-value"));
        let key = SecretString::from("altrata-api-key-value".to_owned());
        let secrets = Secrets::new(Some(&credential), Some(&key));
        let scrubbed =
            secrets.scrub("HTTP 400: bad header Bearer ory_at_secret-token-value with altrata-api-key-value");
        assert_eq!(scrubbed, "HTTP 400: bad header Bearer [redacted] with [redacted]");
    }
}
