//! Datasets: the machinery every vendor's loads share, knowing no vendor by name.
//!
//! What each dataset is (its vendor, table and windows) is in [`crate::catalog`]; how each vendor
//! is asked for it (queries, row mapping, paging, scope discovery) is in `src/vendors/<vendor>/`,
//! reached through `vendors::load`. A load knows *what* to ask and *where rows go*, never *how
//! to call* (that is the executor's job).
//!
//! # Layout
//!
//! - This file: what a load is given ([`LoadRequest`]) and reports ([`LoadFigures`]).
//! - [`window`]: [`Window`], the cut of a range into the dataset's legal sizes, local-day
//!   arithmetic.
//! - [`scope`]: [`ScopeTarget`], the unit a dataset is loaded per.
//! - [`rows`] / [`sink`]: row structs (one per table, declared with `table_row!`) and the page
//!   writer (pages COPYed into a staging table outside any transaction, then swapped into the
//!   table in one short transaction), shared by every vendor.
//! - [`seen`]: [`seen::SeenInLoad`], the check that a load's pages are not cycling.

pub mod instant;
pub mod rows;
pub mod scope;
pub mod seen;
pub mod sink;
pub mod window;

use crate::config::SourceSettings;
use crate::executor::CallContext;

pub(crate) use scope::DiscoveredBy;
pub use scope::ScopeTarget;
pub use sink::{Sink, TableSpec};
pub(crate) use window::split_windows;
pub use window::{Window, split_windows_at};

use std::collections::BTreeMap;

use crate::catalog::{DatasetInfo, SourceKind};

/// Everything one load needs: which dataset of which source, for which scope and window, and
/// the run the rows belong to.
pub struct LoadRequest<'a> {
    /// The configured source name (goes into every row's `source` column).
    pub source_name: &'a str,
    pub source: &'a SourceSettings,
    pub dataset: &'static DatasetInfo,
    pub scope: &'a ScopeTarget,
    /// `None` for snapshot datasets.
    pub window: Option<Window>,
    /// `etl.runs.id`; every written row carries it as `_run_id`.
    pub run_id: i64,
    pub call: &'a CallContext,
}

impl LoadRequest<'_> {
    /// The archive's record of this load as a window of `job` (see [`crate::archive`]).
    pub fn archive_window(&self, job: &str) -> crate::archive::stage::ArchiveWindow {
        crate::archive::stage::ArchiveWindow {
            run_id: self.run_id,
            job: job.to_owned(),
            source: self.source_name.to_owned(),
            dataset: self.dataset.name.to_owned(),
            scope: self.scope.key(),
            scope_target: self.scope.to_json(),
            window: self.window.map(|w| (w.start, w.end)),
        }
    }
}

/// What a load did, for the run record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadFigures {
    /// Distinct rows written (inserted or replaced) for this scope and window.
    pub rows: i64,
    /// Upstream pages (or calls, for unpaged resources) read.
    pub pages: i32,
    /// Non-fatal notes: fields withheld by the subscription, records skipped and why.
    pub warnings: Vec<String>,
}

/// Page sizes and similar knobs. `vendors::load` uses [`Tuning::default`]: every vendor pages
/// at its documented maximum (`docs/vendors/README.md`, "At a glance"), which its folder knows;
/// tests and the benchmark shrink a vendor's pages to exercise paging.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Page sizes asked for, per vendor kind; a vendor not named pages at its maximum, and no
    /// vendor exceeds its maximum whatever is asked.
    page_sizes: BTreeMap<SourceKind, i64>,
    /// Rows buffered before a write, for resources that come one record per call (profiles).
    pub flush_rows: usize,
}

impl Tuning {
    /// Pages of `size` records for the vendor of `kind`.
    pub fn with_page_size(mut self, kind: SourceKind, size: i64) -> Tuning {
        self.page_sizes.insert(kind, size);
        self
    }

    /// Writes every `rows` rows of one-record-per-call resources.
    pub fn with_flush_rows(mut self, rows: usize) -> Tuning {
        self.flush_rows = rows;
        self
    }

    /// The page size for the vendor of `kind`, whose maximum is `max`: what was asked, within
    /// 1..=max, else `max`.
    pub fn page_size(&self, kind: SourceKind, max: i64) -> i64 {
        self.page_sizes
            .get(&kind)
            .map_or(max, |size| (*size).clamp(1, max))
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            page_sizes: BTreeMap::new(),
            flush_rows: 500,
        }
    }
}
