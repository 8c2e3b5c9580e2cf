//! Hostile configurations as an operator meets them: each one goes through the real binary,
//! once with `check` and once with `run --once`, and must exit 2, name the offending key on
//! stderr, print none of the secrets planted in every secret-bearing key, URL, environment
//! variable and file, and never panic.
//!
//! Also here: invalid arguments exit 2, and a property test over every numeric and date key —
//! whatever value is given, loading either refuses it at its key or accepts a value that the
//! window and schedule arithmetic handles without a panic.

use crate::support;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use chrono::{Duration, Utc};
use proptest::prelude::*;
use reporting_etl::jobs::{schedule, window};

/// Secrets of [`BASE`], one in every secret-bearing key: no output may contain any of them.
const BASE_SECRETS: &[&str] = &[
    "pg-password-31337",
    "YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=",
    "retarus-secret-000123",
    "roubler-secret-xyz",
    "altrata-password-777",
    "altrata-api-key-888",
    "retently-api-key-999",
    "retently-oauth-secret-42",
];

/// A valid configuration with a secret in every secret-bearing key. The database is never
/// reached: every case must stop before anything runs.
const BASE: &str = r#"
[database]
url = "postgres://etl:pg-password-31337@127.0.0.1:1/etl"
pool_size = 4
data_dir = ".reporting-etl/pg"

[server]
listen = "127.0.0.1:9187"
shutdown_grace_secs = 30

[log]
level = "info"

[security]
token_key = "YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ="

[rate_budget]
fallback_share = 0.5

[sources.retarus]
kind = "retarus"
client_id = "client-1"
client_secret = "retarus-secret-000123"
customer_ids = ["99999"]
rate_limit = { calls = 5, per_ms = 1000 }

[sources.roubler]
kind = "roubler"
graphql_url = "https://graphql.au.roubler.com/graphql"
client_id = "roubler-client"
client_secret = "roubler-secret-xyz"

[sources.altrata]
kind = "altrata"
username = "svc"
password = "altrata-password-777"
api_key = "altrata-api-key-888"

[sources.retently]
kind = "retently"
api_key = "retently-api-key-999"

[sources.retently_oauth]
kind = "retently"
client_id = "retently-client"
client_secret = "retently-oauth-secret-42"

[jobs.fax]
source = "retarus"
dataset = "fax_out_udr"
schedule = "0 */15 * * * *"
time_zone = "Europe/Berlin"
lookback_minutes = 60
start = "2026-01-01"
enabled = true

[jobs.sales]
source = "roubler"
dataset = "location_sales"
schedule = "0 30 2 * * *"
window = "trailing"
trailing_days = 7
"#;

/// One hostile configuration.
struct Hostile {
    name: &'static str,
    /// The configuration file's bytes (not necessarily UTF-8).
    file: Vec<u8>,
    /// Environment variables set for the binary (values not necessarily UTF-8).
    env: Vec<(&'static str, OsString)>,
    /// `--config` names this instead of the file (a directory, a missing path).
    config_path: Option<PathBuf>,
    /// stderr must name this key.
    key: &'static str,
    /// …and say this.
    says: &'static str,
    /// Secrets this case plants beyond [`BASE_SECRETS`].
    secrets: Vec<String>,
}

/// [`BASE`] with `from` (which must be there) replaced by `to`.
fn edit(from: &str, to: &str) -> Vec<u8> {
    assert!(BASE.contains(from), "the base has no `{from}`");
    BASE.replacen(from, to, 1).into_bytes()
}

/// [`BASE`] with `from` replaced by raw bytes.
fn edit_bytes(from: &str, to: &[u8]) -> Vec<u8> {
    let at = BASE
        .find(from)
        .unwrap_or_else(|| panic!("the base has no `{from}`"));
    [&BASE.as_bytes()[..at], to, &BASE.as_bytes()[at + from.len()..]].concat()
}

fn hostile(name: &'static str, file: Vec<u8>, key: &'static str, says: &'static str) -> Hostile {
    Hostile {
        name,
        file,
        env: Vec::new(),
        config_path: None,
        key,
        says,
        secrets: Vec::new(),
    }
}

impl Hostile {
    fn planting(mut self, secrets: &[&str]) -> Self {
        self.secrets.extend(secrets.iter().map(|s| s.to_string()));
        self
    }

    fn with_env(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.env.push((name, OsString::from_vec(value.into())));
        self
    }

    fn at_path(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }
}

/// A file holding `contents`, kept alive by `keep`.
fn file_with(keep: &mut Vec<tempfile::NamedTempFile>, contents: &[u8]) -> String {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents).unwrap();
    let path = file.path().display().to_string();
    keep.push(file);
    path
}

fn hostile_cases(keep: &mut Vec<tempfile::NamedTempFile>, dir: &std::path::Path) -> Vec<Hostile> {
    let url_file_password = file_with(keep, b"file-password-4\n");
    let url_file_colon = file_with(keep, b"pass:word-secret-5\n");
    let non_utf8_secret = file_with(keep, b"file-secret-51\xff\xfe\n");
    let empty = file_with(keep, b"\n");
    let other_key = file_with(keep, b"altrata-api-key-from-file-54\n");
    let dir_path = dir.display().to_string();
    let in_two_days = (Utc::now().date_naive() + Duration::days(2)).to_string();
    let fax_start = "start = \"2026-01-01\"";
    let share = "fallback_share = 0.5";
    let retarus_limit = "rate_limit = { calls = 5, per_ms = 1000 }";
    vec![
        // --- Secrets the issue saw printed.
        hostile(
            "a GraphQL URL with user-info",
            edit(
                "https://graphql.au.roubler.com/graphql",
                "https://apiuser:url-password-1@graphql.au.roubler.com/graphql",
            ),
            "sources.roubler.graphql_url",
            "credentials",
        )
        .planting(&["url-password-1"]),
        hostile(
            "an http token URL with user-info and no allow_http",
            edit(
                "client_id = \"client-1\"",
                "client_id = \"client-1\"\ntoken_url = \"http://apiuser:url-password-2@auth.example.com/token\"",
            ),
            "sources.retarus.token_url",
            "credentials",
        )
        .planting(&["url-password-2"]),
        hostile(
            "a client secret in the environment that is not UTF-8",
            BASE.into(),
            "sources.retarus.client_secret",
            "not UTF-8",
        )
        .with_env(
            "REPORTING_ETL__SOURCES__RETARUS__CLIENT_SECRET",
            b"env-secret-3-\xff-tail".to_vec(),
        )
        .planting(&["env-secret-3", "tail"]),
        hostile(
            "a database URL file holding a bare password",
            edit(
                "url = \"postgres://etl:pg-password-31337@127.0.0.1:1/etl\"",
                &format!("url_file = \"{url_file_password}\""),
            ),
            "database.url",
            "postgres://",
        )
        .planting(&["file-password-4"]),
        hostile(
            "a database URL file holding a password with a colon",
            edit(
                "url = \"postgres://etl:pg-password-31337@127.0.0.1:1/etl\"",
                &format!("url_file = \"{url_file_colon}\""),
            ),
            "database.url",
            "postgres://",
        )
        .planting(&["pass:word-secret-5", "word-secret-5", "`pass`"]),
        // --- Values the issue saw accepted.
        hostile(
            "an empty Retarus client id",
            edit("client_id = \"client-1\"", "client_id = \"\""),
            "sources.retarus.client_id",
            "empty",
        ),
        hostile(
            "a blank Roubler client id",
            edit("client_id = \"roubler-client\"", "client_id = \"   \""),
            "sources.roubler.client_id",
            "empty",
        ),
        hostile(
            "an empty Altrata username",
            edit("username = \"svc\"", "username = \"\""),
            "sources.altrata.username",
            "empty",
        ),
        hostile(
            "an empty Retently OAuth client id",
            edit("client_id = \"retently-client\"", "client_id = \"\""),
            "sources.retently_oauth.client_id",
            "empty",
        ),
        hostile(
            "a database URL with a port out of range",
            edit("127.0.0.1:1/etl", "127.0.0.1:99999/etl"),
            "database.url",
            "port",
        ),
        hostile(
            "a database URL with a port that is text",
            edit("127.0.0.1:1/etl", "127.0.0.1:fivefour/etl"),
            "database.url",
            "port",
        ),
        hostile(
            "a TOML file with bytes that are not UTF-8",
            edit_bytes("client_id = \"client-1\"", b"client_id = \"client-\xff\xfe1\""),
            "sources.retarus.client_id",
            "is not UTF-8",
        ),
        hostile(
            "a TOML file with a secret that is not UTF-8",
            edit_bytes(
                "client_secret = \"retarus-secret-000123\"",
                b"client_secret = \"toml-secret-12\xc3\x28rest\"",
            ),
            "sources.retarus.client_secret",
            "byte",
        )
        .planting(&["toml-secret-12", "rest\""]),
        hostile(
            "a schedule on February 30th",
            edit("0 */15 * * * *", "0 0 0 30 2 *"),
            "jobs.fax.schedule",
            "never fires",
        ),
        hostile(
            "a schedule in a year gone by",
            edit("0 */15 * * * *", "0 0 0 1 1 * 2020"),
            "jobs.fax.schedule",
            "never fires",
        ),
        hostile(
            "an empty token key",
            edit("token_key = \"YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=\"", "token_key = \"\""),
            "security.token_key",
            "is empty",
        ),
        hostile(
            "a short token key",
            edit(
                "token_key = \"YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=\"",
                "token_key = \"short-key-17\"",
            ),
            "security.token_key",
            "32",
        )
        .planting(&["short-key-17"]),
        hostile(
            "a hex token key of 31 bytes",
            edit(
                "token_key = \"YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=\"",
                "token_key = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddee\"",
            ),
            "security.token_key",
            "31 bytes",
        )
        .planting(&["00112233445566778899aabbccddeeff00112233445566778899aabbccddee"]),
        hostile(
            "a base64 token key of 16 bytes",
            edit(
                "token_key = \"YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=\"",
                "token_key = \"MDEyMzQ1Njc4OWFiY2RlZg==\"",
            ),
            "security.token_key",
            "16 bytes",
        )
        .planting(&["MDEyMzQ1Njc4OWFiY2RlZg=="]),
        hostile(
            "an empty token key file",
            edit(
                "token_key = \"YmFzZS10b2tlbi1rZXktc2VjcmV0LTQ3MTEtMzJieXQ=\"",
                &format!("token_key_file = \"{empty}\""),
            ),
            "security.token_key",
            "empty",
        ),
        hostile(
            "allow_http written as \"yes\"",
            edit("kind = \"retarus\"", "kind = \"retarus\"\nallow_http = \"yes\""),
            "sources.retarus.allow_http",
            "`yes` is not a boolean",
        ),
        hostile(
            "allow_http written as 1",
            edit("kind = \"roubler\"", "kind = \"roubler\"\nallow_http = 1"),
            "sources.roubler.allow_http",
            "not a boolean",
        ),
        hostile(
            "enabled written as \"no\"",
            edit("enabled = true", "enabled = \"no\""),
            "jobs.fax.enabled",
            "`no` is not a boolean",
        ),
        hostile(
            "allow_http set to \"on\" in the environment",
            BASE.into(),
            "sources.roubler.allow_http",
            "`on` is not a boolean",
        )
        .with_env("REPORTING_ETL__SOURCES__ROUBLER__ALLOW_HTTP", "on"),
        hostile(
            "enabled set to \"yes\" in the environment",
            BASE.into(),
            "jobs.fax.enabled",
            "`yes` is not a boolean",
        )
        .with_env("REPORTING_ETL__JOBS__FAX__ENABLED", "yes"),
        hostile(
            "a start on the last day of 9999",
            edit(fax_start, "start = 9999-12-31"),
            "jobs.fax.start",
            "`9999-12-31` is out of range",
        ),
        hostile(
            "a start in 1900",
            edit(fax_start, "start = \"1900-01-01\""),
            "jobs.fax.start",
            "out of range",
        ),
        hostile(
            "a start the day after tomorrow",
            edit(fax_start, &format!("start = \"{in_two_days}\"")),
            "jobs.fax.start",
            "out of range",
        ),
        hostile(
            "a start set to year 9999 in the environment",
            BASE.into(),
            "jobs.fax.start",
            "out of range",
        )
        .with_env("REPORTING_ETL__JOBS__FAX__START", "9999-12-31"),
        hostile(
            "a start that is not a date",
            edit(fax_start, "start = \"2026-02-30\""),
            "jobs.fax.start",
            "`2026-02-30` is not a date",
        ),
        hostile(
            "a trailing window of a hundred million days",
            edit("trailing_days = 7", "trailing_days = 100000000"),
            "jobs.sales.trailing_days",
            "`100000000` is out of range",
        ),
        hostile(
            "a trailing window of a hundred million days from the environment",
            BASE.into(),
            "jobs.sales.trailing_days",
            "out of range",
        )
        .with_env("REPORTING_ETL__JOBS__SALES__TRAILING_DAYS", "100000000"),
        hostile(
            "a trailing window of zero days",
            edit("trailing_days = 7", "trailing_days = 0"),
            "jobs.sales.trailing_days",
            "`0` is out of range",
        ),
        hostile(
            "a window deadline of zero seconds",
            edit("lookback_minutes = 60", "lookback_minutes = 60\nwindow_deadline_secs = 0"),
            "jobs.fax.window_deadline_secs",
            "`0` is out of range; use 1 to 86400 seconds",
        ),
        hostile(
            "a window deadline beyond a day",
            BASE.into(),
            "jobs.fax.window_deadline_secs",
            "`86401` is out of range; use 1 to 86400 seconds",
        )
        .with_env("REPORTING_ETL__JOBS__FAX__WINDOW_DEADLINE_SECS", "86401"),
        hostile(
            "a discovery TTL beyond a week",
            edit(
                "client_secret = \"roubler-secret-xyz\"",
                "client_secret = \"roubler-secret-xyz\"\ndiscovery_ttl_secs = 999999999",
            ),
            "sources.roubler.discovery_ttl_secs",
            "`999999999` is out of range; use 0 to 604800 seconds",
        ),
        hostile(
            "the largest lookback a u32 holds",
            edit("lookback_minutes = 60", "lookback_minutes = 4294967295"),
            "jobs.fax.lookback_minutes",
            "out of range",
        ),
        hostile(
            "a lookback beyond a u32",
            edit("lookback_minutes = 60", "lookback_minutes = 99999999999"),
            "jobs.fax.lookback_minutes",
            "99999999999",
        ),
        hostile(
            "a pool size beyond a 64-bit integer",
            edit("pool_size = 4", "pool_size = 99999999999999999999"),
            "database.pool_size",
            "line",
        ),
        hostile(
            "a pool size beyond a 64-bit integer from the environment",
            BASE.into(),
            "database.pool_size",
            "",
        )
        .with_env("REPORTING_ETL__DATABASE__POOL_SIZE", "99999999999999999999"),
        hostile(
            "a pool size of a hundred thousand",
            edit("pool_size = 4", "pool_size = 100000"),
            "database.pool_size",
            "out of range",
        ),
        hostile(
            "a grace period of u64::MAX seconds",
            edit("shutdown_grace_secs = 30", "shutdown_grace_secs = 18446744073709551615"),
            "server.shutdown_grace_secs",
            "",
        ),
        hostile(
            "a grace period of thirty years",
            edit("shutdown_grace_secs = 30", "shutdown_grace_secs = 999999999"),
            "server.shutdown_grace_secs",
            "out of range",
        ),
        hostile(
            "a rate-limit period of zero",
            edit(retarus_limit, "rate_limit = { calls = 5, per_ms = 0 }"),
            "sources.retarus.rate_limit.per_ms",
            "`0` is out of range",
        ),
        hostile(
            "a rate limit of more calls than a u32 holds",
            edit(retarus_limit, "rate_limit = { calls = 4294967296, per_ms = 1000 }"),
            "sources.retarus.rate_limit.calls",
            "4294967296",
        ),
        hostile(
            "a rate-limit period of three hundred years",
            edit(retarus_limit, "rate_limit = { calls = 5, per_ms = 10000000000000 }"),
            "sources.retarus.rate_limit.per_ms",
            "out of range",
        ),
        hostile(
            "a fallback share of zero",
            edit(share, "fallback_share = 0.0"),
            "rate_budget.fallback_share",
            "share",
        ),
        hostile(
            "a fallback share that is not a number",
            edit(share, "fallback_share = nan"),
            "rate_budget.fallback_share",
            "NaN",
        ),
        hostile(
            "a fallback share in words",
            edit(share, "fallback_share = \"half\""),
            "rate_budget.fallback_share",
            "half",
        ),
        // --- Unclear before: the file itself.
        hostile("a directory as --config", BASE.into(), "--config", "is a directory")
            .at_path(dir.to_path_buf())
            .planting(&[]),
        hostile("a missing --config", BASE.into(), "--config", "does not exist")
            .at_path(PathBuf::from(format!("{dir_path}/missing/etl.toml"))),
        // --- Secrets in keys, files and the environment.
        hostile(
            "an empty client secret",
            edit("client_secret = \"retarus-secret-000123\"", "client_secret = \"\""),
            "sources.retarus.client_secret",
            "empty",
        ),
        hostile(
            "a blank Altrata password",
            edit("password = \"altrata-password-777\"", "password = \"   \""),
            "sources.altrata.password",
            "empty",
        ),
        hostile(
            "an API key given as a list",
            edit("api_key = \"altrata-api-key-888\"", "api_key = [\"array-secret-47\"]"),
            "sources.altrata.api_key",
            "",
        )
        .planting(&["array-secret-47"]),
        hostile(
            "a client secret given as a table",
            edit("client_secret = \"roubler-secret-xyz\"", "client_secret = { v = \"table-secret-48\" }"),
            "sources.roubler.client_secret",
            "",
        )
        .planting(&["table-secret-48"]),
        hostile(
            "a client secret with no closing quote",
            edit(
                "client_secret = \"retarus-secret-000123\"",
                "client_secret = \"unterminated-secret-49",
            ),
            "sources.retarus.client_secret",
            "not valid TOML at line",
        )
        .planting(&["unterminated-secret-49"]),
        hostile(
            "a client secret given twice",
            edit(
                "client_secret = \"retarus-secret-000123\"",
                "client_secret = \"retarus-secret-000123\"\nclient_secret = \"duplicate-secret-50\"",
            ),
            "sources.retarus.client_secret",
            "not valid TOML",
        )
        .planting(&["duplicate-secret-50"]),
        hostile(
            "a client secret file that is not UTF-8",
            edit(
                "client_secret = \"retarus-secret-000123\"",
                &format!("client_secret_file = \"{non_utf8_secret}\""),
            ),
            "sources.retarus.client_secret",
            "not UTF-8",
        )
        .planting(&["file-secret-51"]),
        hostile(
            "a client secret file that is a directory",
            edit(
                "client_secret = \"roubler-secret-xyz\"",
                &format!("client_secret_file = \"{dir_path}\""),
            ),
            "sources.roubler.client_secret",
            "directory",
        ),
        hostile(
            "a password file that does not exist",
            edit(
                "password = \"altrata-password-777\"",
                &format!("password_file = \"{dir_path}/no-such-password\""),
            ),
            "sources.altrata.password",
            "no-such-password",
        ),
        hostile(
            "an API key both inline and as a file",
            edit(
                "api_key = \"altrata-api-key-888\"",
                &format!("api_key = \"altrata-api-key-888\"\napi_key_file = \"{other_key}\""),
            ),
            "sources.altrata.api_key",
            "both",
        )
        .planting(&["altrata-api-key-from-file-54"]),
        hostile(
            "a token key in the environment that is not UTF-8",
            BASE.into(),
            "security.token_key",
            "not UTF-8",
        )
        .with_env("REPORTING_ETL__SECURITY__TOKEN_KEY", b"env-token-55\x80\x80".to_vec())
        .planting(&["env-token-55"]),
        hostile(
            "a database URL in the environment that is not UTF-8",
            BASE.into(),
            "database.url",
            "not UTF-8",
        )
        .with_env(
            "REPORTING_ETL__DATABASE__URL",
            b"postgres://etl:env-db-password-56\xff@db/etl".to_vec(),
        )
        .planting(&["env-db-password-56"]),
        hostile(
            "a token key in the environment that is too short",
            BASE.into(),
            "security.token_key",
            "32",
        )
        .with_env("REPORTING_ETL__SECURITY__TOKEN_KEY", "env-token-57")
        .planting(&["env-token-57"]),
        hostile(
            "an endpoint with user-info in the environment",
            BASE.into(),
            "sources.altrata.token_url",
            "credentials",
        )
        .with_env(
            "REPORTING_ETL__SOURCES__ALTRATA__TOKEN_URL",
            "https://svc:env-url-password-58@auth.example.com/token",
        )
        .planting(&["env-url-password-58"]),
        hostile(
            "a MySQL database URL with a password",
            edit(
                "postgres://etl:pg-password-31337@127.0.0.1:1/etl",
                "mysql://etl:mysql-password-59@db.example.com/etl",
            ),
            "database.url",
            "mysql",
        )
        .planting(&["mysql-password-59"]),
        hostile(
            "a database URL that is a sentence",
            edit(
                "postgres://etl:pg-password-31337@127.0.0.1:1/etl",
                "the password is sentence-secret-60",
            ),
            "database.url",
            "not a postgres:// URL",
        )
        .planting(&["sentence-secret-60"]),
        // The URL is a secret, its options are not: name the option and the value, never the
        // password (in the user-info or a `password` option) nor an unknown option's value.
        hostile(
            "a database URL with an unknown sslmode",
            edit("127.0.0.1:1/etl", "127.0.0.1:1/etl?sslmode=sometimes"),
            "database.url",
            "has the query option sslmode = `sometimes`, which is not valid; use one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        hostile(
            "a database URL with a bogus sslmode and its password as an option",
            edit(
                "etl:pg-password-31337@127.0.0.1:1/etl",
                "etl@127.0.0.1:1/etl?password=query-password-67&sslmode=bogus",
            ),
            "database.url",
            "sslmode = `bogus`",
        )
        .planting(&["query-password-67"]),
        hostile(
            "a database URL with a port option that is not a number",
            edit("127.0.0.1:1/etl", "127.0.0.1:1/etl?port=eighty"),
            "database.url",
            "port = `eighty`, which is not valid; use a port number, 1 to 65535",
        ),
        hostile(
            "a database URL with a hostaddr that is a name",
            edit("127.0.0.1:1/etl", "127.0.0.1:1/etl?hostaddr=db.example.com"),
            "database.url",
            "hostaddr = `db.example.com`, which is not valid; use an IP address",
        ),
        hostile(
            "a database URL with a statement cache capacity below zero",
            edit("127.0.0.1:1/etl", "127.0.0.1:1/etl?statement-cache-capacity=-1"),
            "database.url",
            "statement-cache-capacity = `-1`",
        ),
        hostile(
            "a database URL with a misspelt password option",
            edit(
                "etl:pg-password-31337@127.0.0.1:1/etl",
                "etl@127.0.0.1:1/etl?passwrd=misspelt-password-68",
            ),
            "database.url",
            "has the query option `passwrd`, which the PostgreSQL driver does not know",
        )
        .planting(&["misspelt-password-68"]),
        hostile(
            "a database URL of https with a password",
            edit(
                "postgres://etl:pg-password-31337@127.0.0.1:1/etl",
                "https://etl:https-password-62@db.example.com/etl",
            ),
            "database.url",
            "got scheme https",
        )
        .planting(&["https-password-62"]),
        hostile(
            "an endpoint with only a user name",
            edit(
                "username = \"svc\"",
                "username = \"svc\"\nevents_url = \"https://user-name-63@events.example.com/v1/graphql\"",
            ),
            "sources.altrata.events_url",
            "credentials",
        )
        .planting(&["user-name-63"]),
        hostile(
            "a redirect URI with credentials",
            edit(
                "client_id = \"roubler-client\"",
                "client_id = \"roubler-client\"\nredirect_uri = \"http://me:redirect-password-64@127.0.0.1:8788/callback\"",
            ),
            "sources.roubler.redirect_uri",
            "credentials",
        )
        .planting(&["redirect-password-64"]),
        hostile(
            "an unparsable URL with a password",
            edit(
                "api_key = \"retently-api-key-999\"",
                "api_key = \"retently-api-key-999\"\nbase_url = \"https://u:broken-password-65@[::1\"",
            ),
            "sources.retently.base_url",
            "not a valid URL",
        )
        .planting(&["broken-password-65"]),
        hostile(
            "a secret under a misspelt key",
            edit(
                "client_secret = \"retarus-secret-000123\"",
                "client_secret = \"retarus-secret-000123\"\nclient_secrett = \"typo-secret-66\"",
            ),
            "sources.retarus.client_secrett",
            "unknown field",
        )
        .planting(&["typo-secret-66"]),
        // --- Other shapes.
        hostile(
            "customer ids that are all blank",
            edit("customer_ids = [\"99999\"]", "customer_ids = [\"\", \" \"]"),
            "sources.retarus.customer_ids",
            "empty",
        ),
        hostile(
            "an empty log level",
            edit("level = \"info\"", "level = \"\""),
            "log.level",
            "empty",
        ),
        hostile(
            "an empty data directory",
            edit("data_dir = \".reporting-etl/pg\"", "data_dir = \"\""),
            "database.data_dir",
            "empty",
        ),
        hostile(
            "a listen port out of range",
            edit("listen = \"127.0.0.1:9187\"", "listen = \"127.0.0.1:99999\""),
            "server.listen",
            "127.0.0.1:99999",
        ),
        hostile(
            "a five-field schedule",
            edit("0 */15 * * * *", "*/15 * * * *"),
            "jobs.fax.schedule",
            "6",
        ),
        hostile(
            "a time zone that is an offset",
            edit("Europe/Berlin", "+02:00"),
            "jobs.fax.time_zone",
            "`+02:00`",
        ),
    ]
}

/// Every planted secret this case could print.
fn secrets_of(case: &Hostile) -> Vec<String> {
    BASE_SECRETS
        .iter()
        .map(|s| s.to_string())
        .chain(case.secrets.iter().cloned())
        .collect()
}

/// Runs the binary with `args` on the case's configuration: (exit code, stdout + stderr, stderr).
fn run(case: &Hostile, config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = support::binary();
    command.args(args).arg("--config").arg(config);
    for (name, value) in &case.env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), format!("{stdout}{stderr}"), stderr)
}

#[test]
fn the_base_of_the_hostile_cases_is_valid_and_check_prints_none_of_its_secrets() {
    let mut keep = Vec::new();
    let path = file_with(&mut keep, BASE.as_bytes());
    let base = Hostile {
        name: "base",
        file: Vec::new(),
        env: Vec::new(),
        config_path: None,
        key: "",
        says: "",
        secrets: Vec::new(),
    };
    let (code, all, _) = run(&base, std::path::Path::new(&path), &["check"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("Configuration is valid.") && all.contains("retently_oauth"),
        "{all}"
    );
    for secret in BASE_SECRETS {
        assert!(!all.contains(secret), "`{secret}` printed:\n{all}");
    }
}

#[test]
fn every_hostile_configuration_exits_2_naming_its_key_without_a_secret_or_a_panic() {
    let mut keep = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let cases = hostile_cases(&mut keep, dir.path());
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let path = match &case.config_path {
            Some(path) => path.clone(),
            None => PathBuf::from(file_with(&mut keep, &case.file)),
        };
        for args in [&["check"][..], &["run", "--once"][..]] {
            let (code, all, stderr) = run(case, &path, args);
            let what = format!("{} ({})", case.name, args.join(" "));
            if all.contains("panicked") || code == Some(101) {
                failures.push(format!("{what}: panicked:\n{all}"));
            }
            if code != Some(2) {
                failures.push(format!("{what}: exit code {code:?}, not 2:\n{all}"));
            }
            if !stderr.contains(&format!("{}:", case.key)) && !stderr.contains(&format!("{} ", case.key)) {
                failures.push(format!("{what}: does not name `{}`:\n{stderr}", case.key));
            }
            if !stderr.contains(case.says) {
                failures.push(format!("{what}: does not say `{}`:\n{stderr}", case.says));
            }
            for secret in secrets_of(case) {
                if all.contains(&secret) {
                    failures.push(format!("{what}: printed the secret `{secret}`:\n{all}"));
                }
            }
        }
    }
    eprintln!(
        "{} hostile configurations, each run with `check` and `run --once`",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures over {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `run --once` with arguments that cannot be acted on: exit 2 before anything runs (the
/// database of [`BASE`] does not exist, so reaching it would exit 1).
#[test]
fn invalid_arguments_exit_2_before_anything_runs() {
    let mut keep = Vec::new();
    let path = file_with(&mut keep, BASE.as_bytes());
    for (args, says) in [
        ("run --once --job nosuch", "--job nosuch: no such job"),
        (
            "run --once --job fax --from 2026-03-01 --to 2026-02-01",
            "must be before",
        ),
        (
            "run --once --job fax --from 2026-03-01 --to 2026-03-01",
            "must be before",
        ),
        ("run --once --from 2026-03-31 --to 2026-02-30", "2026-02-30"),
        ("runs --limit 0", "0"),
    ] {
        let output = support::binary()
            .args(args.split_whitespace())
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        for secret in BASE_SECRETS {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    }
}

/// A numeric or date key and a TOML literal for it, drawn from every magnitude and sign.
fn numeric_or_date_value() -> impl Strategy<Value = (&'static str, String)> {
    let key = prop::sample::select(vec![
        "database.pool_size",
        "server.shutdown_grace_secs",
        "rate_budget.fallback_share",
        "sources.retarus.rate_limit.calls",
        "sources.retarus.rate_limit.per_ms",
        "jobs.fax.lookback_minutes",
        "jobs.fax.start",
        "jobs.sales.trailing_days",
    ]);
    let literal = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..=10_000).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        "[0-9]{19,26}".prop_map(|digits| digits.trim_start_matches('0').to_owned() + "0"),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop_oneof![Just("nan"), Just("inf"), Just("-inf"), Just("-0.0")].prop_map(str::to_owned),
        (-300_000i32..300_000, 1u32..=12, 1u32..=31)
            .prop_map(|(y, m, d)| format!("\"{y:04}-{m:02}-{d:02}\"")),
        (0i32..=9999, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        // Any printable text as a well-formed TOML string (`"` and `\` escaped): a value of the
        // wrong type, not broken TOML, which has no key to name.
        "[ -~]{0,12}".prop_map(|text| format!("{text:?}")),
    ];
    (key, literal)
}

/// [`BASE`] with `key` set to `literal` (keys live in the table of their prefix).
fn with_value(key: &str, literal: &str) -> String {
    let (table, field) = key.rsplit_once('.').unwrap();
    let (header, line) = match table {
        "sources.retarus.rate_limit" => (
            "[sources.retarus]".to_owned(),
            format!("rate_limit.{field} = {literal}"),
        ),
        _ => (format!("[{table}]"), format!("{field} = {literal}")),
    };
    let mut text = String::new();
    let mut in_table = false;
    for existing in BASE.lines() {
        let trimmed = existing.trim();
        if trimmed.starts_with('[') {
            in_table = trimmed == header;
            text.push_str(existing);
            text.push('\n');
            if in_table {
                text.push_str(&line);
                text.push('\n');
            }
            continue;
        }
        let existing_key = trimmed.split('=').next().unwrap_or_default().trim();
        let replaced = in_table
            && (existing_key == field || (table.ends_with("rate_limit") && existing_key == "rate_limit"));
        if !replaced {
            text.push_str(existing);
            text.push('\n');
        }
    }
    if table.ends_with("rate_limit") {
        // The other half of the rate limit, so only the drawn value can be wrong.
        let other = if field == "calls" {
            "per_ms = 1000"
        } else {
            "calls = 5"
        };
        text = text.replacen(&line, &format!("{line}\nrate_limit.{other}"), 1);
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No numeric or date value panics: loading refuses it at its key, or the loaded job's
    /// windows and next fire time compute without overflow.
    #[test]
    fn no_numeric_or_date_value_panics((key, literal) in numeric_or_date_value()) {
        let text = with_value(key, &literal);
        let outcome = std::panic::catch_unwind(|| {
            let settings = match reporting_etl::app::settings_from_toml(&text) {
                Err(error) => return Err(error),
                Ok(settings) => settings,
            };
            let now = Utc::now();
            for job in settings.jobs.values() {
                let dataset = job.dataset.info();
                for mark in [None, Some(now), Some(now - Duration::days(3650)), Some(chrono::DateTime::<Utc>::MIN_UTC)] {
                    // Daily datasets end at the next UTC midnight; others a few minutes ago.
                    if let Some((start, end)) = window::run_range(job, dataset, mark, now) {
                        assert!(start < end && end <= now + Duration::days(1), "{start} → {end}");
                    }
                }
                assert!(schedule::next_fire(&job.schedule, job.time_zone, now).is_some());
            }
            Ok(settings)
        });
        match outcome {
            Err(_) => prop_assert!(false, "panicked on {key} = {literal}"),
            Ok(Err(error)) => {
                let text = error.to_string();
                prop_assert!(
                    error.problems.iter().any(|p| p.key.starts_with(key) || key.starts_with(&p.key)),
                    "{key} = {literal} refused without naming the key:\n{text}"
                );
                for secret in BASE_SECRETS {
                    prop_assert!(!text.contains(secret), "{text}");
                }
            }
            Ok(Ok(_)) => {}
        }
    }
}
