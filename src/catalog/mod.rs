//! The catalogue's types: a vendor kind, a dataset and the facts the rest of the crate needs
//! about each, and the [`Catalog`] that gathers every registered vendor's datasets.
//!
//! A leaf module: it imports nothing from the crate, so the configuration, the loaders, the
//! runner and the command line can all depend on it without depending on each other. It names
//! no vendor and no dataset: each vendor folder declares its kind (`src/vendors/<vendor>/mod.rs`,
//! `KIND`) and its datasets (`src/vendors/<vendor>/datasets.rs`, `DATASETS`), and the vendors'
//! registry (`src/vendors/mod.rs`) gathers them into one [`Catalog`], handed down to the layers
//! below the vendors that look a name up (the configuration, the store).
//!
//! Dataset names are unique across vendors (a test in `src/vendors/mod.rs` checks it), so a
//! job's `dataset = "fax_out_udr"` names one [`Dataset`].

use std::fmt;

use chrono::TimeDelta;
use serde::Deserialize;

/// A vendor kind (`sources.NAME.kind`): its configuration name, also its database schema. Each
/// vendor folder declares its one kind as a constant (`KIND`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKind(&'static str);

impl SourceKind {
    /// The kind the configuration names `name` (`kind = "name"`).
    pub const fn new(name: &'static str) -> SourceKind {
        SourceKind(name)
    }

    /// The configuration's name for this kind (also the vendor's database schema).
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The window policies a job may ask for (`jobs.NAME.window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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

/// One dataset this service can extract: a handle to its facts, declared as a constant in its
/// vendor's `datasets.rs`. Handles compare by those facts, and a vendor matches on its own
/// constants (`match dataset { FAX_IN_UDR => …, }`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dataset(&'static DatasetInfo);

impl Dataset {
    /// The dataset of `info`, for a vendor's `datasets.rs` (`const X: Dataset = Dataset::new(&…)`).
    pub const fn new(info: &'static DatasetInfo) -> Dataset {
        Dataset(info)
    }

    /// This dataset's facts.
    pub const fn info(self) -> &'static DatasetInfo {
        self.0
    }

    /// The configuration's name of this dataset (`jobs.NAME.dataset`).
    pub(crate) fn name(self) -> &'static str {
        self.0.name
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the crate knows about one dataset.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DatasetInfo {
    /// The configuration's name (`jobs.NAME.dataset`); first, so comparing two stops at it.
    pub name: &'static str,
    pub kind: SourceKind,
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

/// Vendors that document no retention: ten years, the longest `trailing_days` allows.
const UNLIMITED_HISTORY: TimeDelta = TimeDelta::days(3650);
/// Where a first run starts without a `start`, for vendors with no retention to fill.
const FIRST_RUN: TimeDelta = TimeDelta::days(30);

impl DatasetInfo {
    /// A dataset of a vendor that documents no retention and no window limit; a vendor's
    /// `datasets.rs` overrides what differs (`DatasetInfo { max_span: …, ..DatasetInfo::new(…) }`).
    pub const fn new(
        kind: SourceKind,
        name: &'static str,
        table: &'static str,
        default_window: WindowPolicy,
    ) -> DatasetInfo {
        DatasetInfo {
            name,
            kind,
            table,
            default_window,
            max_span: None,
            history_limit: UNLIMITED_HISTORY,
            first_run: FIRST_RUN,
            daily: false,
        }
    }

    /// The typed handle of this dataset, for matching.
    pub const fn id(&'static self) -> Dataset {
        Dataset(self)
    }

    /// Whether a job may load this dataset under `policy`.
    pub(crate) fn allows(&self, policy: WindowPolicy) -> bool {
        match self.default_window {
            WindowPolicy::Snapshot => policy == WindowPolicy::Snapshot,
            _ => policy != WindowPolicy::Snapshot,
        }
    }
}

/// One vendor's part of the catalogue, declared in its folder: its kind and its datasets.
#[derive(Debug)]
pub struct Shelf {
    pub kind: SourceKind,
    /// In the order the vendor's `datasets.rs` lists them.
    pub datasets: &'static [Dataset],
}

/// Every registered vendor's kind and datasets, in registry order (the order the README and
/// messages list them). The vendors' registry builds it (`vendors::CATALOG`); layers below the
/// vendors are handed it and never name a vendor.
#[derive(Debug, Clone, Copy)]
pub struct Catalog(&'static [Shelf]);

impl Catalog {
    /// A catalogue of `shelves` (the registry's, or none).
    pub const fn new(shelves: &'static [Shelf]) -> Catalog {
        Catalog(shelves)
    }

    /// Every vendor's part, in registry order.
    pub fn shelves(self) -> &'static [Shelf] {
        self.0
    }

    /// Every kind, in registry order.
    pub fn kinds(self) -> impl Iterator<Item = SourceKind> {
        self.0.iter().map(|shelf| shelf.kind)
    }

    /// Every dataset, vendor by vendor.
    pub fn iter(self) -> impl Iterator<Item = &'static DatasetInfo> {
        self.0
            .iter()
            .flat_map(|shelf| shelf.datasets.iter().map(|d| d.info()))
    }

    /// The datasets of `kind`, in its folder's order.
    pub fn of_kind(self, kind: SourceKind) -> impl Iterator<Item = &'static DatasetInfo> {
        self.iter().filter(move |d| d.kind == kind)
    }

    /// The dataset the configuration names `name`, if any.
    pub fn dataset(self, name: &str) -> Option<Dataset> {
        self.iter().find(|d| d.name == name).map(DatasetInfo::id)
    }

    /// The dataset of this kind and name, if there is one.
    pub fn find(self, kind: SourceKind, name: &str) -> Option<&'static DatasetInfo> {
        self.of_kind(kind).find(|d| d.name == name)
    }

    /// Every dataset's name, comma-separated, for messages listing the known ones.
    pub fn names(self) -> String {
        self.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
    }
}

impl IntoIterator for Catalog {
    type Item = &'static DatasetInfo;
    type IntoIter = Box<dyn Iterator<Item = &'static DatasetInfo>>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}
