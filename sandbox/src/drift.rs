//! Schema drift on demand: a GraphQL vendor started with fields removed from its schema, or with
//! a scalar field's type changed, as a vendor's release might.
//!
//! The schemas are async-graphql derives, which cannot lose a field or change its type at run
//! time, so the drift is an async-graphql [`Extension`] around the real schema:
//!
//! - introspection answers (`__schema`, `__type`) leave the removed fields out and name a
//!   retyped field's new scalar, so a client that introspects sees the new schema;
//! - a query that selects a removed field is refused before it runs, with the error a GraphQL
//!   server gives for an unknown field (`Unknown field "x" on type "T".`) and no data;
//! - a retyped field's values in an answer are sent as its new scalar sends them: as JSON
//!   strings for `String` and `ID` (a `Date` keeps its text: the rename a documentation-written
//!   implementation may make), as numbers for `Int` and `Float` (the digits of the old text,
//!   `2026-03-10` becoming `20260310`: a change no client of the old type can decode).
//!
//! A removal or retyping naming a type or field the schema does not have (or, for a retyping, a
//! field that is not a scalar) fails every request with a message saying so, rather than
//! starting a sandbox that silently has no drift.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{Name, Pos, Response, ServerError, ServerResult, Value, Variables};

/// One field of a schema: `Type.field`, e.g. `FaxInUdr.faxId`.
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

/// The scalars a retyped field can become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NewScalar {
    String,
    Id,
    Int,
    Float,
}

impl NewScalar {
    fn name(self) -> &'static str {
        match self {
            NewScalar::String => "String",
            NewScalar::Id => "ID",
            NewScalar::Int => "Int",
            NewScalar::Float => "Float",
        }
    }

    /// `value` as this scalar sends it (see the module's documentation).
    fn convert(self, value: &mut Value) {
        let text = match &*value {
            Value::Null => return,
            Value::String(text) => text.clone(),
            Value::Enum(name) => name.to_string(),
            other => other.to_string(),
        };
        *value = match self {
            NewScalar::String | NewScalar::Id => Value::String(text),
            NewScalar::Int | NewScalar::Float => {
                let number = text.parse::<f64>().ok().or_else(|| {
                    let digits: String = text.chars().filter(char::is_ascii_digit).take(18).collect();
                    digits.parse::<f64>().ok()
                });
                match (self, number) {
                    (_, None) => Value::Null,
                    (NewScalar::Int, Some(n)) => Value::from(n.trunc() as i64),
                    (_, Some(n)) => Value::from(n),
                }
            }
        };
    }
}

/// One field whose type changes to a built-in scalar, values included:
/// `Type.field:Scalar`, e.g. `LocationSalesDay.day:String`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetypedField {
    pub field: RemovedField,
    pub to: NewScalar,
}

impl RetypedField {
    pub fn new(type_name: impl Into<String>, field: impl Into<String>, to: NewScalar) -> Self {
        RetypedField {
            field: RemovedField::new(type_name, field),
            to,
        }
    }
}

impl std::fmt::Display for RetypedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.field, self.to.name())
    }
}

impl FromStr for RetypedField {
    type Err = String;

    /// `Type.field:Scalar`, the scalar one of `String`, `ID`, `Int`, `Float`.
    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || format!("`{text}` is not `Type.field:Scalar` (e.g. `LocationSalesDay.day:String`)");
        let (field, to) = text.rsplit_once(':').ok_or_else(wrong)?;
        let to = match to {
            "String" => NewScalar::String,
            "ID" => NewScalar::Id,
            "Int" => NewScalar::Int,
            "Float" => NewScalar::Float,
            _ => {
                return Err(format!(
                    "{}: the new type must be String, ID, Int or Float",
                    wrong()
                ));
            }
        };
        Ok(RetypedField {
            field: field.parse().map_err(|_| wrong())?,
            to,
        })
    }
}

/// Adds the drift extension to a schema under construction; no drift, no extension.
pub fn apply<Q, M, S>(
    builder: async_graphql::SchemaBuilder<Q, M, S>,
    removed: &[RemovedField],
    retyped: &[RetypedField],
) -> async_graphql::SchemaBuilder<Q, M, S> {
    if removed.is_empty() && retyped.is_empty() {
        return builder;
    }
    builder.extension(Drift(Arc::new(Changes {
        removed: removed.to_vec(),
        retyped: retyped.to_vec(),
    })))
}

/// What the schema lost and what changed type.
struct Changes {
    removed: Vec<RemovedField>,
    retyped: Vec<RetypedField>,
}

struct Drift(Arc<Changes>);

impl ExtensionFactory for Drift {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DriftExtension {
            changes: self.0.clone(),
            retyped_at: Mutex::new(Vec::new()),
        })
    }
}

/// One per request.
struct DriftExtension {
    changes: Arc<Changes>,
    /// Where the request's answer holds retyped values: response keys from the root, and the new
    /// scalar. Written when the query is parsed, read when the answer is ready (same request).
    retyped_at: Mutex<Vec<(Vec<Name>, NewScalar)>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for DriftExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        strip_introspection(&mut response.data, &self.changes);
        let retyped_at = std::mem::take(&mut *self.retyped_at.lock().unwrap_or_else(|e| e.into_inner()));
        for (path, to) in retyped_at {
            convert_at(&mut response.data, &path, to);
        }
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
        let field_of = |f: &RemovedField| {
            registry
                .types
                .get(&f.type_name)
                .and_then(|t| t.field_by_name(&f.field))
        };
        if let Some(unknown) = self.changes.removed.iter().find(|r| field_of(r).is_none()) {
            return Err(ServerError::new(
                format!("sandbox misconfigured: the schema has no field {unknown} to remove"),
                None,
            ));
        }
        if let Some(unknown) = self.changes.retyped.iter().find(|r| {
            field_of(&r.field)
                .and_then(|f| registry.types.get(MetaTypeName::concrete_typename(&f.ty)))
                .is_none_or(|t| !t.is_leaf())
        }) {
            return Err(ServerError::new(
                format!("sandbox misconfigured: the schema has no scalar field {unknown} to retype"),
                None,
            ));
        }
        let document = next.run(ctx, query, variables).await?;
        let mut removed = None;
        let mut retyped_at = Vec::new();
        each_selected_field(registry, &document, &mut |parent, name, path, pos| {
            if let Some(r) = self
                .changes
                .removed
                .iter()
                .find(|r| r.type_name == parent && r.field == name)
            {
                removed = Some((r, pos));
                return false;
            }
            if let Some(r) = self
                .changes
                .retyped
                .iter()
                .find(|r| r.field.type_name == parent && r.field.field == name)
            {
                retyped_at.push((path.to_vec(), r.to));
            }
            true
        });
        if let Some((removed, pos)) = removed {
            return Err(ServerError::new(
                format!(
                    "Unknown field \"{}\" on type \"{}\".",
                    removed.field, removed.type_name
                ),
                Some(pos),
            ));
        }
        *self.retyped_at.lock().unwrap_or_else(|e| e.into_inner()) = retyped_at;
        Ok(document)
    }
}

/// Called with (parent type, field name, response path, position) for a field selection;
/// `false` to stop.
type Visit<'v> = dyn FnMut(&str, &str, &[Name], Pos) -> bool + 'v;

/// Calls `visit` for every field selection of every operation of `document`, until it answers
/// `false`.
fn each_selected_field<'d>(registry: &'d Registry, document: &'d ExecutableDocument, visit: &mut Visit<'_>) {
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
            visit: &mut *visit,
            spread: HashSet::new(),
            path: Vec::new(),
        };
        if !walk.selection_set(root, &operation.node.selection_set.node) {
            return;
        }
    }
}

struct Walk<'v, 'd> {
    registry: &'d Registry,
    document: &'d ExecutableDocument,
    visit: &'v mut Visit<'v>,
    /// Fragments already walked (a cycle would otherwise never end; the server rejects it anyway).
    spread: HashSet<&'d Name>,
    /// Response keys from the root to the current selection set.
    path: Vec<Name>,
}

impl<'d> Walk<'_, 'd> {
    /// `false`: the visitor asked to stop.
    fn selection_set(&mut self, parent: &str, set: &'d SelectionSet) -> bool {
        for selection in &set.items {
            let go_on = match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let key = field.node.response_key().node.clone();
                    self.path.push(key);
                    let mut go_on = (self.visit)(parent, name, &self.path, field.pos);
                    let inner = self
                        .registry
                        .types
                        .get(parent)
                        .and_then(|t| t.field_by_name(name))
                        .map(|f| MetaTypeName::concrete_typename(&f.ty).to_owned());
                    if go_on && let Some(inner) = inner {
                        go_on = self.selection_set(&inner, &field.node.selection_set.node);
                    }
                    self.path.pop();
                    go_on
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
                        _ => true,
                    }
                }
            };
            if !go_on {
                return false;
            }
        }
        true
    }
}

/// Converts the values at `path` (response keys; lists are walked through) to `to`.
fn convert_at(value: &mut Value, path: &[Name], to: NewScalar) {
    match (value, path.split_first()) {
        (value, None) => to.convert(value),
        (Value::List(items), Some(_)) => items.iter_mut().for_each(|item| convert_at(item, path, to)),
        (Value::Object(fields), Some((key, rest))) => {
            if let Some(value) = fields.get_mut(key) {
                convert_at(value, rest, to);
            }
        }
        _ => {}
    }
}

/// Leaves the removed fields out of `__schema { types { fields } }` and `__type { fields }`, and
/// names a retyped field's new scalar.
fn strip_introspection(data: &mut Value, changes: &Changes) {
    let Value::Object(root) = data else { return };
    for (key, value) in root.iter_mut() {
        match key.as_str() {
            "__schema" => {
                if let Value::Object(schema) = value
                    && let Some(Value::List(types)) = schema.get_mut("types")
                {
                    types.iter_mut().for_each(|t| strip_type(t, changes));
                }
            }
            "__type" => strip_type(value, changes),
            _ => {}
        }
    }
}

fn strip_type(ty: &mut Value, changes: &Changes) {
    let Value::Object(ty) = ty else { return };
    let Some(Value::String(name)) = ty.get("name").cloned() else {
        return;
    };
    let Some(Value::List(fields)) = ty.get_mut("fields") else {
        return;
    };
    let field_name = |field: &Value| match field {
        Value::Object(field) => match field.get("name") {
            Some(Value::String(n)) => n.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    fields.retain(|field| {
        let field_name = field_name(field);
        !changes
            .removed
            .iter()
            .any(|r| r.type_name == name && r.field == field_name)
    });
    for field in fields.iter_mut() {
        let field_name = field_name(field);
        let retyped = changes
            .retyped
            .iter()
            .find(|r| r.field.type_name == name && r.field.field == field_name);
        if let (Some(retyped), Value::Object(field)) = (retyped, field)
            && let Some(reference) = field.get_mut("type")
        {
            rename_named_type(reference, retyped.to.name());
        }
    }
}

/// In an introspected type reference (`{kind, name, ofType}`), the named type inside the
/// `NON_NULL` and `LIST` wrappers becomes the scalar `to`.
fn rename_named_type(reference: &mut Value, to: &str) {
    let Value::Object(reference) = reference else {
        return;
    };
    let wrapper = matches!(
        reference.get("kind"),
        Some(Value::Enum(kind)) if kind.as_str() == "NON_NULL" || kind.as_str() == "LIST"
    );
    if wrapper {
        if let Some(inner) = reference.get_mut("ofType") {
            rename_named_type(inner, to);
        }
        return;
    }
    reference.insert(Name::new("name"), Value::String(to.to_owned()));
    if reference.contains_key("kind") {
        reference.insert(Name::new("kind"), Value::Enum(Name::new("SCALAR")));
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

    #[test]
    fn parses_type_dot_field_colon_scalar_and_refuses_anything_else() {
        assert_eq!(
            "LocationSalesDay.day:String".parse::<RetypedField>(),
            Ok(RetypedField::new("LocationSalesDay", "day", NewScalar::String))
        );
        assert_eq!(
            "LocationSalesDay.day:ID".parse::<RetypedField>().map(|r| r.to),
            Ok(NewScalar::Id)
        );
        for bad in [
            "LocationSalesDay.day",
            "LocationSalesDay.day:Date",
            "day:Int",
            ":Int",
        ] {
            let error = bad.parse::<RetypedField>().expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn a_retyped_value_is_sent_as_its_new_scalar_sends_it() {
        let converted = |to: NewScalar, value: Value| {
            let mut value = value;
            to.convert(&mut value);
            value
        };
        let day = || Value::String("2026-03-10".into());
        assert_eq!(converted(NewScalar::String, day()), day());
        assert_eq!(converted(NewScalar::Int, day()), Value::from(20260310));
        assert_eq!(
            converted(NewScalar::Float, Value::String("2.5".into())),
            Value::from(2.5)
        );
        assert_eq!(
            converted(NewScalar::Id, Value::from(7)),
            Value::String("7".into())
        );
        assert_eq!(converted(NewScalar::Int, Value::Null), Value::Null);
    }
}
