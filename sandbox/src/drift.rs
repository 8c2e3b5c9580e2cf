//! Schema drift on demand: a GraphQL vendor started with fields removed from its schema, as a
//! vendor that drops a field in a release would be.
//!
//! The schemas are async-graphql derives, which cannot lose a field at run time, so the removal
//! is an async-graphql [`Extension`] around the real schema:
//!
//! - introspection answers (`__schema`, `__type`) leave the removed fields out, so a client that
//!   introspects sees the new schema;
//! - a query that selects a removed field is refused before it runs, with the error a GraphQL
//!   server gives for an unknown field (`Unknown field "x" on type "T".`) and no data.
//!
//! A removal naming a type or field the schema does not have fails every request with a message
//! saying so, rather than starting a sandbox that silently has no drift.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{Name, Pos, Response, ServerError, ServerResult, Value, Variables};

/// One field to remove: `Type.field`, e.g. `FaxInUdr.faxId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemovedField {
    pub type_name: String,
    pub field: String,
}

impl RemovedField {
    pub fn new(type_name: impl Into<String>, field: impl Into<String>) -> Self {
        RemovedField {
            type_name: type_name.into(),
            field: field.into(),
        }
    }
}

impl std::fmt::Display for RemovedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.type_name, self.field)
    }
}

impl FromStr for RemovedField {
    type Err = String;

    /// `Type.field`; both parts must be GraphQL names.
    fn from_str(text: &str) -> Result<Self, String> {
        let name = |part: &str| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        };
        match text.split_once('.') {
            Some((type_name, field)) if name(type_name) && name(field) => {
                Ok(RemovedField::new(type_name, field))
            }
            _ => Err(format!("`{text}` is not `Type.field` (e.g. `FaxInUdr.faxId`)")),
        }
    }
}

/// Adds the removal extension to a schema under construction; no removals, no extension.
pub fn apply<Q, M, S>(
    builder: async_graphql::SchemaBuilder<Q, M, S>,
    removed: &[RemovedField],
) -> async_graphql::SchemaBuilder<Q, M, S> {
    if removed.is_empty() {
        return builder;
    }
    builder.extension(Removal(Arc::new(removed.to_vec())))
}

struct Removal(Arc<Vec<RemovedField>>);

impl ExtensionFactory for Removal {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RemovalExtension(self.0.clone()))
    }
}

struct RemovalExtension(Arc<Vec<RemovedField>>);

#[async_graphql::async_trait::async_trait]
impl Extension for RemovalExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        strip_introspection(&mut response.data, &self.0);
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let registry = &ctx.schema_env.registry;
        if let Some(unknown) = self.0.iter().find(|r| {
            registry
                .types
                .get(&r.type_name)
                .and_then(|t| t.field_by_name(&r.field))
                .is_none()
        }) {
            return Err(ServerError::new(
                format!("sandbox misconfigured: the schema has no field {unknown} to remove"),
                None,
            ));
        }
        let document = next.run(ctx, query, variables).await?;
        if let Some((removed, pos)) = first_removed_selection(registry, &document, &self.0) {
            return Err(ServerError::new(
                format!(
                    "Unknown field \"{}\" on type \"{}\".",
                    removed.field, removed.type_name
                ),
                Some(pos),
            ));
        }
        Ok(document)
    }
}

/// The first selection of a removed field in any operation of `document`, with its position.
fn first_removed_selection<'a>(
    registry: &Registry,
    document: &ExecutableDocument,
    removed: &'a [RemovedField],
) -> Option<(&'a RemovedField, Pos)> {
    for (_, operation) in document.operations.iter() {
        let root = match operation.node.ty {
            OperationType::Query => Some(registry.query_type.as_str()),
            OperationType::Mutation => registry.mutation_type.as_deref(),
            OperationType::Subscription => registry.subscription_type.as_deref(),
        };
        let Some(root) = root else { continue };
        let mut walk = Walk {
            registry,
            document,
            removed,
            spread: HashSet::new(),
        };
        if let Some(found) = walk.selection_set(root, &operation.node.selection_set.node) {
            return Some(found);
        }
    }
    None
}

struct Walk<'a, 'd> {
    registry: &'d Registry,
    document: &'d ExecutableDocument,
    removed: &'a [RemovedField],
    /// Fragments already walked (a cycle would otherwise never end; the server rejects it anyway).
    spread: HashSet<&'d Name>,
}

impl<'a, 'd> Walk<'a, 'd> {
    fn selection_set(&mut self, parent: &str, set: &'d SelectionSet) -> Option<(&'a RemovedField, Pos)> {
        for selection in &set.items {
            let found = match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    if let Some(removed) = self
                        .removed
                        .iter()
                        .find(|r| r.type_name == parent && r.field == name)
                    {
                        return Some((removed, field.pos));
                    }
                    let inner = self
                        .registry
                        .types
                        .get(parent)
                        .and_then(|t| t.field_by_name(name))
                        .map(|f| MetaTypeName::concrete_typename(&f.ty).to_owned());
                    match inner {
                        Some(inner) => self.selection_set(&inner, &field.node.selection_set.node),
                        None => None,
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |c| c.node.on.node.as_str());
                    self.selection_set(on, &fragment.node.selection_set.node)
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match self.document.fragments.get(name) {
                        Some(fragment) if self.spread.insert(name) => self.selection_set(
                            fragment.node.type_condition.node.on.node.as_str(),
                            &fragment.node.selection_set.node,
                        ),
                        _ => None,
                    }
                }
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Removes the removed fields from `__schema { types { fields } }` and `__type { fields }`.
fn strip_introspection(data: &mut Value, removed: &[RemovedField]) {
    let Value::Object(root) = data else { return };
    for (key, value) in root.iter_mut() {
        match key.as_str() {
            "__schema" => {
                if let Value::Object(schema) = value
                    && let Some(Value::List(types)) = schema.get_mut("types")
                {
                    types.iter_mut().for_each(|t| strip_type(t, removed));
                }
            }
            "__type" => strip_type(value, removed),
            _ => {}
        }
    }
}

fn strip_type(ty: &mut Value, removed: &[RemovedField]) {
    let Value::Object(ty) = ty else { return };
    let Some(Value::String(name)) = ty.get("name").cloned() else {
        return;
    };
    if let Some(Value::List(fields)) = ty.get_mut("fields") {
        fields.retain(|field| {
            let field_name = match field {
                Value::Object(field) => match field.get("name") {
                    Some(Value::String(n)) => n.as_str(),
                    _ => "",
                },
                _ => "",
            };
            !removed
                .iter()
                .any(|r| r.type_name == name && r.field == field_name)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_dot_field_and_refuses_anything_else() {
        assert_eq!(
            "FaxInUdr.faxId".parse::<RemovedField>(),
            Ok(RemovedField::new("FaxInUdr", "faxId"))
        );
        for bad in ["FaxInUdr", "FaxInUdr.", ".faxId", "Fax In.x", "A.b.c", "1A.b"] {
            let error = bad.parse::<RemovedField>().expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
    }
}
