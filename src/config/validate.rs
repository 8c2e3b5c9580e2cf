//! Validation of the loaded settings: ranges, shapes, cross-field checks and `*_file` secrets,
//! every problem collected with its key so a fix takes one round.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::redact::{self, Redactor};
use super::secrets::{resolve_secret, token_key_bytes};
use super::{JobSettings, Problem, RateBudgetSettings, Settings, bounds};
use crate::catalog::{Catalog, WindowPolicy};

impl Settings {
    /// Ranges, shapes, cross-field checks and `*_file` secrets, as of `now`, with the vendors'
    /// `catalog`. Returns every problem found; secret values met on the way are given to
    /// `redactor`.
    pub(super) fn validate(
        &mut self,
        redactor: &mut Redactor,
        catalog: Catalog,
        now: DateTime<Utc>,
    ) -> Vec<Problem> {
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
            problems.in_range(
                &at("archive.keep_days"),
                source.archive().keep_days,
                bounds::ARCHIVE_KEEP_DAYS,
                "days",
            );
            source.validate(&mut SectionCheck {
                name,
                problems: &mut problems,
                redactor,
            });
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
                let known = catalog
                    .of_kind(kind)
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.add(
                    at("dataset"),
                    format!(
                        "`{}` is not a dataset of kind {kind} (one of: {known})",
                        job.dataset
                    ),
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
}

/// Problems collected by [`Settings::validate`].
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

/// What a vendor's [`super::Section::validate`] reports through: keys are relative to the
/// source's section (`client_id` for `sources.NAME.client_id`), secrets are resolved from their
/// `*_file` and remembered for redaction.
pub struct SectionCheck<'a> {
    name: &'a str,
    problems: &'a mut Problems,
    redactor: &'a mut Redactor,
}

impl SectionCheck<'_> {
    fn at(&self, key: &str) -> String {
        format!("sources.{}.{key}", self.name)
    }

    /// A problem at `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.at(key);
        self.problems.add(key, message);
    }

    /// Refuses an empty (or blank) value.
    pub fn non_empty(&mut self, key: &str, value: &str) {
        let key = self.at(key);
        self.problems.non_empty(&key, value);
    }

    /// Refuses a value outside `range`, naming the bounds and `unit`.
    pub fn in_range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) {
        let key = self.at(key);
        self.problems.in_range(&key, value, range, unit);
    }

    /// Resolves a secret given inline or as `<key>_file`; `required` demands one. Returns
    /// whether it is usable.
    pub fn secret(
        &mut self,
        key: &str,
        value: &mut Option<SecretString>,
        file: &Option<PathBuf>,
        required: bool,
    ) -> bool {
        let key = self.at(key);
        self.problems
            .check_secret(&key, value, file, required, self.redactor)
    }
}

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

/// `database.url` must be a PostgreSQL URL that connects as written. The value is a secret (it
/// may embed a password): messages quote only a scheme, and only when it looks like one, and the
/// name and value of a query option that is not the password ([`check_url_option`]).
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
    for (option, given) in url.query_pairs() {
        check_url_option(&option, &given)?;
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

/// The `sslmode` values PostgreSQL (and sqlx, in any case) knows.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The query options sqlx reads from a PostgreSQL URL (`options[NAME]` aside); it ignores any
/// other, logging its value, which may be a misspelt `password`.
const URL_OPTIONS: [&str; 19] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
    "options[NAME]",
];

/// One query option of `database.url`. Checked here, not left to sqlx, because sqlx's messages
/// name neither the option nor the value plainly (`unknown value "x" for `ssl_mode``, `invalid
/// digit found in string`) and what they quote must be dropped: the URL as a whole is a secret.
/// An option's name and value are not secrets (only `password` is, and its value is never
/// quoted, nor is an unknown option's, which may be a misspelt `password`); the redactor still
/// replaces the URL's password wherever a message repeats it.
fn check_url_option(option: &str, value: &str) -> Result<(), String> {
    let wanted = match option {
        "sslmode" | "ssl-mode" if !SSL_MODES.contains(&value.to_ascii_lowercase().as_str()) => {
            format!("one of {}", SSL_MODES.join(", "))
        }
        "port" if !value.parse::<u16>().is_ok_and(|port| port > 0) => "a port number, 1 to 65535".to_owned(),
        "statement-cache-capacity" if value.parse::<usize>().is_err() => {
            "a whole number of statements, 0 or more".to_owned()
        }
        "hostaddr" if value.parse::<std::net::IpAddr>().is_err() => "an IP address".to_owned(),
        known if URL_OPTIONS.contains(&known) || known.starts_with("options[") => return Ok(()),
        unknown => {
            return Err(format!(
                "has the query option {}, which the PostgreSQL driver does not know (it would \
                 ignore it); the options it reads: {}",
                shown(unknown),
                URL_OPTIONS.join(", ")
            ));
        }
    };
    Err(format!(
        "has the query option {option} = {}, which is not valid; use {wanted}",
        shown(value)
    ))
}

/// A value from the URL as a message quotes it: in backticks, control characters escaped, and
/// cut short, so a pasted blob cannot flood or garble the message.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let escaped: String = value.escape_debug().take(MAX_CHARS).collect();
    if value.escape_debug().count() > MAX_CHARS {
        format!("`{escaped}…`")
    } else {
        format!("`{escaped}`")
    }
}
