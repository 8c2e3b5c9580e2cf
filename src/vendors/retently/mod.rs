//! Retently (NPS surveys): a REST API with a static API key or OAuth2 authorization code, paged
//! by `page`/`limit` (`docs/vendors/retently.md`). Its one scope is the account.

pub mod datasets;
mod list;
mod settings;

use futures::future::BoxFuture;

use super::{ScopeQuery, Vendor};
use crate::catalog::{Dataset, SourceKind};
use crate::config::{SectionKind, parse_section};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::Executor;
pub use settings::RetentlySettings;

pub(super) struct Retently;

/// `kind = "retently"`, also the database schema of its tables.
pub const KIND: SourceKind = SourceKind::new("retently");

/// The `kind = "retently"` section's reader.
pub(super) const SECTION: SectionKind = SectionKind {
    kind: KIND,
    parse: parse_section::<RetentlySettings>,
};

/// A REST API: no GraphQL schema for a drift check to walk.
impl Vendor for Retently {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    /// The account. No call.
    fn scopes<'a>(&'a self, _job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(async { Ok(vec![ScopeTarget::Account]) })
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
