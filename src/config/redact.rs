//! The one redaction rule for every message that can carry configuration text.
//!
//! Messages come from serde, the `config` crate, the TOML parser, URL parsing and secret files;
//! any of them may quote what it read. Before a message reaches a [`super::Problem`] it passes
//! through [`Redactor::clean`], which
//!
//! - replaces every secret value the loader has seen (secret-bearing keys in the file and the
//!   environment, the contents of `*_file` secrets, the password inside `database.url`) with
//!   `[redacted]`, and
//! - replaces the user-info part of anything shaped like a URL (`scheme://user:pass@host`), so a
//!   credential pasted into an endpoint never prints even when it was never recognised as one.
//!
//! A message written by another crate about a secret-bearing key (see [`is_secret_key`]) keeps
//! only its words: quoted values are dropped altogether, whatever they are
//! ([`Redactor::clean_foreign`]). Our own messages about secrets never quote their values.

/// The last segment of every key that holds a secret. `database.url` is one too (it may embed a
/// password), see [`is_secret_key`].
const SECRET_KEY_NAMES: &[&str] = &["client_secret", "password", "api_key", "token_key"];

/// What replaces a secret in a message.
pub(crate) const REDACTED: &str = "[redacted]";

/// Whether the dotted `key` (`sources.retarus.client_secret`) holds a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let last = key.rsplit('.').next().unwrap_or_default();
    SECRET_KEY_NAMES.contains(&last) || key == "database.url"
}

/// The secret values known so far; cleans messages of them.
#[derive(Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remembers `value` as a secret (and the parts a message might quote on their own: each
    /// line of it, and a URL's password).
    pub(crate) fn remember(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        if let Ok(url) = url::Url::parse(value) {
            if let Some(password) = url.password() {
                self.add(password.to_owned());
                if let Ok(decoded) = percent_decode(password) {
                    self.add(decoded);
                }
            }
            // A PostgreSQL URL may carry its password as a query option too (`?password=`).
            for (option, given) in url.query_pairs() {
                if option == "password" {
                    self.add(given.into_owned());
                }
            }
        }
        for line in value.lines() {
            self.add(line.trim().to_owned());
        }
        self.add(value.to_owned());
    }

    fn add(&mut self, secret: String) {
        if !secret.is_empty() && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
        }
    }

    /// Walks a layered configuration tree and remembers the value of every secret-bearing key.
    pub(crate) fn remember_tree(&mut self, value: &config::Value, path: &str) {
        match &value.kind {
            config::ValueKind::Table(table) => {
                for (key, child) in table {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.remember_tree(child, &path);
                }
            }
            config::ValueKind::Array(items) => {
                for item in items {
                    self.remember_tree(item, path);
                }
            }
            config::ValueKind::Nil => {}
            scalar if is_secret_key(path) => self.remember(&scalar.to_string()),
            _ => {}
        }
    }

    /// A message from another crate (serde, `config`, sqlx) as it may be shown for a problem at
    /// `key`: cleaned, and without any quoted text when `key` holds a secret.
    pub(crate) fn clean_foreign(&self, key: &str, message: &str) -> String {
        if is_secret_key(key) {
            self.clean(&drop_quoted(message))
        } else {
            self.clean(message)
        }
    }

    /// `message` without any remembered secret or URL user-info.
    pub(crate) fn clean(&self, message: &str) -> String {
        let mut message = message.to_owned();
        // Longest first, so a secret containing another is replaced whole.
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            message = replace_secret(&message, secret);
        }
        redact_userinfo(&message)
    }
}

/// Replaces `secret` in `message`. Very short secrets would shred ordinary words, so they are
/// replaced only where they stand quoted.
fn replace_secret(message: &str, secret: &str) -> String {
    if secret.chars().count() >= 4 {
        return message.replace(secret, REDACTED);
    }
    let mut message = message.to_owned();
    for (open, close) in [("`", "`"), ("\"", "\""), ("'", "'")] {
        message = message.replace(
            &format!("{open}{secret}{close}"),
            &format!("{open}{REDACTED}{close}"),
        );
    }
    message
}

/// `message` without anything between backticks or double quotes.
pub(crate) fn drop_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    for c in message.chars() {
        match quote {
            Some(open) if c == open => {
                out.push_str(REDACTED);
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '`' || c == '"' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        // An unclosed quote: everything after it was dropped; say so.
        out.push_str(REDACTED);
    }
    out
}

/// Replaces the user-info of every `scheme://user:pass@host` in `text` with `[redacted]`.
pub(crate) fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first of these; user-info is what precedes its last `@`.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '`' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str(REDACTED);
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// `%xx` escapes decoded (a URL's password as the user typed it); an error for bad UTF-8.
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_redacted_wherever_a_url_appears() {
        assert_eq!(
            redact_userinfo("`https://api:hunter2@host/x` and http://h/p@q"),
            "`https://[redacted]@host/x` and http://h/p@q"
        );
        assert_eq!(redact_userinfo("no url here"), "no url here");
    }

    #[test]
    fn a_remembered_secret_is_replaced_and_a_secret_key_keeps_no_quoted_value() {
        let mut redactor = Redactor::default();
        redactor.remember("postgres://etl:p%40ss-word@db/etl");
        let cleaned = redactor.clean("got p@ss-word and p%40ss-word");
        assert_eq!(cleaned, "got [redacted] and [redacted]");
        // A password given as a query option is as secret as one in the user-info.
        redactor.remember("postgres://etl@db/etl?sslmode=require&password=opt%2Dsecret");
        assert_eq!(redactor.clean("got opt-secret"), "got [redacted]");
        assert_eq!(
            redactor.clean_foreign(
                "sources.r.client_secret",
                "invalid type: string \"abc\", expected `x`"
            ),
            "invalid type: string \"[redacted]\", expected `[redacted]`"
        );
    }
}
