//! Datasets: what each vendor offers for extraction, how it is windowed, and where its rows go.
//!
//! [`CATALOG`] is the single list of dataset names the configuration is validated against and
//! that `jobs` / the README show. A dataset knows *what* to ask and *where rows go*, never *how
//! to call* (that is the executor's job).
//!
//! # Layout
//!
//! - This file: the catalog and the loading API the runner calls ([`discover_scopes`],
//!   [`split_windows`], [`load`]).
//! - [`window`]: [`Window`], the legal window sizes per vendor and local-day arithmetic.
//! - [`scope`]: [`ScopeTarget`] and scope discovery (Retarus customers, Roubler companies and
//!   locations, the Altrata watch-list, the Retently account).
//! - [`rows`] / [`sink`]: typed cells and the page writer (pages COPYed into a staging table
//!   outside any transaction, then swapped into the table in one short transaction), shared by
//!   every vendor.
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
pub use sink::{Sink, TableSpec};
pub use window::{Window, split_windows, split_windows_at};

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

/// Stages one scope's window (or, for snapshots, the whole scope) of a dataset as the upstream
/// serves it now into `sink`; [`Sink::begin_swap`] then replaces the window's rows with it in one
/// transaction. Nothing is written to the table before that: a failure part-way leaves the
/// previous rows.
pub async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    load_with(exec, sink, request, &Tuning::default()).await
}

/// [`load`] with explicit page sizes.
pub async fn load_with(
    exec: &Executor,
    sink: &mut Sink,
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
        SourceKind::Retarus => retarus::load(exec, sink, request, tuning).await,
        SourceKind::Roubler => roubler::load(exec, sink, request).await,
        SourceKind::Altrata => altrata::load(exec, sink, request, tuning).await,
        SourceKind::Retently => retently::load(exec, sink, request, tuning).await,
    }
    .context(what)
}

/// Stages and swaps in one window on a connection of `pool`, without a run record or watermark
/// (the runner adds those inside the swap): for tests, benchmarks and tools. The figures' rows
/// are the distinct rows the swap wrote.
pub async fn load_window(
    exec: &Executor,
    pool: &sqlx::PgPool,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let mut sink = Sink::acquire(pool).await?;
    let mut figures = load_with(exec, &mut sink, request, tuning).await?;
    let (tx, rows) = sink.begin_swap().await?;
    tx.commit().await.context("committing the window")?;
    sink.finish();
    figures.rows = rows;
    Ok(figures)
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
