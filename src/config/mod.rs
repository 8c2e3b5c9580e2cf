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
mod secrets;
mod source;
mod validate;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use chrono::Utc;
use secrecy::SecretString;
use serde::Deserialize;

use redact::Redactor;

pub use job::{JobSettings, Scope};
pub use source::{
    ArchiveSettings, Parts, RateLimit, Registry, Section, SectionAny, SectionKind, Sections, SourceSettings,
    default_redirect_uri, parse_section,
};
pub use validate::SectionCheck;
pub use values::{CronSchedule, HttpUrl, TimeZone, cron_parser};
pub(crate) use values::{strict_bool, string_list};

/// Environment variable prefix; `__` separates nesting levels.
pub(crate) const ENV_PREFIX: &str = "REPORTING_ETL";
/// Environment variable naming the config file when `--config` is not given.
pub(crate) const ENV_CONFIG_PATH: &str = "REPORTING_ETL_CONFIG";
/// The file read when neither `--config` nor `$REPORTING_ETL_CONFIG` names one.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "reporting-etl.toml";

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
    pub(crate) const MAX_WAIT_LIMIT_SECS: u64 = 24 * 3600;

    fn default_fallback_share() -> f64 {
        0.5
    }

    fn default_max_wait_secs() -> u64 {
        15 * 60
    }

    /// `max_wait_secs` as a duration.
    pub(crate) fn max_wait(&self) -> std::time::Duration {
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
    pub(crate) fn from_cli(path: Option<PathBuf>) -> Self {
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
    /// Reads, layers, parses and validates. Every problem found is in the error. `registry` is
    /// the vendors' section readers and catalogue (`vendors::REGISTRY`; `app::load_settings`
    /// passes it).
    pub fn load(source: &ConfigSource, registry: Registry) -> Result<Settings, ConfigError> {
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
        Settings::build(builder.add_source(environment), Some(file.clone()), registry)
    }

    /// Parses and validates configuration text as if it were the whole file, without the
    /// environment: for tools and the fuzz targets (`fuzz/`), which must not depend on files.
    pub fn from_toml_str(text: &str, registry: Registry) -> Result<Settings, ConfigError> {
        let fail = |problem| ConfigError {
            file: None,
            problems: vec![problem],
        };
        input::check_toml(text).map_err(fail)?;
        let builder =
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml));
        Settings::build(builder, None, registry)
    }

    /// Layers, deserialises and validates what `builder` holds; `file` names it in errors. Every
    /// message passes through one [`Redactor`] that has seen every secret value.
    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        file: Option<PathBuf>,
        registry: Registry,
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
        // The sections and datasets are read with the vendors' registry, which serde cannot be
        // handed directly.
        let parsed = source::with_registry(registry, || {
            serde_path_to_error::deserialize::<_, Settings>(layered).map_err(Box::new)
        });
        let mut settings: Settings = parsed.map_err(|e| {
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
        let problems = settings.validate(&mut redactor, registry.catalog, Utc::now());
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

    /// The validated job of this name, with its source.
    pub fn job(&self, name: &str) -> Option<(&JobSettings, &SourceSettings)> {
        let job = self.jobs.get(name)?;
        Some((job, self.sources.get(&job.source)?))
    }
}

/// Bounds of the numeric and date keys. They keep every date and duration computed from the
/// configuration far inside chrono's and tokio's range (no overflow, no panic), and refuse values
/// that can only be mistakes.
pub(crate) mod bounds {
    use std::ops::RangeInclusive;

    pub(crate) const POOL_SIZE: RangeInclusive<u32> = 1..=1000;
    pub(crate) const SHUTDOWN_GRACE_SECS: RangeInclusive<u64> = 0..=3600;
    pub(crate) const RATE_CALLS: RangeInclusive<u32> = 1..=1_000_000;
    /// Up to one day per period.
    pub(crate) const RATE_PER_MS: RangeInclusive<u64> = 1..=86_400_000;
    /// Up to 365 days.
    pub(crate) const LOOKBACK_MINUTES: RangeInclusive<u32> = 0..=525_600;
    /// Up to ten years, the longest history any vendor keeps.
    pub(crate) const TRAILING_DAYS: RangeInclusive<u32> = 1..=3650;
    /// Up to a week; 0 asks the vendor at every run.
    pub(crate) const DISCOVERY_TTL_SECS: RangeInclusive<u64> = 0..=604_800;
    /// Up to a hundred years; 0 keeps no archive.
    pub(crate) const ARCHIVE_KEEP_DAYS: RangeInclusive<u32> = 0..=36_500;
    /// At least a second, at most a day.
    pub(crate) const WINDOW_DEADLINE_SECS: RangeInclusive<u64> = 1..=86_400;
    /// A schedule must fire within this many days of any moment.
    pub(crate) const SCHEDULE_HORIZON_DAYS: i64 = 366;

    /// The earliest `start` of a job (no vendor has data from before).
    pub(crate) fn earliest_start() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
    }
}

/// serde says "unknown field `x`, expected one of …"; keep that, drop config's own key suffix
/// (the key is printed separately).
pub(crate) fn clean_serde_message(message: &str) -> String {
    match message.find(" for key `") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
