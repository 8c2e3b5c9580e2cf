//! Configuration: a TOML file layered under `REPORTING_ETL__SECTION__KEY` environment variables,
//! parsed into typed settings and validated once, at load time.
//!
//! Every problem found is reported with the key it sits at and the offending value (never a
//! secret's value), and all problems are reported together so a fix takes one round.
//!
//! The file is `--config PATH`, else `$REPORTING_ETL_CONFIG`, else `./reporting-etl.toml`; only
//! the last may be missing (the environment alone can configure everything).

mod job;
mod source;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use job::{JobSettings, Scope, WindowPolicyName};
pub use source::{
    AltrataSettings, RateLimit, RetarusSettings, RetentlySettings, RoublerSettings, SourceKind,
    SourceSettings,
};
pub use values::{CronSchedule, HttpUrl, TimeZone, cron_parser};

use crate::datasets;

/// Environment variable prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "REPORTING_ETL";
/// Environment variable naming the config file when `--config` is not given.
pub const ENV_CONFIG_PATH: &str = "REPORTING_ETL_CONFIG";
/// The file read when neither `--config` nor `$REPORTING_ETL_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "reporting-etl.toml";

/// Everything the service is configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub rate_budget: RateBudgetSettings,
    /// Named upstream accounts.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
    /// Named jobs.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…`; when absent, a private PostgreSQL server is started in `data_dir`.
    pub url: Option<SecretString>,
    pub url_file: Option<PathBuf>,
    /// Maximum connections in the pool.
    #[serde(default = "DatabaseSettings::default_pool_size")]
    pub pool_size: u32,
    /// Data directory of the embedded server (used only without `url`).
    #[serde(default = "DatabaseSettings::default_data_dir")]
    pub data_dir: PathBuf,
}

impl DatabaseSettings {
    fn default_pool_size() -> u32 {
        10
    }
    fn default_data_dir() -> PathBuf {
        PathBuf::from(".reporting-etl/pg")
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            url_file: None,
            pool_size: Self::default_pool_size(),
            data_dir: Self::default_data_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of `/healthz`, `/readyz` and `/metrics`. Loopback by default.
    #[serde(
        default = "ServerSettings::default_listen",
        deserialize_with = "values::socket_addr"
    )]
    pub listen: std::net::SocketAddr,
    /// At shutdown, how long running windows may take to commit before they are rolled back.
    #[serde(default = "ServerSettings::default_grace")]
    pub shutdown_grace_secs: u64,
}

impl ServerSettings {
    fn default_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9187))
    }
    fn default_grace() -> u64 {
        30
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: Self::default_listen(),
            shutdown_grace_secs: Self::default_grace(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`; `--log-format` wins over this.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `reporting_etl=debug`; `RUST_LOG` wins over this.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Key that encrypts refresh tokens at rest (any string; a 256-bit key is derived from it).
    pub token_key: Option<SecretString>,
    pub token_key_file: Option<PathBuf>,
}

/// How the per-source rate budget shared through the database behaves when the database is not
/// there (see `executor::shared_budget`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateBudgetSettings {
    /// Share of a source's limit this process allows itself while the database is unreachable
    /// (0 < share <= 1). With N processes that may lose the database together, 1/N keeps their
    /// sum within the limit.
    #[serde(default = "RateBudgetSettings::default_fallback_share")]
    pub fallback_share: f64,
    /// The longest an upstream may make a call wait (`Retry-After`, a reset with nothing
    /// remaining, a full window), in seconds. A longer demand fails the call instead, and no block
    /// longer than this is ever kept or stored.
    #[serde(default = "RateBudgetSettings::default_max_wait_secs")]
    pub max_wait_secs: u64,
}

impl RateBudgetSettings {
    /// The most `max_wait_secs` may be: one day.
    pub const MAX_WAIT_LIMIT_SECS: u64 = 24 * 3600;

    fn default_fallback_share() -> f64 {
        0.5
    }

    fn default_max_wait_secs() -> u64 {
        15 * 60
    }

    /// `max_wait_secs` as a duration.
    pub fn max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_wait_secs)
    }
}

impl Default for RateBudgetSettings {
    fn default() -> Self {
        RateBudgetSettings {
            fallback_share: Self::default_fallback_share(),
            max_wait_secs: Self::default_max_wait_secs(),
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `sources.roubler_au.graphql_url`.
    pub key: String,
    pub message: String,
}

/// Every problem found while loading; the process exits before doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => writeln!(f, "invalid configuration ({}):", file.display())?,
            None => writeln!(f, "invalid configuration:")?,
        }
        for problem in &self.problems {
            writeln!(f, "  - {}: {}", problem.key, problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where the settings come from. `env: None` reads the process environment; tests pass a map.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub env: Option<HashMap<String, String>>,
}

impl ConfigSource {
    /// `--config PATH`, else `$REPORTING_ETL_CONFIG`, else `./reporting-etl.toml` if present.
    pub fn from_cli(path: Option<PathBuf>) -> Self {
        ConfigSource { path, env: None }
    }

    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// The file to read and whether it must exist.
    fn file(&self) -> (PathBuf, bool) {
        if let Some(path) = &self.path {
            return (path.clone(), true);
        }
        match self.env_var(ENV_CONFIG_PATH) {
            Some(path) if !path.is_empty() => (PathBuf::from(path), true),
            _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        }
    }
}

impl Settings {
    /// Reads, layers, parses and validates. Every problem found is in the error.
    pub fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
        let (file, required) = source.file();
        let fail = |problems| ConfigError {
            file: Some(file.clone()),
            problems,
        };
        if required && !file.exists() {
            return Err(fail(vec![Problem {
                key: "--config".into(),
                message: format!("`{}` does not exist", file.display()),
            }]));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(source.env.clone().map(|map| map.into_iter().collect()));
        let builder = config::Config::builder()
            .add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(required),
            )
            .add_source(environment);
        Settings::build(builder, Some(file.clone()))
    }

    /// Parses and validates configuration text as if it were the whole file, without the
    /// environment: for tools and the fuzz targets (`fuzz/`), which must not depend on files.
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let builder =
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml));
        Settings::build(builder, None)
    }

    /// Layers, deserialises and validates what `builder` holds; `file` names it in errors.
    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        file: Option<PathBuf>,
    ) -> Result<Settings, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.clone(),
            problems,
        };
        let layered = builder.build().map_err(|e| {
            fail(vec![Problem {
                key: "(file)".into(),
                message: e.to_string(),
            }])
        })?;
        let mut settings: Settings = serde_path_to_error::deserialize(layered).map_err(|e| {
            let mut key = e.path().to_string();
            let mut message = clean_serde_message(&e.inner().to_string());
            if let Some(nested) = message.strip_prefix(source::NESTED_PATH_MARK)
                && let Some((path, rest)) = nested.split_once(": ")
            {
                key = format!("{key}.{path}");
                message = rest.to_owned();
            }
            fail(vec![Problem {
                key: if key == "." { "(top level)".into() } else { key },
                message,
            }])
        })?;
        let problems = settings.validate();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(fail(problems))
        }
    }

    /// Cross-field checks and `*_file` secrets. Returns every problem found.
    fn validate(&mut self) -> Vec<Problem> {
        let mut problems = Problems::default();

        if let Err(message) = resolve_secret(&mut self.database.url, &self.database.url_file, false) {
            problems.add("database.url", message);
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                // The URL may embed a password: quote only its scheme.
                let scheme = url.split(':').next().unwrap_or_default();
                problems.add(
                    "database.url",
                    format!("must start with postgres:// or postgresql:// (got scheme `{scheme}`)"),
                );
            }
        }
        let share = self.rate_budget.fallback_share;
        if !(share > 0.0 && share <= 1.0) {
            problems.add(
                "rate_budget.fallback_share",
                format!(
                    "`{share}` is not a share of the limit; use a number above 0 and at most 1 (e.g. 0.5)"
                ),
            );
        }
        let max_wait = self.rate_budget.max_wait_secs;
        if !(1..=RateBudgetSettings::MAX_WAIT_LIMIT_SECS).contains(&max_wait) {
            problems.add(
                "rate_budget.max_wait_secs",
                format!(
                    "`{max_wait}` is out of range; use 1 to {} seconds (default 900)",
                    RateBudgetSettings::MAX_WAIT_LIMIT_SECS
                ),
            );
        }
        if self.database.pool_size == 0 {
            problems.add("database.pool_size", "`0` is not a pool size; use 1 or more");
        }
        if let Err(message) =
            resolve_secret(&mut self.security.token_key, &self.security.token_key_file, false)
        {
            problems.add("security.token_key", message);
        }
        if let Some(level) = &self.log.level
            && tracing_subscriber::EnvFilter::try_new(level).is_err()
        {
            problems.add(
                "log.level",
                format!("`{level}` is not a tracing filter (e.g. \"info\")"),
            );
        }

        for (name, source) in &mut self.sources {
            let at = |key: &str| format!("sources.{name}.{key}");
            if !valid_name(name) {
                problems.add(
                    format!("sources.{name}"),
                    format!("`{name}` is not a valid source name (use a-z, 0-9, _ and -)"),
                );
            }
            if !source.allow_http() {
                for (key, url) in source.endpoints() {
                    if !url.is_https() {
                        problems.add(
                            at(key),
                            format!(
                                "`{url}` is not https; set allow_http = true only for local test upstreams"
                            ),
                        );
                    }
                }
            }
            let limit = source.rate_limit();
            if limit.calls == 0 || limit.per_ms == 0 {
                problems.add(
                    at("rate_limit"),
                    format!(
                        "`{} calls per {} ms` allows nothing; both must be above 0",
                        limit.calls, limit.per_ms
                    ),
                );
            }
            let secret =
                |key: &str, value: &mut Option<SecretString>, file: &Option<PathBuf>, required: bool| {
                    resolve_secret(value, file, required).map_err(|message| (at(key), message))
                };
            match source {
                SourceSettings::Retarus(s) => {
                    problems.check(secret(
                        "client_secret",
                        &mut s.client_secret,
                        &s.client_secret_file,
                        true,
                    ));
                    if s.customer_ids.is_empty() {
                        problems.add(
                            at("customer_ids"),
                            "is empty; list at least one Retarus customer id",
                        );
                    }
                }
                SourceSettings::Roubler(s) => {
                    problems.check(secret(
                        "client_secret",
                        &mut s.client_secret,
                        &s.client_secret_file,
                        true,
                    ));
                }
                SourceSettings::Altrata(s) => {
                    problems.check(secret("password", &mut s.password, &s.password_file, true));
                    problems.check(secret("api_key", &mut s.api_key, &s.api_key_file, true));
                }
                SourceSettings::Retently(s) => {
                    problems.check(secret("api_key", &mut s.api_key, &s.api_key_file, false));
                    problems.check(secret(
                        "client_secret",
                        &mut s.client_secret,
                        &s.client_secret_file,
                        false,
                    ));
                    let oauth = s.client_id.is_some() && s.client_secret.is_some();
                    if s.api_key.is_none() && !oauth {
                        problems.add(
                            at("api_key"),
                            "is missing; set api_key, or client_id and client_secret for OAuth",
                        );
                    }
                }
            }
        }

        for (name, job) in &self.jobs {
            let at = |key: &str| format!("jobs.{name}.{key}");
            if !valid_name(name) {
                problems.add(
                    format!("jobs.{name}"),
                    format!("`{name}` is not a valid job name (use a-z, 0-9, _ and -)"),
                );
            }
            let Some(source) = self.sources.get(&job.source) else {
                let known = self.sources.keys().cloned().collect::<Vec<_>>().join(", ");
                problems.add(
                    at("source"),
                    format!(
                        "`{}` is not a configured source (configured: {known})",
                        job.source
                    ),
                );
                continue;
            };
            let kind = source.kind();
            let Some(dataset) = datasets::find(kind, &job.dataset) else {
                let known = datasets::CATALOG
                    .iter()
                    .filter(|d| d.kind == kind)
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.add(
                    at("dataset"),
                    format!("`{}` is not a {kind} dataset (one of: {known})", job.dataset),
                );
                continue;
            };
            let policy = job.window.unwrap_or(dataset.default_window);
            if !dataset.allows(policy) {
                problems.add(
                    at("window"),
                    format!(
                        "`{policy}` does not apply to {} (a {} dataset)",
                        dataset.name, dataset.default_window
                    ),
                );
            }
            if policy == WindowPolicyName::Trailing && job.trailing_days.unwrap_or(0) == 0 {
                problems.add(
                    at("trailing_days"),
                    "is required (1 or more) for a trailing window",
                );
            }
        }
        problems.0
    }

    /// The validated job of this name, with its source.
    pub fn job(&self, name: &str) -> Option<(&JobSettings, &SourceSettings)> {
        let job = self.jobs.get(name)?;
        Some((job, self.sources.get(&job.source)?))
    }
}

/// Problems collected by [`Settings::validate`].
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, result: Result<(), (String, String)>) {
        if let Err((key, message)) = result {
            self.add(key, message);
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Fills `value` from `file` when given. Exactly one of the two may be set; `required` demands one.
fn resolve_secret(
    value: &mut Option<SecretString>,
    file: &Option<PathBuf>,
    required: bool,
) -> Result<(), String> {
    match (value.is_some(), file) {
        (true, Some(path)) => Err(format!(
            "is set both inline and as a file (`{}`); keep one",
            path.display()
        )),
        (false, Some(path)) => {
            let contents = read_secret_file(path)?;
            *value = Some(SecretString::from(contents));
            Ok(())
        }
        (false, None) if required => Err("is missing (set it, or `<key>_file` to a file holding it)".into()),
        _ => Ok(()),
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let contents = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
    let trimmed = contents.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(format!("secret file `{}` is empty", path.display()));
    }
    Ok(trimmed.to_owned())
}

/// serde says "unknown field `x`, expected one of …"; keep that, drop config's own key suffix
/// (the key is printed separately).
pub(crate) fn clean_serde_message(message: &str) -> String {
    match message.find(" for key `") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
