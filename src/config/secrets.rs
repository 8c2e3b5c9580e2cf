//! Secrets given inline or as `*_file`, and the token key's two spellings (hex or base64).

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// `security.token_key`: 32 bytes, written as 64 hex digits or as base64 (`openssl rand
/// -base64 32`). The cipher key is derived from the text by SHA-256 (see `auth::store`).
pub(crate) fn token_key_bytes(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    const HINT: &str = "must be 32 random bytes written as 64 hex digits or as base64 \
                        (e.g. the output of `openssl rand -base64 32`)";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is empty; it {HINT}"));
    }
    let decoded = if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .ok()
    };
    match decoded {
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("decodes to {} bytes, not 32; it {HINT}", bytes.len())),
        None => Err(format!("is neither hex nor base64; it {HINT}")),
    }
}

/// Fills `value` from `file` when given. Exactly one of the two may be set; `required` demands
/// one. An empty value is refused either way.
pub(super) fn resolve_secret(
    value: &mut Option<SecretString>,
    file: &Option<PathBuf>,
    required: bool,
) -> Result<(), String> {
    match (value.as_ref(), file) {
        (Some(_), Some(path)) => Err(format!(
            "is set both inline and as a file (`{}`); keep one",
            path.display()
        )),
        (None, Some(path)) => {
            let contents = read_secret_file(path)?;
            *value = Some(SecretString::from(contents));
            Ok(())
        }
        (Some(inline), None) if inline.expose_secret().trim().is_empty() => {
            Err("is empty; give the value, or `<key>_file` naming a file holding it".into())
        }
        (None, None) if required => Err("is missing (set it, or `<key>_file` to a file holding it)".into()),
        _ => Ok(()),
    }
}

/// A secret file's contents without the trailing newline. Errors name the file, never its text.
fn read_secret_file(path: &Path) -> Result<String, String> {
    if path.is_dir() {
        return Err(format!("secret file `{}` is a directory", path.display()));
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
    let contents = String::from_utf8(bytes).map_err(|e| {
        format!(
            "secret file `{}` is not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let trimmed = contents.trim_end_matches(['\n', '\r']);
    if trimmed.trim().is_empty() {
        return Err(format!("secret file `{}` is empty", path.display()));
    }
    Ok(trimmed.to_owned())
}
