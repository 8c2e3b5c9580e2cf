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

use crate::catalog::DatasetInfo;

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

/// Page sizes and similar knobs (the vendors' limits: `docs/vendors/README.md`, "At a glance"). `vendors::load` uses [`Tuning::default`]; tests and the benchmark
/// shrink or grow pages to exercise paging.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Retarus `size` (the vendor allows at most 10,000).
    pub retarus_page_size: i64,
    /// Altrata `pageInfo.first` (the sandbox and, presumably, the vendor allow at most 50).
    pub altrata_page_size: i64,
    /// Retently `limit` (documented maximum 1,000).
    pub retently_page_size: i64,
    /// Rows buffered before a write, for resources that come one record per call (profiles).
    pub flush_rows: usize,
}

/// Retarus' documented maximum page size.
pub(crate) const RETARUS_MAX_PAGE_SIZE: i64 = 10_000;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retarus_page_size: RETARUS_MAX_PAGE_SIZE,
            altrata_page_size: 50,
            retently_page_size: 1_000,
            flush_rows: 500,
        }
    }
}
