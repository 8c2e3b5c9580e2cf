//! Altrata (events and profiles of watched people and organisations): GraphQL services with
//! client credentials over Basic auth and an `x-api-key`, cursor paging and a daily quota
//! (`docs/vendors/altrata.md`). Its one scope is the watch-list.

mod answers;
pub mod datasets;
mod settings;

use futures::future::BoxFuture;

use super::{Graphql, ScopeQuery, Vendor};
use crate::catalog::{Dataset, SourceKind};
use crate::config::{Scope, SectionKind, parse_section};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::{Executor, Service};
pub use settings::AltrataSettings;

pub(super) struct Altrata;

/// `kind = "altrata"`, also the database schema of its tables.
pub const KIND: SourceKind = SourceKind::new("altrata");

/// The `kind = "altrata"` section's reader.
pub(super) const SECTION: SectionKind = SectionKind {
    kind: KIND,
    parse: parse_section::<AltrataSettings>,
};

/// The events service (`events_url`).
pub const EVENTS: Service = Service("events");
/// The profile service (`profile_url`).
pub const PROFILE: Service = Service("profile");

impl Vendor for Altrata {
    fn kind(&self) -> SourceKind {
        KIND
    }

    /// Two services, introspected separately (they may differ); one schema file for both.
    fn graphql(&self) -> Option<&'static Graphql> {
        Some(&Graphql {
            schema: include_str!("../../../schemas/altrata.graphql"),
            services: &[EVENTS, PROFILE],
            queries: datasets::QUERIES,
        })
    }

    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    /// One watch-list: the source's `watch_ids`, or the job's list. No call.
    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(async move {
            let Some(settings) = job.source.section::<AltrataSettings>() else {
                anyhow::bail!("source {} is not an Altrata source", job.source_name);
            };
            let ids = match job.configured {
                Scope::All => settings.watch_ids.clone(),
                Scope::Ids(ids) => ids.clone(),
            };
            if ids.is_empty() {
                anyhow::bail!(
                    "source {} has no watch_ids and the job lists no ids: nothing to load",
                    job.source_name
                );
            }
            Ok(vec![ScopeTarget::WatchList(ids)])
        })
    }

    fn load<'a>(
        &'a self,
        exec: &'a Executor,
        sink: &'a mut Sink,
        request: &'a LoadRequest<'a>,
        tuning: &'a Tuning,
    ) -> BoxFuture<'a, anyhow::Result<LoadFigures>> {
        Box::pin(datasets::load(exec, sink, request, tuning))
    }
}
