//! The catalogue: every vendor kind, window policy and dataset this service knows, with the facts
//! the rest of the crate needs about each, written once.
//!
//! A leaf module: it imports nothing from the crate, so the configuration, the loaders, the
//! runner and the command line can all depend on it without depending on each other. Adding a
//! dataset adds one [`Dataset`] variant and one [`CATALOG`] row here; its queries, row mapping and
//! table layout live in its vendor's folder (`src/vendors/<vendor>/`).
//!
//! Names are unique across vendors, so a job's `dataset = "fax_out_udr"` deserialises straight
//! into a [`Dataset`]; nothing else in the crate matches on dataset or vendor name strings.

use std::fmt;

use chrono::TimeDelta;
use serde::Deserialize;

/// The four vendor kinds (`sources.NAME.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Retarus,
    Roubler,
    Altrata,
    Retently,
}

impl SourceKind {
    /// Every kind, in the order the README and messages list them.
    pub(crate) const ALL: [SourceKind; 4] = [
        SourceKind::Retarus,
        SourceKind::Roubler,
        SourceKind::Altrata,
        SourceKind::Retently,
    ];

    /// The configuration's name for this kind (also the vendor's database schema).
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Retarus => "retarus",
            SourceKind::Roubler => "roubler",
            SourceKind::Altrata => "altrata",
            SourceKind::Retently => "retently",
        }
    }

    /// This kind's datasets, in catalogue order.
    pub(crate) fn datasets(self) -> impl Iterator<Item = &'static DatasetInfo> {
        CATALOG.iter().filter(move |d| d.kind == self)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The window policies a job may ask for (`jobs.NAME.window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowPolicy {
    /// From the job's watermark (minus the lookback) up to now, in the vendor's legal window sizes.
    Incremental,
    /// A fixed period ending now (`trailing_days`), reloaded each run.
    Trailing,
    /// The whole dataset at once (reference data).
    Snapshot,
}

impl fmt::Display for WindowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowPolicy::Incremental => "incremental",
            WindowPolicy::Trailing => "trailing",
            WindowPolicy::Snapshot => "snapshot",
        })
    }
}

/// Every dataset this service can extract. The variant order is [`CATALOG`]'s row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Inbound fax usage detail records.
    FaxInUdr,
    /// Outbound fax usage detail records.
    FaxOutUdr,
    /// Inbound SMS usage detail records.
    SmsInUdr,
    /// Outbound SMS usage detail records.
    SmsOutUdr,
    /// Transactional e-mail delivery records.
    TransactionalEmailUdr,
    /// Locations (a tree) with their IANA time zones.
    Locations,
    /// Employees, terminated ones included.
    Employees,
    /// Daily sales per location (local days).
    LocationSales,
    /// Timesheets per location.
    Timesheets,
    /// Rostered shifts per location.
    Shifts,
    /// Events about watched people and organisations.
    Events,
    /// Person and organisation profiles of the watch-list.
    Profiles,
    /// Survey customers (subscribers).
    Customers,
    /// Survey responses.
    Feedback,
    /// Companies with their survey metrics.
    Companies,
    /// Survey campaigns.
    Campaigns,
    /// Daily snapshot of the NPS score.
    NpsScore,
}

impl Dataset {
    /// This dataset's row of facts.
    pub fn info(self) -> &'static DatasetInfo {
        &CATALOG[self as usize]
    }

    /// The configuration's name of this dataset (`jobs.NAME.dataset`).
    pub(crate) fn name(self) -> &'static str {
        self.info().name
    }

    /// The dataset the configuration names `name`, if any.
    pub(crate) fn from_name(name: &str) -> Option<Dataset> {
        CATALOG.iter().find(|d| d.name == name).map(|d| d.id)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Dataset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Dataset::from_name(&name).ok_or_else(|| {
            let known = CATALOG.iter().map(|d| d.name).collect::<Vec<_>>().join(", ");
            serde::de::Error::custom(format!("`{name}` is not a dataset (one of: {known})"))
        })
    }
}

/// What the crate knows about one dataset.
#[derive(Debug)]
pub struct DatasetInfo {
    /// The typed name, for matching.
    pub id: Dataset,
    pub kind: SourceKind,
    /// The configuration's name (`jobs.NAME.dataset`).
    pub name: &'static str,
    /// The table rows land in (`schema.table`).
    pub table: &'static str,
    /// The policy used when a job names none; snapshot datasets accept only snapshot.
    pub default_window: WindowPolicy,
    /// The longest window one load may ask the vendor for; `None` for no limit.
    pub max_span: Option<TimeDelta>,
    /// How far back a window may start, from now: the vendor's retention, with a margin.
    pub history_limit: TimeDelta,
    /// How far back a first incremental run starts when the job sets no `start`.
    pub first_run: TimeDelta,
    /// Rows are calendar days (per location's local day): windows are whole UTC days.
    pub daily: bool,
}

impl DatasetInfo {
    /// Whether a job may load this dataset under `policy`.
    pub(crate) fn allows(&self, policy: WindowPolicy) -> bool {
        match self.default_window {
            WindowPolicy::Snapshot => policy == WindowPolicy::Snapshot,
            _ => policy != WindowPolicy::Snapshot,
        }
    }
}

/// The dataset of this kind and name, if there is one.
pub fn find(kind: SourceKind, name: &str) -> Option<&'static DatasetInfo> {
    Dataset::from_name(name)
        .map(Dataset::info)
        .filter(|d| d.kind == kind)
}

/// Retarus keeps 90 days of data back from the moment a request arrives, and one request spans
/// at most 45 days (documented: `docs/vendors/retarus.md#history-limit`).
///
/// The limit we keep to is 89 days: the vendor does not say whether its 90 days are 90 × 24 h or
/// calendar days (in which zone), and a window computed now may be sent up to its deadline
/// (`jobs.NAME.window_deadline_secs`, at most a day) later, after retries and budget waits. A day
/// of margin covers both; the hour the loaders used to keep covered neither. The day given up is
/// never needed by a scheduled job, whose watermark is hours old.
const RETARUS_HISTORY: TimeDelta = TimeDelta::days(89);
const RETARUS_MAX_SPAN: TimeDelta = TimeDelta::days(45);
/// Vendors that document no retention: ten years, the longest `trailing_days` allows.
const UNLIMITED_HISTORY: TimeDelta = TimeDelta::days(3650);
/// Where a first run starts without a `start`, for vendors with no retention to fill.
const FIRST_RUN: TimeDelta = TimeDelta::days(30);
/// Roubler documents no limit; a week per call keeps timesheet and shift answers small
/// (`docs/vendors/roubler.md`).
const ROUBLER_WORK_SPAN: TimeDelta = TimeDelta::days(7);
/// Roubler daily sales: one row per day and location, so a month per call is small.
const ROUBLER_SALES_SPAN: TimeDelta = TimeDelta::days(31);

/// A Retarus report: incremental, at most 45 days per request, 89 days back.
const fn retarus(id: Dataset, name: &'static str, table: &'static str) -> DatasetInfo {
    DatasetInfo {
        id,
        kind: SourceKind::Retarus,
        name,
        table,
        default_window: WindowPolicy::Incremental,
        max_span: Some(RETARUS_MAX_SPAN),
        history_limit: RETARUS_HISTORY,
        // A first run fills the whole retention: older records are gone for good.
        first_run: RETARUS_HISTORY,
        daily: false,
    }
}

/// A dataset of a vendor that documents no retention.
const fn other(
    id: Dataset,
    kind: SourceKind,
    name: &'static str,
    table: &'static str,
    default_window: WindowPolicy,
    max_span: Option<TimeDelta>,
) -> DatasetInfo {
    DatasetInfo {
        id,
        kind,
        name,
        table,
        default_window,
        max_span,
        history_limit: UNLIMITED_HISTORY,
        first_run: FIRST_RUN,
        daily: false,
    }
}

use Dataset as D;
use SourceKind::{Altrata, Retently, Roubler};
use WindowPolicy::{Incremental, Snapshot};

/// Every dataset, indexed by [`Dataset`] (`CATALOG[d as usize].id == d`, checked by a test).
pub const CATALOG: &[DatasetInfo] = &[
    retarus(D::FaxInUdr, "fax_in_udr", "retarus.fax_in_udr"),
    retarus(D::FaxOutUdr, "fax_out_udr", "retarus.fax_out_udr"),
    retarus(D::SmsInUdr, "sms_in_udr", "retarus.sms_in_udr"),
    retarus(D::SmsOutUdr, "sms_out_udr", "retarus.sms_out_udr"),
    retarus(
        D::TransactionalEmailUdr,
        "transactional_email_udr",
        "retarus.transactional_email_udr",
    ),
    other(
        D::Locations,
        Roubler,
        "locations",
        "roubler.locations",
        Snapshot,
        None,
    ),
    other(
        D::Employees,
        Roubler,
        "employees",
        "roubler.employees",
        Snapshot,
        None,
    ),
    DatasetInfo {
        daily: true,
        ..other(
            D::LocationSales,
            Roubler,
            "location_sales",
            "roubler.location_sales",
            Incremental,
            Some(ROUBLER_SALES_SPAN),
        )
    },
    other(
        D::Timesheets,
        Roubler,
        "timesheets",
        "roubler.timesheets",
        Incremental,
        Some(ROUBLER_WORK_SPAN),
    ),
    other(
        D::Shifts,
        Roubler,
        "shifts",
        "roubler.shifts",
        Incremental,
        Some(ROUBLER_WORK_SPAN),
    ),
    other(D::Events, Altrata, "events", "altrata.events", Snapshot, None),
    other(
        D::Profiles,
        Altrata,
        "profiles",
        "altrata.profiles",
        Snapshot,
        None,
    ),
    other(
        D::Customers,
        Retently,
        "customers",
        "retently.customers",
        Incremental,
        None,
    ),
    other(
        D::Feedback,
        Retently,
        "feedback",
        "retently.feedback",
        Incremental,
        None,
    ),
    other(
        D::Companies,
        Retently,
        "companies",
        "retently.companies",
        Snapshot,
        None,
    ),
    other(
        D::Campaigns,
        Retently,
        "campaigns",
        "retently.campaigns",
        Snapshot,
        None,
    ),
    other(
        D::NpsScore,
        Retently,
        "nps_score",
        "retently.nps_score",
        Snapshot,
        None,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_sits_at_its_datasets_index_and_names_are_unique() {
        for (index, row) in CATALOG.iter().enumerate() {
            assert_eq!(row.id as usize, index, "{} is out of place", row.name);
            assert_eq!(Dataset::from_name(row.name), Some(row.id));
            assert!(row.table.starts_with(&format!("{}.", row.kind)), "{}", row.table);
        }
        let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }

    #[test]
    fn an_unknown_dataset_is_refused_naming_the_value_and_the_known_ones() {
        let error = serde_json::from_str::<Dataset>("\"fax_udr\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`fax_udr`") && error.contains("fax_out_udr"),
            "{error}"
        );
        assert_eq!(
            serde_json::from_str::<Dataset>("\"nps_score\"").unwrap(),
            Dataset::NpsScore
        );
    }

    #[test]
    fn retarus_history_is_one_fact_inside_the_documented_90_days() {
        for row in SourceKind::Retarus.datasets() {
            assert_eq!(row.history_limit, RETARUS_HISTORY);
            assert!(row.history_limit < TimeDelta::days(90));
        }
    }
}
