//! Vendors: one folder per vendor (`retarus/`, `roubler/`, `altrata/`, `retently/`) holding what
//! it takes to extract its datasets: its typed queries, row mapping, paging and table layouts
//! (`datasets.rs`), and where its scopes come from. Each folder implements [`Vendor`]; the
//! registry, [`vendor`], is the one place a [`SourceKind`] picks a folder.
//!
//! The runner, the tests and the benchmarks call [`load`] and [`discover_scopes_cached`] here; the
//! shared machinery below (`datasets`' page writer and windows, the executor) knows no vendor by
//! name. What the vendors document and what we inferred is in `docs/vendors/`.
//!
//! Adding a dataset: a [`crate::catalog::Dataset`] variant and catalogue row, its query file in
//! `queries/<vendor>/`, its row struct (`table_row!`) and load arm in
//! `src/vendors/<vendor>/datasets.rs`, a migration, and tests.

mod altrata;
mod retarus;
mod retently;
mod roubler;

/// The row structs of the vendor tables (see [`crate::datasets::rows`]): one per table, its
/// fields the table's data columns in write order. Public so tests and tools can stage rows
/// through [`crate::datasets::sink::Writer`] without going through a vendor's mapping.
pub mod rows {
    pub use super::altrata::datasets::{EventRow, ProfileRow};
    pub use super::retarus::datasets::{EmailRow, FaxInRow, FaxOutRow, SmsInRow, SmsOutRow};
    pub use super::retently::datasets::{CampaignRow, CompanyRow, CustomerRow, FeedbackRow, NpsScoreRow};
    pub use super::roubler::datasets::{EmployeeRow, LocationRow, LocationSalesRow, ShiftRow, TimesheetRow};
}

use anyhow::Context;
use futures::future::BoxFuture;

use crate::catalog::{Dataset, DatasetInfo, SourceKind};
use crate::config::{Scope, SourceSettings};
use crate::datasets::{DiscoveredBy, LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::{CallContext, Executor};

/// What the crate asks of a vendor. Implemented once per vendor folder.
pub(crate) trait Vendor: Sync {
    /// The table layout of one of this vendor's datasets (its columns in write order and its
    /// natural key); `None` for another vendor's dataset.
    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec>;

    /// The scopes `configured` covers for `dataset`, asked of the vendor if it must be.
    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>>;

    /// Like [`Vendor::scopes`], reusing a recent discovery from `etl.scope_cache` where the vendor
    /// charges calls for it. Vendors whose scopes come from the configuration need not override it.
    fn scopes_cached<'a>(
        &'a self,
        job: ScopeQuery<'a>,
        _pool: &'a sqlx::PgPool,
    ) -> BoxFuture<'a, anyhow::Result<(Vec<ScopeTarget>, DiscoveredBy)>> {
        Box::pin(async move { Ok((self.scopes(job).await?, DiscoveredBy::Configuration)) })
    }

    /// Stages one scope's window (or the whole scope, for snapshots) of one of its datasets into
    /// `sink`, which the caller then swaps in (see [`load`]).
    fn load<'a>(
        &'a self,
        exec: &'a Executor,
        sink: &'a mut Sink,
        request: &'a LoadRequest<'a>,
        tuning: &'a Tuning,
    ) -> BoxFuture<'a, anyhow::Result<LoadFigures>>;
}

/// What a scope discovery is asked about: a job's dataset and configured scope on one source.
#[derive(Clone, Copy)]
pub(crate) struct ScopeQuery<'a> {
    pub exec: &'a Executor,
    pub call: &'a CallContext,
    pub source_name: &'a str,
    pub source: &'a SourceSettings,
    pub dataset: &'static DatasetInfo,
    pub configured: &'a Scope,
}

/// The registry: the vendor folder serving `kind`.
fn vendor(kind: SourceKind) -> &'static dyn Vendor {
    match kind {
        SourceKind::Retarus => &retarus::Retarus,
        SourceKind::Roubler => &roubler::Roubler,
        SourceKind::Altrata => &altrata::Altrata,
        SourceKind::Retently => &retently::Retently,
    }
}

/// Fails unless `source` is of the kind that serves `dataset`.
fn check_kind(source_name: &str, source: &SourceSettings, dataset: &DatasetInfo) -> anyhow::Result<()> {
    if source.kind() != dataset.kind {
        anyhow::bail!(
            "source {source_name} is a {} source, but dataset {}.{} was asked of it",
            source.kind(),
            dataset.kind,
            dataset.name
        );
    }
    Ok(())
}

impl<'a> ScopeQuery<'a> {
    /// The question, once `source` is known to serve `dataset`.
    fn new(
        exec: &'a Executor,
        call: &'a CallContext,
        source_name: &'a str,
        source: &'a SourceSettings,
        dataset: &'static DatasetInfo,
        configured: &'a Scope,
    ) -> anyhow::Result<Self> {
        check_kind(source_name, source, dataset)?;
        Ok(ScopeQuery {
            exec,
            call,
            source_name,
            source,
            dataset,
            configured,
        })
    }
}

/// The table layout of a dataset (its columns in write order and its natural key).
pub fn table_spec(dataset: &DatasetInfo) -> Option<&'static TableSpec> {
    vendor(dataset.kind).table(dataset.id)
}

/// The scopes a job covers, asked of the vendor now where it must be.
///
/// - Retarus: `all` → the source's `customer_ids`; a list → those customer ids.
/// - Roubler: companies or locations, discovered (`src/vendors/roubler/scopes.rs`).
/// - Altrata: one watch-list, the source's `watch_ids` (or the job's list).
/// - Retently: the account.
pub async fn discover_scopes(
    exec: &Executor,
    call: &CallContext,
    source_name: &str,
    source: &SourceSettings,
    dataset: &'static DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<Vec<ScopeTarget>> {
    let job = ScopeQuery::new(exec, call, source_name, source, dataset, configured)?;
    vendor(dataset.kind).scopes(job).await
}

/// Like [`discover_scopes`], but a source that discovers upstream (Roubler) reuses the scopes in
/// `etl.scope_cache` while they are younger than its `discovery_ttl_secs`.
///
/// A cache that cannot be read or written is logged and bypassed: discovery then costs calls,
/// but the job runs. Callers that may run at once for one source should serialise calls of it
/// (the runner does), or each may ask the vendor.
pub(crate) async fn discover_scopes_cached(
    exec: &Executor,
    pool: &sqlx::PgPool,
    call: &CallContext,
    source_name: &str,
    source: &SourceSettings,
    dataset: &'static DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<(Vec<ScopeTarget>, DiscoveredBy)> {
    let job = ScopeQuery::new(exec, call, source_name, source, dataset, configured)?;
    vendor(dataset.kind).scopes_cached(job, pool).await
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
    check_kind(request.source_name, request.source, dataset)?;
    let what = format!(
        "loading {}.{} for {} of source {}",
        dataset.kind,
        dataset.name,
        request.scope.describe(),
        request.source_name
    );
    vendor(dataset.kind)
        .load(exec, sink, request, tuning)
        .await
        .context(what)
}

/// Stages and swaps in one window on a connection of `pool`, without a run record or watermark
/// (the runner adds those inside the swap): for tests, benchmarks and tools. The figures' rows
/// are the distinct rows the swap wrote. Its answers are archived as the runner archives a
/// window's (`archive` schema), under the job name `<source>.<dataset>` and the request's run id.
pub async fn load_window(
    exec: &Executor,
    pool: &sqlx::PgPool,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let mut sink = Sink::acquire(pool).await?;
    let recorder = std::sync::Arc::new(crate::archive::Recorder::new());
    let job = format!("{}.{}", request.source_name, request.dataset.name);
    sink.archive(recorder.clone(), request.archive_window(&job));
    let call = request.call.clone().with_archive(recorder);
    let request = LoadRequest {
        call: &call,
        ..*request
    };
    swap_window(exec, sink, &request, tuning, None).await
}

/// Like [`load_window`], from the archive of run `archived_run` instead of the upstream (no call
/// is sent; see [`crate::archive::replay`]); nothing new is archived.
pub async fn rebuild_window(
    exec: &Executor,
    pool: &sqlx::PgPool,
    request: &LoadRequest<'_>,
    archived_run: i64,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let sink = Sink::acquire(pool).await?;
    let window = format!("archived run {archived_run}");
    let replay = crate::archive::Replay::open(pool, Some(archived_run), window).await?;
    let replay = std::sync::Arc::new(replay);
    let call = request.call.clone().with_replay(replay.clone());
    let request = LoadRequest {
        call: &call,
        ..*request
    };
    swap_window(exec, sink, &request, tuning, Some(&replay)).await
}

async fn swap_window(
    exec: &Executor,
    mut sink: Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
    replay: Option<&crate::archive::Replay>,
) -> anyhow::Result<LoadFigures> {
    let mut figures = load_with(exec, &mut sink, request, tuning).await?;
    if let Some(replay) = replay {
        replay.check_all_used()?;
    }
    let (tx, rows) = sink.begin_swap().await?;
    tx.commit().await.context("committing the window")?;
    sink.finish();
    figures.rows = rows;
    Ok(figures)
}
