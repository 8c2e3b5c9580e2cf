//! Reading the raw inputs of the configuration — the file's bytes and the process environment —
//! before the `config` crate sees them, so that what it would report badly is reported here:
//! a directory given as the file, bytes that are not UTF-8 (named by file and byte offset, not
//! silently replaced), TOML syntax errors (named by line and key, never quoting the line, which
//! may hold a secret), and environment values that are not UTF-8 (named by variable, never
//! echoing the value).

use std::collections::HashMap;
use std::path::Path;

use super::redact::{drop_quoted, is_secret_key};
use super::{ENV_PREFIX, Problem};

/// The configuration file's text; `Ok(None)` when an optional file is absent.
pub(crate) fn read_file(path: &Path, required: bool) -> Result<Option<String>, Problem> {
    let problem = |message: String| Problem {
        key: "--config".into(),
        message,
    };
    if !path.exists() {
        return if required {
            Err(problem(format!("`{}` does not exist", path.display())))
        } else {
            Ok(None)
        };
    }
    if path.is_dir() {
        return Err(problem(format!(
            "`{}` is a directory; name the configuration file in it",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| problem(format!("cannot read `{}`: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
        let line = valid.matches('\n').count() + 1;
        Problem {
            key: key_at_line(&valid, line).unwrap_or_else(|| "(file)".into()),
            message: format!(
                "byte {offset} (line {line}) of `{}` is not UTF-8; the file must be UTF-8 text",
                path.display()
            ),
        }
    })?;
    Ok(Some(text))
}

/// Checks TOML syntax. The parser's own message quotes the offending line, which may be a
/// secret's: keep only its description, and name the key at that line instead.
pub(crate) fn check_toml(text: &str) -> Result<(), Problem> {
    let Err(error) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    let key = key_at_line(text, line).unwrap_or_else(|| "(file)".into());
    let mut description = error.message().trim().replace('\n', "; ");
    if is_secret_key(&key) {
        description = drop_quoted(&description);
    }
    Err(Problem {
        message: format!("not valid TOML at line {line}, column {column}: {description}"),
        key,
    })
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The dotted key written at `line` (1-based) of a TOML text: the table header in force there
/// plus the key before `=` on that line, as a person would look for it. `None` when the line
/// holds neither.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    let mut key = None;
    for (index, content) in text.lines().enumerate().take(line) {
        let content = content.trim();
        if let Some(header) = content.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let end = header.find(']').unwrap_or(header.len());
            table = unquote_key(&header[..end]);
            key = (index + 1 == line).then(|| table.clone());
        } else if index + 1 == line {
            key = content
                .split_once('=')
                .map(|(name, _)| unquote_key(name))
                .filter(|name| !name.is_empty())
                .map(|name| {
                    if table.is_empty() {
                        name
                    } else {
                        format!("{table}.{name}")
                    }
                });
        }
    }
    key.filter(|key| !key.is_empty())
}

/// `sources."Retarus EU" . x` → `sources.Retarus EU.x`
fn unquote_key(key: &str) -> String {
    key.split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']))
        .collect::<Vec<_>>()
        .join(".")
}

/// The `REPORTING_ETL__…` variables of the process. One whose value is not UTF-8 is a problem at
/// the key it would set — the config crate would echo the value, which is usually a secret.
pub(crate) fn process_environment() -> Result<HashMap<String, String>, Vec<Problem>> {
    let prefix = format!("{ENV_PREFIX}__");
    let mut variables = HashMap::new();
    let mut problems = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.to_ascii_uppercase().starts_with(&prefix) {
            continue;
        }
        match value.into_string() {
            Ok(value) => {
                variables.insert(name.to_owned(), value);
            }
            Err(value) => {
                let offset = String::from_utf8(value.into_encoded_bytes())
                    .err()
                    .map_or(0, |e| e.utf8_error().valid_up_to());
                problems.push(Problem {
                    key: env_key(name, &prefix),
                    message: format!("environment variable {name} is not UTF-8 (byte {offset} of its value)"),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(variables)
    } else {
        Err(problems)
    }
}

/// `REPORTING_ETL__SOURCES__RETARUS__CLIENT_SECRET` → `sources.retarus.client_secret`
fn env_key(name: &str, prefix: &str) -> String {
    name[prefix.len()..].to_ascii_lowercase().replace("__", ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_at_a_line_follows_the_table_header() {
        let text = "[database]\npool_size = 4\n\n[sources.\"a b\"]\nclient_secret = \"x\n";
        assert_eq!(key_at_line(text, 2).as_deref(), Some("database.pool_size"));
        assert_eq!(key_at_line(text, 4).as_deref(), Some("sources.a b"));
        assert_eq!(key_at_line(text, 5).as_deref(), Some("sources.a b.client_secret"));
        assert_eq!(key_at_line(text, 3), None);
    }

    #[test]
    fn a_syntax_error_names_line_and_key_but_never_quotes_the_line() {
        let problem = check_toml("[security]\ntoken_key = \"unterminated-s3cret\n").unwrap_err();
        assert_eq!(problem.key, "security.token_key");
        assert!(problem.message.contains("line 2"), "{}", problem.message);
        assert!(!problem.message.contains("s3cret"), "{}", problem.message);
    }
}
