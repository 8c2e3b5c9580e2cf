//! Datasets: what each vendor offers for extraction, how it is windowed, and where its rows go.
//!
//! What each dataset is (its vendor, table and windows) is in [`crate::catalog`]. A dataset
//! knows *what* to ask and *where rows go*, never *how to call* (that is the executor's job).
//!
//! # Layout
//!
//! - This file: the loading API the runner calls ([`discover_scopes`],
//!   [`split_windows`], [`load`]).
//! - [`window`]: [`Window`], the legal window sizes per vendor and local-day arithmetic.
//! - [`scope`]: [`ScopeTarget`] and scope discovery (Retarus customers, Roubler companies and
//!   locations, the Altrata watch-list, the Retently account).
//! - [`rows`] / [`sink`]: typed cells and the page writer (COPY into a staging table, then an upsert
//!   on the natural key), shared by every vendor.
//! - `retarus`, `roubler`, `altrata`, `retently`: one module per vendor with its typed queries,
//!   row mapping and paging loop.

mod altrata;
mod retarus;
mod retently;
mod roubler;
pub mod rows;
pub mod scope;
pub mod sink;
pub mod window;

use anyhow::Context;

use crate::config::SourceSettings;
use crate::executor::{CallContext, Executor};

pub use scope::{DiscoveredBy, ScopeTarget, discover_scopes, discover_scopes_cached};
pub use sink::TableSpec;
pub use window::{Window, split_windows, split_windows_at};

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

/// Page sizes and similar knobs. [`load`] uses [`Tuning::default`]; tests and the benchmark
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
pub const RETARUS_MAX_PAGE_SIZE: i64 = 10_000;

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

/// Replaces one scope's window (or, for snapshots, the whole scope) of a dataset with what the
/// upstream serves now. Runs inside the caller's transaction: a failure part-way leaves the
/// previous rows once the caller rolls back.
pub async fn load(
    exec: &Executor,
    tx: &mut sqlx::PgConnection,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    load_with(exec, tx, request, &Tuning::default()).await
}

/// [`load`] with explicit page sizes.
pub async fn load_with(
    exec: &Executor,
    tx: &mut sqlx::PgConnection,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let dataset = request.dataset;
    if request.source.kind() != dataset.kind {
        anyhow::bail!(
            "source {} is a {} source, but dataset {}.{} was asked of it",
            request.source_name,
            request.source.kind(),
            dataset.kind,
            dataset.name
        );
    }
    let what = format!(
        "loading {}.{} for {} of source {}",
        dataset.kind,
        dataset.name,
        request.scope.describe(),
        request.source_name
    );
    match dataset.kind {
        SourceKind::Retarus => retarus::load(exec, tx, request, tuning).await,
        SourceKind::Roubler => roubler::load(exec, tx, request).await,
        SourceKind::Altrata => altrata::load(exec, tx, request, tuning).await,
        SourceKind::Retently => retently::load(exec, tx, request, tuning).await,
    }
    .context(what)
}

/// The table layout of a dataset (its columns in write order and its natural key).
pub fn table_spec(dataset: &DatasetInfo) -> Option<&'static TableSpec> {
    match dataset.kind {
        SourceKind::Retarus => retarus::table(dataset.name),
        SourceKind::Roubler => roubler::table(dataset.name),
        SourceKind::Altrata => altrata::table(dataset.name),
        SourceKind::Retently => retently::table(dataset.name),
    }
}
