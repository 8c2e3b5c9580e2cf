//! Configuration: a TOML file layered under `REPORTING_ETL__SECTION__KEY` environment variables,
//! parsed into typed settings and validated once, at load time.
//!
//! Every problem found is reported with the key it sits at and the offending value (never a
//! secret's value: every message passes through one redaction rule, `redact`), and all problems
//! are reported together so a fix takes one round. Every number and date has bounds that keep the
//! arithmetic done with it in range; a bad value exits 2 before anything runs.
//!
//! The file is `--config PATH`, else `$REPORTING_ETL_CONFIG`, else `./reporting-etl.toml`; only
//! the last may be missing (the environment alone can configure everything).

mod input;
mod job;
mod redact;
mod source;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use redact::Redactor;

pub use job::{JobSettings, Scope};
pub use source::{
    AltrataSettings, RateLimit, RetarusSettings, RetentlySettings, RoublerSettings, SourceSettings,
};
pub use values::{CronSchedule, HttpUrl, TimeZone, cron_parser};

use crate::catalog::WindowPolicy;

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
    /// Key that encrypts refresh tokens at rest: 32 random bytes as 64 hex digits or base64
    /// (see [`token_key_bytes`]).
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

    /// A variable of the environment; a path need not be UTF-8.
    fn env_var(&self, name: &str) -> Option<std::ffi::OsString> {
        match &self.env {
            Some(map) => map.get(name).cloned().map(Into::into),
            None => std::env::var_os(name),
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
        let text = input::read_file(&file, required).map_err(|problem| fail(vec![problem]))?;
        let env = match &source.env {
            Some(map) => map.clone(),
            None => input::process_environment().map_err(fail)?,
        };
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env.into_iter().collect()));
        let mut builder = config::Config::builder();
        if let Some(text) = &text {
            input::check_toml(text).map_err(|problem| fail(vec![problem]))?;
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        Settings::build(builder.add_source(environment), Some(file.clone()))
    }

    /// Parses and validates configuration text as if it were the whole file, without the
    /// environment: for tools and the fuzz targets (`fuzz/`), which must not depend on files.
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let fail = |problem| ConfigError {
            file: None,
            problems: vec![problem],
        };
        input::check_toml(text).map_err(fail)?;
        let builder =
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml));
        Settings::build(builder, None)
    }

    /// Layers, deserialises and validates what `builder` holds; `file` names it in errors. Every
    /// message passes through one [`Redactor`] that has seen every secret value.
    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        file: Option<PathBuf>,
    ) -> Result<Settings, ConfigError> {
        let mut redactor = Redactor::default();
        let fail = |problems: Vec<Problem>| ConfigError {
            file: file.clone(),
            problems,
        };
        // A problem reported by another crate, which may quote anything it read.
        let foreign = |redactor: &Redactor, key: String, message: &str| {
            fail(vec![Problem {
                message: redactor.clean_foreign(&key, message),
                key,
            }])
        };
        let layered = builder
            .build()
            .map_err(|e| foreign(&redactor, "(file)".into(), &clean_serde_message(&e.to_string())))?;
        if let Ok(tree) = layered.clone().try_deserialize::<config::Value>() {
            redactor.remember_tree(&tree, "");
        }
        let mut settings: Settings = serde_path_to_error::deserialize(layered).map_err(|e| {
            let mut key = e.path().to_string();
            let mut message = clean_serde_message(&e.inner().to_string());
            if let Some(nested) = message.strip_prefix(source::NESTED_PATH_MARK)
                && let Some((path, rest)) = nested.split_once(": ")
            {
                key = format!("{key}.{path}");
                message = rest.to_owned();
            }
            let key = if key == "." { "(top level)".into() } else { key };
            foreign(&redactor, key, &message)
        })?;
        let problems = settings.validate(&mut redactor, Utc::now());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(fail(
                problems
                    .into_iter()
                    .map(|p| Problem {
                        message: redactor.clean(&p.message),
                        key: p.key,
                    })
                    .collect(),
            ))
        }
    }

    /// Ranges, shapes, cross-field checks and `*_file` secrets, as of `now`. Returns every
    /// problem found; secret values met on the way are given to `redactor`.
    fn validate(&mut self, redactor: &mut Redactor, now: DateTime<Utc>) -> Vec<Problem> {
        let mut problems = Problems::default();

        problems.check_secret(
            "database.url",
            &mut self.database.url,
            &self.database.url_file,
            false,
            redactor,
        );
        if let Some(url) = &self.database.url
            && let Err(message) = check_database_url(url.expose_secret())
        {
            problems.add("database.url", message);
        }
        problems.in_range(
            "database.pool_size",
            self.database.pool_size,
            bounds::POOL_SIZE,
            "connections",
        );
        problems.non_empty("database.data_dir", &self.database.data_dir.to_string_lossy());
        problems.in_range(
            "server.shutdown_grace_secs",
            self.server.shutdown_grace_secs,
            bounds::SHUTDOWN_GRACE_SECS,
            "seconds",
        );
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
        if problems.check_secret(
            "security.token_key",
            &mut self.security.token_key,
            &self.security.token_key_file,
            false,
            redactor,
        ) && let Some(key) = &self.security.token_key
            && let Err(message) = token_key_bytes(key.expose_secret())
        {
            problems.add("security.token_key", message);
        }
        if let Some(level) = &self.log.level {
            if level.trim().is_empty() {
                problems.add("log.level", "is empty; use a tracing filter such as \"info\"");
            } else if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                problems.add(
                    "log.level",
                    format!("`{level}` is not a tracing filter (e.g. \"info\")"),
                );
            }
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
            problems.in_range(&at("rate_limit.calls"), limit.calls, bounds::RATE_CALLS, "calls");
            problems.in_range(&at("rate_limit.per_ms"), limit.per_ms, bounds::RATE_PER_MS, "ms");
            if let SourceSettings::Roubler(s) = source {
                problems.in_range(
                    &at("discovery_ttl_secs"),
                    s.discovery_ttl_secs,
                    bounds::DISCOVERY_TTL_SECS,
                    "seconds",
                );
            }
            match source {
                SourceSettings::Retarus(s) => {
                    problems.non_empty(&at("client_id"), &s.client_id);
                    problems.check_secret(
                        &at("client_secret"),
                        &mut s.client_secret,
                        &s.client_secret_file,
                        true,
                        redactor,
                    );
                    if s.customer_ids.is_empty() {
                        problems.add(
                            at("customer_ids"),
                            "is empty; list at least one Retarus customer id",
                        );
                    }
                }
                SourceSettings::Roubler(s) => {
                    problems.non_empty(&at("client_id"), &s.client_id);
                    problems.check_secret(
                        &at("client_secret"),
                        &mut s.client_secret,
                        &s.client_secret_file,
                        true,
                        redactor,
                    );
                }
                SourceSettings::Altrata(s) => {
                    problems.non_empty(&at("username"), &s.username);
                    problems.check_secret(&at("password"), &mut s.password, &s.password_file, true, redactor);
                    problems.check_secret(&at("api_key"), &mut s.api_key, &s.api_key_file, true, redactor);
                }
                SourceSettings::Retently(s) => {
                    problems.check_secret(&at("api_key"), &mut s.api_key, &s.api_key_file, false, redactor);
                    problems.check_secret(
                        &at("client_secret"),
                        &mut s.client_secret,
                        &s.client_secret_file,
                        false,
                        redactor,
                    );
                    if let Some(client_id) = &s.client_id {
                        problems.non_empty(&at("client_id"), client_id);
                    }
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
            if let Err(message) = fires_within_a_year(job, now) {
                problems.add(at("schedule"), message);
            }
            problems.in_range(
                &at("lookback_minutes"),
                job.lookback_minutes,
                bounds::LOOKBACK_MINUTES,
                "minutes",
            );
            problems.in_range(
                &at("window_deadline_secs"),
                job.window_deadline_secs,
                bounds::WINDOW_DEADLINE_SECS,
                "seconds",
            );
            if let Some(days) = job.trailing_days {
                problems.in_range(&at("trailing_days"), days, bounds::TRAILING_DAYS, "days");
            }
            if let Some(start) = job.start {
                let today = now.date_naive();
                if start < bounds::earliest_start() || start > today {
                    problems.add(
                        at("start"),
                        format!(
                            "`{start}` is out of range; use a date from {} to today ({today})",
                            bounds::earliest_start()
                        ),
                    );
                }
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
            let dataset = job.dataset.info();
            if dataset.kind != kind {
                let known = kind.datasets().map(|d| d.name).collect::<Vec<_>>().join(", ");
                problems.add(
                    at("dataset"),
                    format!("`{}` is not a {kind} dataset (one of: {known})", job.dataset),
                );
                continue;
            }
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
            if policy == WindowPolicy::Trailing && job.trailing_days.is_none() {
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

/// Bounds of the numeric and date keys. They keep every date and duration computed from the
/// configuration far inside chrono's and tokio's range (no overflow, no panic), and refuse values
/// that can only be mistakes.
pub mod bounds {
    use std::ops::RangeInclusive;

    pub const POOL_SIZE: RangeInclusive<u32> = 1..=1000;
    pub const SHUTDOWN_GRACE_SECS: RangeInclusive<u64> = 0..=3600;
    pub const RATE_CALLS: RangeInclusive<u32> = 1..=1_000_000;
    /// Up to one day per period.
    pub const RATE_PER_MS: RangeInclusive<u64> = 1..=86_400_000;
    /// Up to 365 days.
    pub const LOOKBACK_MINUTES: RangeInclusive<u32> = 0..=525_600;
    /// Up to ten years, the longest history any vendor keeps.
    pub const TRAILING_DAYS: RangeInclusive<u32> = 1..=3650;
    /// Up to a week; 0 asks the vendor at every run.
    pub const DISCOVERY_TTL_SECS: RangeInclusive<u64> = 0..=604_800;
    /// At least a second, at most a day.
    pub const WINDOW_DEADLINE_SECS: RangeInclusive<u64> = 1..=86_400;
    /// A schedule must fire within this many days of any moment.
    pub const SCHEDULE_HORIZON_DAYS: i64 = 366;

    /// The earliest `start` of a job (no vendor has data from before).
    pub fn earliest_start() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
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

    fn in_range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) {
        if !range.contains(&value) {
            self.add(
                key,
                format!(
                    "`{value}` is out of range; use {} to {} {unit}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    fn non_empty(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.add(key, "is empty; give a value");
        }
    }

    /// Resolves a secret (see [`resolve_secret`]), remembering its value for redaction.
    /// Returns whether it is usable (present or absent, but not broken).
    fn check_secret(
        &mut self,
        key: &str,
        value: &mut Option<SecretString>,
        file: &Option<PathBuf>,
        required: bool,
        redactor: &mut Redactor,
    ) -> bool {
        let result = resolve_secret(value, file, required);
        if let Some(value) = value {
            redactor.remember(value.expose_secret());
        }
        match result {
            Ok(()) => true,
            Err(message) => {
                self.add(key, message);
                false
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A schedule that never fires, or fires less than once a year, is a mistake (`0 0 0 30 2 *`).
fn fires_within_a_year(job: &JobSettings, now: DateTime<Utc>) -> Result<(), String> {
    let expression = job.schedule.expression();
    let local = now.with_timezone(&job.time_zone.0);
    match job.schedule.cron().find_next_occurrence(&local, false) {
        Ok(next) if next.with_timezone(&Utc) - now <= TimeDelta::days(bounds::SCHEDULE_HORIZON_DAYS) => {
            Ok(())
        }
        Ok(next) => Err(format!(
            "`{expression}` next fires on {}, more than a year from now; a schedule must fire at least once a year",
            next.date_naive()
        )),
        Err(_) => Err(format!(
            "`{expression}` never fires (no date matches all its fields)"
        )),
    }
}

/// `security.token_key`: 32 bytes, written as 64 hex digits or as base64 (`openssl rand
/// -base64 32`). The cipher key is derived from the text by SHA-256 (see `auth::store`).
pub fn token_key_bytes(text: &str) -> Result<[u8; 32], String> {
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

/// `database.url` must be a PostgreSQL URL that connects as written. The value is a secret (it
/// may embed a password): messages quote only a scheme, and only when it looks like one.
fn check_database_url(value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("is empty; give a postgres:// URL or leave it out for the embedded server".into());
    }
    let scheme = value
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|s| (1..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'));
    let url = url::Url::parse(value).map_err(|e| format!("is not a postgres:// URL ({e})"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(match scheme {
            // Unquoted: the key is a secret's, whose messages keep no quoted text.
            Some(scheme) => format!("must start with postgres:// or postgresql:// (got scheme {scheme})"),
            None => "must start with postgres:// or postgresql://".into(),
        });
    }
    value
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map(|_| ())
        .map_err(|e| {
            // sqlx wraps its message twice in "error with configuration: ".
            let message = e.to_string();
            let message = message
                .rsplit("error with configuration: ")
                .next()
                .unwrap_or_default();
            // sqlx quotes parts of the URL, which is a secret.
            format!(
                "is not a PostgreSQL connection URL: {}",
                redact::drop_quoted(message)
            )
        })
}

/// Fills `value` from `file` when given. Exactly one of the two may be set; `required` demands
/// one. An empty value is refused either way.
fn resolve_secret(
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

/// serde says "unknown field `x`, expected one of …"; keep that, drop config's own key suffix
/// (the key is printed separately).
pub(crate) fn clean_serde_message(message: &str) -> String {
    match message.find(" for key `") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
