//! Datasets: what each vendor offers for extraction, how it is windowed, and where its rows go.
//!
//! [`CATALOG`] is the single list of dataset names the configuration is validated against and
//! that `jobs` / the README show. A dataset knows *what* to ask and *where rows go*, never *how
//! to call* (that is the executor's job).

use crate::config::{SourceKind, WindowPolicyName};

/// A dataset as the configuration sees it.
#[derive(Debug, Clone, Copy)]
pub struct DatasetInfo {
    pub kind: SourceKind,
    pub name: &'static str,
    /// The table rows land in.
    pub table: &'static str,
    /// The policy used when a job names none; snapshot datasets accept only snapshot.
    pub default_window: WindowPolicyName,
    pub description: &'static str,
}

impl DatasetInfo {
    pub fn allows(&self, policy: WindowPolicyName) -> bool {
        match self.default_window {
            WindowPolicyName::Snapshot => policy == WindowPolicyName::Snapshot,
            _ => policy != WindowPolicyName::Snapshot,
        }
    }
}

use SourceKind::{Altrata, Retarus, Retently, Roubler};
use WindowPolicyName::{Incremental, Snapshot};

const fn dataset(
    kind: SourceKind,
    name: &'static str,
    table: &'static str,
    default_window: WindowPolicyName,
    description: &'static str,
) -> DatasetInfo {
    DatasetInfo {
        kind,
        name,
        table,
        default_window,
        description,
    }
}

/// Every dataset this service can extract.
pub const CATALOG: &[DatasetInfo] = &[
    dataset(
        Retarus,
        "fax_in_udr",
        "retarus.fax_in_udr",
        Incremental,
        "Inbound fax usage detail records",
    ),
    dataset(
        Retarus,
        "fax_out_udr",
        "retarus.fax_out_udr",
        Incremental,
        "Outbound fax usage detail records",
    ),
    dataset(
        Retarus,
        "sms_in_udr",
        "retarus.sms_in_udr",
        Incremental,
        "Inbound SMS usage detail records",
    ),
    dataset(
        Retarus,
        "sms_out_udr",
        "retarus.sms_out_udr",
        Incremental,
        "Outbound SMS usage detail records",
    ),
    dataset(
        Retarus,
        "transactional_email_udr",
        "retarus.transactional_email_udr",
        Incremental,
        "Transactional e-mail delivery records",
    ),
    dataset(
        Roubler,
        "locations",
        "roubler.locations",
        Snapshot,
        "Locations (a tree) with their IANA time zones",
    ),
    dataset(
        Roubler,
        "employees",
        "roubler.employees",
        Snapshot,
        "Employees, terminated ones included",
    ),
    dataset(
        Roubler,
        "location_sales",
        "roubler.location_sales",
        Incremental,
        "Daily sales per location (local days)",
    ),
    dataset(
        Roubler,
        "timesheets",
        "roubler.timesheets",
        Incremental,
        "Timesheets per location",
    ),
    dataset(
        Roubler,
        "shifts",
        "roubler.shifts",
        Incremental,
        "Rostered shifts per location",
    ),
    dataset(
        Altrata,
        "events",
        "altrata.events",
        Snapshot,
        "Events about watched people and organisations",
    ),
    dataset(
        Altrata,
        "profiles",
        "altrata.profiles",
        Snapshot,
        "Person and organisation profiles of the watch-list",
    ),
    dataset(
        Retently,
        "customers",
        "retently.customers",
        Incremental,
        "Survey customers (subscribers)",
    ),
    dataset(
        Retently,
        "feedback",
        "retently.feedback",
        Incremental,
        "Survey responses",
    ),
    dataset(
        Retently,
        "companies",
        "retently.companies",
        Snapshot,
        "Companies with their survey metrics",
    ),
    dataset(
        Retently,
        "campaigns",
        "retently.campaigns",
        Snapshot,
        "Survey campaigns",
    ),
    dataset(
        Retently,
        "nps_score",
        "retently.nps_score",
        Snapshot,
        "Daily snapshot of the NPS score",
    ),
];

/// The dataset of this kind and name, if there is one.
pub fn find(kind: SourceKind, name: &str) -> Option<&'static DatasetInfo> {
    CATALOG.iter().find(|d| d.kind == kind && d.name == name)
}
