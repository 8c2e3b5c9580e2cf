//! Vendors: a vendor is a plug-in. One folder per vendor (`retarus/`, `roubler/`, `altrata/`,
//! `retently/`) holds everything it is:
//!
//! - `settings.rs`: its configuration section (keys, defaults, endpoints, validation), and what
//!   it hands the layers below (`config::Section::parts`): its auth dialect (`auth::AuthSetup`:
//!   which flow, how a token request authenticates, whether a new token kills the old) and its
//!   call setup (`executor::CallSetup`: endpoints, API key, answer dialect);
//! - `answers.rs`: how its answers classify into failure kinds (`executor::classify::Dialect`);
//! - `datasets.rs`: its datasets (a `Dataset` constant each, with its facts, listed in
//!   `DATASETS`), typed queries, row mapping, paging and table layouts;
//! - `mod.rs`: its `KIND` (`sources.NAME.kind`, also its database schema), its [`Vendor`]
//!   implementation (scopes, loads, the GraphQL schema and queries a drift check walks) and its
//!   [`SectionKind`].
//!
//! The [`registry!`] below registers every vendor with one line and gathers their kinds and
//! datasets into [`CATALOG`] (`crate::catalog::Catalog`), which the layers below get handed
//! ([`REGISTRY`] for the configuration); outside this directory only the demo's sandbox
//! sources (`src/cli/demo.rs`) name a vendor. The runner, the tests and the benchmarks call
//! [`load`] and [`discover_scopes_cached`] here; the shared machinery below (the configuration, auth, the
//! executor, `datasets`' page writer and windows) knows no vendor by name. What the vendors
//! document and what we inferred is in `docs/vendors/`; `docs/adding-a-vendor.md` and
//! `docs/adding-a-dataset.md` list the files a change touches.

/// Declares each vendor folder and registers it: one line per vendor, `folder::Vendor`. The
/// folder must define the unit struct `Vendor` (implementing [`Vendor`]), its `KIND`, its
/// `SECTION` and, in `datasets.rs`, its `DATASETS`.
macro_rules! registry {
    ($($folder:ident :: $vendor:ident),* $(,)?) => {
        $(pub mod $folder;)*

        /// Every vendor, in the order the README and messages list them.
        const VENDORS: &[&dyn Vendor] = &[$(&$folder::$vendor),*];

        /// Every vendor's configuration section reader.
        pub const SECTIONS: Sections = &[$($folder::SECTION),*];

        /// Every vendor's kind and datasets, for the layers that look a name up.
        pub const CATALOG: Catalog = Catalog::new(&[$(Shelf {
            kind: $folder::KIND,
            datasets: $folder::datasets::DATASETS,
        }),*]);
    };
}

registry! {
    retarus::Retarus,
    roubler::Roubler,
    altrata::Altrata,
    retently::Retently,
}

use anyhow::Context;
use futures::future::BoxFuture;

use crate::catalog::{Catalog, Dataset, DatasetInfo, Shelf, SourceKind};
use crate::config::{Registry, Scope, Sections, SourceSettings};
use crate::datasets::{DiscoveredBy, LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::{CallContext, Executor, Service};

/// What the configuration is handed of the vendors (`config::Settings::load`): their section
/// readers and their catalogue.
pub const REGISTRY: Registry = Registry {
    sections: SECTIONS,
    catalog: CATALOG,
};

/// What the crate asks of a vendor. Implemented once per vendor folder.
pub(crate) trait Vendor: Sync {
    /// The kind this folder serves (`sources.NAME.kind`).
    fn kind(&self) -> SourceKind;

    /// The GraphQL schema its queries were compiled against, its services and its compiled
    /// queries (what `check --upstream` and `schema pull` walk); `None` for a REST vendor.
    fn graphql(&self) -> Option<&'static Graphql> {
        None
    }

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

/// A vendor's GraphQL side: what a drift check compares with the live schema.
pub struct Graphql {
    /// The SDL under `schemas/` the queries were compiled against.
    pub schema: &'static str,
    /// Its services, each introspected separately (the first is `schema pull`'s default).
    pub services: &'static [Service],
    /// Every query compiled into the binary for this vendor.
    pub queries: &'static [CompiledQuery],
}

/// A query compiled into the binary: the same file a `graphql_client` derive in
/// `src/vendors/<vendor>/datasets.rs` was generated from (`include_str!` of the same path, so
/// both change together), and the service it is sent to.
pub struct CompiledQuery {
    /// Relative to the repository root, as printed.
    pub path: &'static str,
    pub service: Service,
    pub text: &'static str,
}

/// A [`CompiledQuery`] of the file at `$path` (relative to the repository root).
macro_rules! compiled {
    ($service:expr, $path:literal) => {
        $crate::vendors::CompiledQuery {
            path: $path,
            service: $service,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)),
        }
    };
}
use compiled;

/// The vendor folder serving `kind` (every kind has one: a test checks it).
fn vendor(kind: SourceKind) -> Option<&'static dyn Vendor> {
    VENDORS.iter().copied().find(|v| v.kind() == kind)
}

/// The vendor folder serving `kind`, or an error naming it.
fn vendor_for(kind: SourceKind) -> anyhow::Result<&'static dyn Vendor> {
    vendor(kind).ok_or_else(|| anyhow::anyhow!("no vendor is registered for kind {kind}"))
}

/// The GraphQL side of the vendor of `kind`; `None` for a REST vendor.
pub(crate) fn graphql(kind: SourceKind) -> Option<&'static Graphql> {
    vendor(kind).and_then(Vendor::graphql)
}

/// Every registered vendor's kind with its GraphQL side, in registry order.
pub(crate) fn graphql_vendors() -> impl Iterator<Item = (SourceKind, Option<&'static Graphql>)> {
    VENDORS.iter().map(|v| (v.kind(), v.graphql()))
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
pub fn table_spec(dataset: &'static DatasetInfo) -> Option<&'static TableSpec> {
    vendor(dataset.kind)?.table(dataset.id())
}

/// The scopes a job covers, asked of the vendor now where it must be (each vendor's
/// [`Vendor::scopes`] says where they come from).
pub async fn discover_scopes(
    exec: &Executor,
    call: &CallContext,
    source_name: &str,
    source: &SourceSettings,
    dataset: &'static DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<Vec<ScopeTarget>> {
    let job = ScopeQuery::new(exec, call, source_name, source, dataset, configured)?;
    vendor_for(dataset.kind)?.scopes(job).await
}

/// Like [`discover_scopes`], but a source that discovers upstream reuses the scopes in
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
    vendor_for(dataset.kind)?.scopes_cached(job, pool).await
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
    vendor_for(dataset.kind)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthSetup;
    use crate::config::Settings;
    use crate::executor::CallSetup;

    /// One source of every kind, as small as validation allows.
    const EVERY_KIND: &str = r#"
        [sources.r]
        kind = "retarus"
        client_id = "c"
        client_secret = "s"
        customer_ids = ["1"]
        [sources.o]
        kind = "roubler"
        graphql_url = "https://graphql.example/graphql"
        client_id = "c"
        client_secret = "s"
        [sources.a]
        kind = "altrata"
        username = "u"
        password = "p"
        api_key = "k"
        [sources.t]
        kind = "retently"
        api_key = "k"
    "#;

    #[test]
    fn every_kind_has_one_vendor_and_every_vendor_hands_every_part() {
        for kind in CATALOG.kinds() {
            let serving: Vec<_> = VENDORS.iter().filter(|v| v.kind() == kind).collect();
            assert_eq!(serving.len(), 1, "{kind}");
            assert_eq!(SECTIONS.iter().filter(|s| s.kind == kind).count(), 1, "{kind}");
            for dataset in CATALOG.of_kind(kind) {
                assert!(
                    table_spec(dataset).is_some(),
                    "{}.{} has no table",
                    kind,
                    dataset.name
                );
            }
        }
        let settings = Settings::from_toml_str(EVERY_KIND, REGISTRY).expect("valid");
        let kinds: Vec<_> = settings.sources.values().map(SourceSettings::kind).collect();
        assert_eq!(kinds.len(), CATALOG.kinds().count(), "{kinds:?}");
        for (name, source) in &settings.sources {
            assert!(source.part::<AuthSetup>().is_some(), "{name}: no auth setup");
            assert!(source.part::<CallSetup>().is_some(), "{name}: no call setup");
        }
    }

    #[test]
    fn every_dataset_is_its_vendors_with_a_unique_name_and_a_table_in_its_schema() {
        for shelf in CATALOG.shelves() {
            for dataset in shelf.datasets.iter().map(|d| d.info()) {
                assert_eq!(
                    dataset.kind, shelf.kind,
                    "{} is listed by another vendor",
                    dataset.name
                );
                assert!(
                    dataset.table.starts_with(&format!("{}.", dataset.kind)),
                    "{}",
                    dataset.table
                );
                assert_eq!(CATALOG.dataset(dataset.name), Some(dataset.id()));
            }
        }
        let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "dataset names are not unique");
        let kinds: std::collections::BTreeSet<_> = CATALOG.kinds().collect();
        assert_eq!(kinds.len(), VENDORS.len(), "two vendors share a kind");
    }

    #[test]
    fn every_compiled_query_is_its_vendors_and_goes_to_one_of_its_services() {
        for (kind, graphql) in graphql_vendors() {
            let Some(graphql) = graphql else { continue };
            for query in graphql.queries {
                assert!(
                    query.path.starts_with(&format!("queries/{kind}/")),
                    "{}",
                    query.path
                );
                assert!(graphql.services.contains(&query.service), "{}", query.path);
            }
        }
    }
}
