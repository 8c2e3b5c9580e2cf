//! Job settings: a schedule of one dataset on one source, its scope and its window policy.

use chrono::NaiveDate;
use serde::Deserialize;

use super::values::{CronSchedule, TimeZone, string_list};
use crate::catalog::{Dataset, WindowPolicy};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Name of an entry under `[sources]`.
    pub source: String,
    /// Dataset name, e.g. `fax_out_udr` (see `reporting-etl jobs` or the README for the list).
    #[serde(deserialize_with = "super::source::dataset")]
    pub dataset: Dataset,
    /// 6-field cron expression, seconds first.
    pub schedule: CronSchedule,
    /// IANA zone the schedule is read in (fires at the same local time across DST changes).
    #[serde(default)]
    pub time_zone: TimeZone,
    /// `"all"` (discover every company / location / customer the credentials reach) or a list of ids.
    #[serde(default, deserialize_with = "scope")]
    pub scope: Scope,
    /// How each run picks its time window; defaults to the dataset's natural policy.
    pub window: Option<WindowPolicy>,
    /// Incremental windows start this many minutes before the watermark, to pick up late records.
    #[serde(default = "default_lookback")]
    pub lookback_minutes: u32,
    /// Length of a `trailing` window, in days.
    pub trailing_days: Option<u32>,
    /// Where a first incremental run starts (bounded by the vendor's history limit).
    #[serde(default, deserialize_with = "super::values::optional_date")]
    pub start: Option<NaiveDate>,
    /// Set to false to keep a job configured but not scheduled.
    #[serde(default = "default_true", deserialize_with = "super::values::strict_bool")]
    pub enabled: bool,
    /// The longest one window may spend loading (upstream calls, their retries and waits, and
    /// writing); past it the window fails and rolls back. Bounds an upstream that hangs.
    #[serde(default = "default_window_deadline_secs")]
    pub window_deadline_secs: u64,
}

impl JobSettings {
    /// `window_deadline_secs` as a duration.
    pub(crate) fn window_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.window_deadline_secs)
    }
}

/// Half an hour: a Retarus window of 45 days at 5 calls/s, or a Roubler window behind a full
/// 100-per-minute budget, takes minutes, while a hanging upstream would hold a window for retries
/// × request timeout per call.
fn default_window_deadline_secs() -> u64 {
    30 * 60
}

fn default_lookback() -> u32 {
    60
}

fn default_true() -> bool {
    true
}

/// Which scopes a job covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    All,
    Ids(Vec<String>),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Ids(ids) => f.write_str(&ids.join(",")),
        }
    }
}

fn scope<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
    let ids = string_list(deserializer)?;
    if ids.is_empty() || (ids.len() == 1 && ids[0].eq_ignore_ascii_case("all")) {
        Ok(Scope::All)
    } else {
        Ok(Scope::Ids(ids))
    }
}
