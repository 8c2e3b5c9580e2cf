//! Roubler (workforce: locations, employees, sales, timesheets, shifts): a regional GraphQL API
//! with OAuth2 authorization code and single-use rotating refresh tokens, 100 calls a minute
//! (`docs/vendors/roubler.md`). Its scopes (companies and their locations) are discovered, and
//! the discovery is cached (`scopes.rs`).

mod answers;
pub mod datasets;
mod scopes;
mod settings;

use futures::future::BoxFuture;

use super::{Graphql, ScopeQuery, Vendor};
use crate::catalog::{Dataset, SourceKind};
use crate::config::{SectionKind, parse_section};
use crate::datasets::{DiscoveredBy, LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::{Executor, Service};
pub use settings::RoublerSettings;

pub(super) struct Roubler;

/// `kind = "roubler"`, also the database schema of its tables.
pub const KIND: SourceKind = SourceKind::new("roubler");

/// The `kind = "roubler"` section's reader.
pub(super) const SECTION: SectionKind = SectionKind {
    kind: KIND,
    parse: parse_section::<RoublerSettings>,
};

impl Vendor for Roubler {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn graphql(&self) -> Option<&'static Graphql> {
        Some(&Graphql {
            schema: include_str!("../../../schemas/roubler.graphql"),
            services: &[Service::DEFAULT],
            queries: datasets::QUERIES,
        })
    }

    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(scopes::discover(
            job.exec,
            job.call,
            job.source_name,
            job.dataset,
            job.configured,
        ))
    }

    fn scopes_cached<'a>(
        &'a self,
        job: ScopeQuery<'a>,
        pool: &'a sqlx::PgPool,
    ) -> BoxFuture<'a, anyhow::Result<(Vec<ScopeTarget>, DiscoveredBy)>> {
        Box::pin(async move {
            let Some(ttl) = job.source.discovery_ttl() else {
                return Ok((self.scopes(job).await?, DiscoveredBy::Vendor));
            };
            scopes::discover_cached(
                job.exec,
                pool,
                job.call,
                job.source_name,
                ttl,
                job.dataset,
                job.configured,
            )
            .await
        })
    }

    fn load<'a>(
        &'a self,
        exec: &'a Executor,
        sink: &'a mut Sink,
        request: &'a LoadRequest<'a>,
        _tuning: &'a Tuning,
    ) -> BoxFuture<'a, anyhow::Result<LoadFigures>> {
        Box::pin(datasets::load(exec, sink, request))
    }
}
