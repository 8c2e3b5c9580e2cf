//! Schema drift: does a compiled query still fit a vendor's live schema?
//!
//! `graphql_client` type-checked every query in `queries/` against `schemas/<kind>.graphql` at
//! build time and generated Rust types from that schema. A query stops working when the live
//! schema no longer has what it selects, no longer accepts what it passes, or answers in a shape
//! the generated types cannot hold. [`check_query`] walks a query's selections against both the
//! compiled schema (what the types were generated from) and the live one (an introspection
//! result) and names each such change:
//!
//! - a selected field, a passed argument or input field, an enum value or a type that is gone;
//! - a field whose type changed so that the generated types cannot decode its values: a scalar
//!   whose values now travel as other JSON (a string become a number, or the reverse: see
//!   [`decode`]), a leaf become an object or the reverse, a list where there was none (or the
//!   reverse), or `null` where the compiled schema promised a value (`T!` became `T`: the
//!   generated type has no place for it). A field that became *non*-null, or an object type
//!   that was renamed, still fits and is not reported;
//! - an argument or input field that became required (or newly exists as required) where the
//!   query passes nothing or something that may be null;
//! - a variable whose type the live schema no longer has or accepts.
//!
//! Each is [`Severity::Breaks`]: a run of the query's dataset will fail on it. A leaf whose type
//! was renamed while its values still travel as JSON the generated type decodes (`Date` become
//! `String`, `ID` become `String`, one enum become another) is reported too, as a
//! [`Severity::Notice`]: runs go on working, and the compiled schema is worth refreshing.
//!
//! Why a focused checker and not a general GraphQL validator (`apollo-compiler`): a validator
//! knows only the live schema, so it cannot see the one change that breaks us silently (a field
//! turning nullable still validates), and it would add a sizeable dependency tree to every CI
//! build; `graphql-parser` is already compiled for `graphql_client`'s derive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use anyhow::{Result, bail};
use graphql_parser::query as q;

mod decode;
mod model;

use decode::LeafFit;
pub(crate) use model::SchemaModel;
use model::{InputDef, Kind, Ty};

/// Whether a [`Problem`] breaks runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// The query no longer fits: the vendor refuses it, or its answer no longer decodes.
    Breaks,
    /// The schema changed where the query reads, but the generated types still decode every
    /// value the live schema allows.
    Notice,
}

/// One way the live schema differs from the compiled one where a query depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub severity: Severity,
    /// What changed, as the compiled schema names it: `Type.field`, `Type.field(arg)`,
    /// `InputType.field`, `Enum.VALUE`, `$variable` or a type name.
    pub at: String,
    /// What is wrong, in a sentence.
    pub message: String,
    /// Where the query uses it: the response path (`report.content.faxId`) or the operation.
    pub used_at: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (used at {})", self.at, self.message, self.used_at)
    }
}

/// Every way the query `text` no longer fits `live`, given that it was compiled against
/// `expected`, and every notice. No [`Severity::Breaks`] in the list: the query still works.
/// `Err`: the query does not parse or names no operation (a build would have refused it).
pub(crate) fn check_query(text: &str, expected: &SchemaModel, live: &SchemaModel) -> Result<Vec<Problem>> {
    let document = graphql_parser::parse_query::<&str>(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fragments: HashMap<&str, &q::FragmentDefinition<'_, &str>> = document
        .definitions
        .iter()
        .filter_map(|d| match d {
            q::Definition::Fragment(f) => Some((f.name, f)),
            q::Definition::Operation(_) => None,
        })
        .collect();
    let mut problems = Vec::new();
    let mut operations = 0;
    for definition in &document.definitions {
        let (name, variables, selection_set) = match definition {
            q::Definition::Operation(q::OperationDefinition::Query(query)) => (
                query.name.unwrap_or("query"),
                &query.variable_definitions[..],
                &query.selection_set,
            ),
            q::Definition::Operation(q::OperationDefinition::SelectionSet(set)) => ("query", &[][..], set),
            q::Definition::Operation(_) => {
                bail!("only queries are checked; this document has a mutation or subscription")
            }
            q::Definition::Fragment(_) => continue,
        };
        operations += 1;
        let mut walk = Walk {
            expected,
            live,
            fragments: &fragments,
            variables: BTreeMap::new(),
            spread: HashSet::new(),
            problems: Vec::new(),
        };
        for variable in variables {
            walk.variable(name, variable);
        }
        walk.selection_set(
            Some(expected.query_type.as_str()),
            live.query_type.as_str(),
            selection_set,
            "",
        );
        problems.append(&mut walk.problems);
    }
    if operations == 0 {
        bail!("the document has no operation");
    }
    Ok(problems)
}

/// How a field's live type fits the type the query's Rust types were generated from.
enum Fit {
    Same,
    /// Renamed, still decoded; why, in a clause.
    Notice(String),
    /// No longer decoded; why, in a clause.
    Breaks(String),
    /// `null` where the generated type expects a value.
    Null,
    /// A list where there was none, or the reverse.
    Shape,
}

struct Walk<'a, 'q> {
    expected: &'a SchemaModel,
    live: &'a SchemaModel,
    fragments: &'a HashMap<&'q str, &'q q::FragmentDefinition<'q, &'q str>>,
    /// The operation's variables: declared type and whether it has a default.
    variables: BTreeMap<&'q str, (Ty, bool)>,
    /// Fragments already walked (each once; a cycle would not end).
    spread: HashSet<&'q str>,
    problems: Vec<Problem>,
}

impl<'a, 'q> Walk<'a, 'q> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>, used_at: &str) {
        self.report(Severity::Breaks, at.into(), message.into(), used_at);
    }

    fn report(&mut self, severity: Severity, at: String, message: String, used_at: &str) {
        self.problems.push(Problem {
            severity,
            at,
            message,
            used_at: if used_at.is_empty() {
                "the operation".into()
            } else {
                used_at.to_owned()
            },
        });
    }

    /// A variable's type must still exist as an input type, and if it is an input object or an
    /// enum, everything the generated `Variables` type can send must still be accepted.
    fn variable(&mut self, operation: &str, variable: &'q q::VariableDefinition<'q, &'q str>) {
        let ty = Ty::from_sdl(&variable.var_type);
        let at = format!("${}", variable.name);
        let used_at = format!("the variables of {operation}");
        self.variables
            .insert(variable.name, (ty.clone(), variable.default_value.is_some()));
        self.input_type_fits(&at, ty.named(), &used_at, &mut HashSet::new());
    }

    /// Whether every value of the compiled input type `name` is still accepted live.
    fn input_type_fits(&mut self, at: &str, name: &str, used_at: &str, seen: &mut HashSet<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let expected = self.expected.types.get(name);
        let Some(live) = self.live.types.get(name) else {
            self.problem(at, format!("its type `{name}` is gone from the schema"), used_at);
            return;
        };
        let Some(expected) = expected else { return };
        if live.kind != expected.kind {
            self.problem(
                at,
                format!(
                    "its type `{name}` is now {:?}, was {:?}",
                    live.kind, expected.kind
                ),
                used_at,
            );
            return;
        }
        match live.kind {
            Kind::Enum => {
                let mut gone: Vec<&String> = expected.enum_values.difference(&live.enum_values).collect();
                gone.sort();
                for value in gone {
                    self.problem(format!("{name}.{value}"), "the enum value is gone", used_at);
                }
            }
            Kind::InputObject => {
                let (expected, live) = (expected.input_fields.clone(), live.input_fields.clone());
                for (field, def) in &expected {
                    let at = format!("{name}.{field}");
                    match live.get(field) {
                        None => self.problem(&at, "the input field is gone", used_at),
                        Some(now)
                            if !input_accepts(&def.ty, &now.ty, def.ty.is_non_null() || now.has_default) =>
                        {
                            self.problem(
                                &at,
                                format!("the input field's type changed from `{}` to `{}`", def.ty, now.ty),
                                used_at,
                            )
                        }
                        Some(now) => self.input_type_fits(&at, now.ty.named(), used_at, seen),
                    }
                }
                for (field, def) in &live {
                    if def.required() && !expected.contains_key(field) {
                        self.problem(
                            format!("{name}.{field}"),
                            format!("a new required input field (`{}`)", def.ty),
                            used_at,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn selection_set(
        &mut self,
        expected: Option<&str>,
        live: &str,
        set: &'q q::SelectionSet<'q, &'q str>,
        path: &str,
    ) {
        for selection in &set.items {
            match selection {
                q::Selection::Field(field) => self.field(expected, live, field, path),
                q::Selection::InlineFragment(fragment) => match &fragment.type_condition {
                    Some(q::TypeCondition::On(on)) => self.fragment_on(on, &fragment.selection_set, path),
                    None => self.selection_set(expected, live, &fragment.selection_set, path),
                },
                q::Selection::FragmentSpread(spread) => {
                    let name = spread.fragment_name;
                    if let Some(fragment) = self.fragments.get(name).copied()
                        && self.spread.insert(name)
                    {
                        let q::TypeCondition::On(on) = &fragment.type_condition;
                        self.fragment_on(on, &fragment.selection_set, path);
                    }
                }
            }
        }
    }

    fn fragment_on(&mut self, on: &'q str, set: &'q q::SelectionSet<'q, &'q str>, path: &str) {
        if self.live.kind(on).is_none_or(|k| !k.composite()) {
            self.problem(on, "the type is gone from the schema", path);
            return;
        }
        self.selection_set(Some(on), on, set, path);
    }

    fn field(
        &mut self,
        expected_parent: Option<&str>,
        live_parent: &str,
        field: &'q q::Field<'q, &'q str>,
        path: &str,
    ) {
        let name = field.name;
        if name == "__typename" {
            return;
        }
        let key = field.alias.unwrap_or(name);
        let path = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        // The compiled schema's name for the type, which is what the query's author knows.
        let parent = expected_parent.unwrap_or(live_parent);
        let at = format!("{parent}.{name}");
        let Some(live) = self.live.field(live_parent, name) else {
            self.problem(&at, "the field is gone", &path);
            return;
        };
        let expected = expected_parent.and_then(|p| self.expected.field(p, name));
        self.arguments(&at, &field.arguments, &live.args, &path);
        if let Some(expected) = expected {
            let changed = format!("its type changed from `{}` to `{}`", expected.ty, live.ty);
            match self.output_fit(&expected.ty, &live.ty) {
                Fit::Same => {}
                Fit::Notice(why) => {
                    self.report(Severity::Notice, at.clone(), format!("{changed}; {why}"), &path)
                }
                Fit::Breaks(why) => {
                    self.problem(&at, format!("{changed}: {why}"), &path);
                    return;
                }
                Fit::Null => {
                    let message =
                        format!("may now be null: {changed}, and the compiled query's types expect a value");
                    self.problem(&at, message, &path);
                    return;
                }
                Fit::Shape => {
                    self.problem(&at, changed, &path);
                    return;
                }
            }
        }
        if field.selection_set.items.is_empty() {
            return;
        }
        let live_inner = live.ty.named().to_owned();
        if self.live.kind(&live_inner).is_none_or(|k| !k.composite()) {
            self.problem(
                &at,
                format!("its type `{live_inner}` has no fields to select any more"),
                &path,
            );
            return;
        }
        let expected_inner = expected.map(|e| e.ty.named().to_owned());
        self.selection_set(
            expected_inner.as_deref(),
            &live_inner,
            &field.selection_set,
            &path,
        );
    }

    /// Whether an answer of the live type `live` still fits the types generated from `expected`.
    fn output_fit(&self, expected: &Ty, live: &Ty) -> Fit {
        match (expected, live) {
            (Ty::NonNull(e), Ty::NonNull(l)) => self.output_fit(e, l),
            // A null the generated type has no place for.
            (Ty::NonNull(_), _) => Fit::Null,
            // Never null now: still fits an optional.
            (e, Ty::NonNull(l)) => self.output_fit(e, l),
            (Ty::List(e), Ty::List(l)) => self.output_fit(e, l),
            (Ty::Named(e), Ty::Named(l)) if e == l => Fit::Same,
            (Ty::Named(e), Ty::Named(l)) => {
                let composite = |kind: Option<Kind>| kind.is_some_and(Kind::composite);
                match (composite(self.expected.kind(e)), composite(self.live.kind(l))) {
                    // Objects are decoded by their fields, whatever the type is called.
                    (true, true) => Fit::Same,
                    (false, true) => Fit::Breaks(format!(
                        "`{l}` is an object type, which the query selects no fields of (the vendor \
                         refuses such a query) and the generated type ({e}) cannot decode"
                    )),
                    (true, false) => Fit::Breaks(format!(
                        "`{l}` has no fields, and the generated type decodes an object with the \
                         selected ones"
                    )),
                    (false, false) => match decode::leaf_fit(self.expected, e, self.live, l) {
                        Some(LeafFit::Notice(why)) => Fit::Notice(why),
                        Some(LeafFit::Breaks(why)) => Fit::Breaks(why),
                        None => Fit::Breaks(format!("`{l}` is not a scalar or enum type of the schema")),
                    },
                }
            }
            _ => Fit::Shape,
        }
    }

    fn arguments(
        &mut self,
        at: &str,
        given: &'q [(&'q str, q::Value<'q, &'q str>)],
        live: &BTreeMap<String, InputDef>,
        path: &str,
    ) {
        for (name, value) in given {
            let at = format!("{at}({name})");
            match live.get(*name) {
                None => self.problem(&at, "the argument is gone", path),
                Some(def) => self.value_fits(&at, value, &def.ty, def.has_default, path),
            }
        }
        for (name, def) in live {
            if def.required() && !given.iter().any(|(n, _)| n == name) {
                self.problem(
                    format!("{at}({name})"),
                    format!("a new required argument (`{}`)", def.ty),
                    path,
                );
            }
        }
    }

    /// Whether `value` (as the query writes it) is accepted where the live schema expects `ty`.
    fn value_fits(
        &mut self,
        at: &str,
        value: &'q q::Value<'q, &'q str>,
        ty: &Ty,
        location_default: bool,
        path: &str,
    ) {
        if let q::Value::Variable(name) = value {
            let Some((declared, has_default)) = self.variables.get(name).cloned() else {
                self.problem(
                    at,
                    format!("passes `${name}`, which the operation does not declare"),
                    path,
                );
                return;
            };
            if !input_accepts(&declared, ty, has_default || location_default) {
                self.problem(
                    at,
                    format!("now takes `{ty}`, which `${name}: {declared}` does not fit"),
                    path,
                );
            }
            return;
        }
        let inner = match ty {
            Ty::NonNull(inner) => {
                if matches!(value, q::Value::Null) {
                    self.problem(at, format!("now takes `{ty}`; the query passes null"), path);
                    return;
                }
                inner.as_ref()
            }
            other => other,
        };
        match (value, inner) {
            (q::Value::Null, _) => {}
            (q::Value::List(items), Ty::List(item)) => {
                for value in items {
                    self.value_fits(at, value, item, false, path);
                }
            }
            (q::Value::List(_), _) => {
                self.problem(at, format!("now takes `{ty}`; the query passes a list"), path)
            }
            // Input coercion: a single value where a list is expected is a list of one.
            (value, Ty::List(item)) => self.value_fits(at, value, item, false, path),
            (value, Ty::Named(named)) => self.literal_fits(at, value, named, path),
            (_, Ty::NonNull(_)) => self.problem(at, format!("has the impossible type `{ty}`"), path),
        }
    }

    fn literal_fits(&mut self, at: &str, value: &'q q::Value<'q, &'q str>, named: &str, path: &str) {
        let Some(def) = self.live.types.get(named) else {
            self.problem(at, format!("its type `{named}` is gone from the schema"), path);
            return;
        };
        match (value, def.kind) {
            (q::Value::Object(fields), Kind::InputObject) => {
                let live_fields = def.input_fields.clone();
                for (field, value) in fields {
                    let at = format!("{named}.{field}");
                    match live_fields.get(*field) {
                        None => self.problem(&at, "the input field is gone", path),
                        Some(def) => self.value_fits(&at, value, &def.ty, def.has_default, path),
                    }
                }
                for (field, def) in &live_fields {
                    if def.required() && !fields.contains_key(field.as_str()) {
                        self.problem(
                            format!("{named}.{field}"),
                            format!("a new required input field (`{}`)", def.ty),
                            path,
                        );
                    }
                }
            }
            (q::Value::Enum(value), Kind::Enum) => {
                if !def.enum_values.contains(*value) {
                    self.problem(format!("{named}.{value}"), "the enum value is gone", path);
                }
            }
            (q::Value::Int(_), Kind::Scalar) if !matches!(named, "String" | "Boolean") => {}
            (q::Value::Float(_), Kind::Scalar) if !matches!(named, "Int" | "String" | "Boolean" | "ID") => {}
            (q::Value::String(_), Kind::Scalar) if !matches!(named, "Int" | "Float" | "Boolean") => {}
            (q::Value::Boolean(_), Kind::Scalar) if !matches!(named, "Int" | "Float" | "String" | "ID") => {}
            _ => self.problem(
                at,
                format!("now takes `{named}`, which the value the query passes is not"),
                path,
            ),
        }
    }
}

/// Whether a value of type `given` may be passed where `wanted` is expected (GraphQL's rule for
/// variables; `defaulted`: a default stands in for a null at the top level).
fn input_accepts(given: &Ty, wanted: &Ty, defaulted: bool) -> bool {
    match (given, wanted) {
        (Ty::NonNull(g), Ty::NonNull(w)) => input_accepts(g, w, false),
        (Ty::NonNull(g), w) => input_accepts(g, w, false),
        (g, Ty::NonNull(w)) => defaulted && input_accepts(g, w, false),
        (Ty::List(g), Ty::List(w)) => input_accepts(g, w, false),
        (Ty::Named(g), Ty::Named(w)) => g == w,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPILED: &str = r#"
        scalar DateTime
        enum Sort { ASC DESC }
        input Period { from: DateTime! to: DateTime! }
        type Fax { faxId: String! pages: Int! sentAt: DateTime note: String }
        type Page { content: [Fax!]! more: Boolean! }
        type Query { report(customerId: String!, period: Period!, sort: Sort, page: Int = 0): Page! }
    "#;

    const QUERY: &str = r#"
        # a comment
        query Report($customerId: String!, $from: DateTime!, $to: DateTime!) {
          report(customerId: $customerId, period: {from: $from, to: $to}, sort: ASC) {
            more
            content { faxId pages ...Rest }
          }
        }
        fragment Rest on Fax { sentAt note }
    "#;

    fn problems(live: &str) -> Vec<String> {
        let expected = SchemaModel::from_sdl(COMPILED).expect("compiled schema parses");
        let live = SchemaModel::from_sdl(live).expect("live schema parses");
        check_query(QUERY, &expected, &live)
            .expect("query parses")
            .iter()
            .map(|p| match p.severity {
                Severity::Breaks => p.to_string(),
                Severity::Notice => format!("notice: {p}"),
            })
            .collect()
    }

    fn edited(from: &str, to: &str) -> String {
        assert!(COMPILED.contains(from), "{from}");
        COMPILED.replacen(from, to, 1)
    }

    #[test]
    fn the_compiled_schema_itself_has_no_drift() {
        assert_eq!(problems(COMPILED), Vec::<String>::new());
    }

    #[test]
    fn a_removed_field_is_named_with_its_type_and_where_the_query_selects_it() {
        assert_eq!(
            problems(&edited("faxId: String! ", "")),
            ["Fax.faxId: the field is gone (used at report.content.faxId)"]
        );
        // Through a named fragment too.
        assert_eq!(
            problems(&edited(" note: String", "")),
            ["Fax.note: the field is gone (used at report.content.note)"]
        );
    }

    #[test]
    fn a_field_that_may_now_be_null_or_changed_type_is_reported_and_a_stricter_one_is_not() {
        assert_eq!(
            problems(&edited("pages: Int!", "pages: Int")),
            [
                "Fax.pages: may now be null: its type changed from `Int!` to `Int`, and the compiled query's types expect a value (used at report.content.pages)"
            ]
        );
        assert_eq!(
            problems(&edited("pages: Int!", "pages: String!")),
            [
                "Fax.pages: its type changed from `Int!` to `String!`: its values now come as JSON strings, which the generated type (i64) cannot decode: it takes JSON integers (used at report.content.pages)"
            ]
        );
        assert_eq!(
            problems(&edited("content: [Fax!]!", "content: Fax!")),
            ["Page.content: its type changed from `[Fax!]!` to `Fax!` (used at report.content)"]
        );
        // Never null now, or the object type renamed: the generated types still fit.
        assert_eq!(
            problems(&edited("note: String", "note: String!")),
            Vec::<String>::new()
        );
        let renamed = edited("type Fax {", "type FaxRecord {").replace("[Fax!]!", "[FaxRecord!]!");
        assert_eq!(
            problems(&renamed),
            // The named fragment's type condition still says `Fax`.
            ["Fax: the type is gone from the schema (used at report.content)"]
        );
    }

    #[test]
    fn arguments_input_fields_enum_values_and_variable_types_are_checked() {
        assert_eq!(
            problems(&edited("sort: Sort, ", "")),
            ["Query.report(sort): the argument is gone (used at report)"]
        );
        assert_eq!(
            problems(&edited("page: Int = 0", "page: Int!")),
            ["Query.report(page): a new required argument (`Int!`) (used at report)"]
        );
        assert_eq!(
            problems(&edited("enum Sort { ASC DESC }", "enum Sort { ASCENDING DESC }")),
            ["Sort.ASC: the enum value is gone (used at report)"]
        );
        assert_eq!(
            problems(&edited(
                "input Period { from: DateTime! to: DateTime! }",
                "input Period { start: DateTime! to: DateTime! }"
            )),
            [
                "Period.from: the input field is gone (used at report)",
                "Period.start: a new required input field (`DateTime!`) (used at report)",
            ]
        );
        assert_eq!(
            problems(&edited("customerId: String!", "customerId: ID!")),
            [
                "Query.report(customerId): now takes `ID!`, which `$customerId: String!` does not fit (used at report)"
            ]
        );
        let no_date_time = edited("scalar DateTime", "scalar Instant").replace("DateTime", "Instant");
        assert_eq!(
            problems(&no_date_time),
            [
                "$from: its type `DateTime` is gone from the schema (used at the variables of Report)",
                "$to: its type `DateTime` is gone from the schema (used at the variables of Report)",
                "Period.from: now takes `Instant!`, which `$from: DateTime!` does not fit (used at report)",
                "Period.to: now takes `Instant!`, which `$to: DateTime!` does not fit (used at report)",
                "notice: Fax.sentAt: its type changed from `DateTime` to `Instant`; its values still come as JSON strings, which the generated type (Instant) decodes as before; the schema no longer promises an RFC 3339 instant, and a value that is not one would fail the run (used at report.content.sentAt)",
            ]
        );
    }

    #[test]
    fn a_scalar_renamed_while_its_values_still_decode_is_a_notice_and_one_they_do_not_is_drift() {
        let stamp = "type Stamp { at: DateTime } type Page";
        // (the compiled field, the live one, a type the live schema adds, what is reported)
        let cases = [
            (
                "sentAt: DateTime",
                "sentAt: String",
                "",
                "notice: Fax.sentAt: its type changed from `DateTime` to `String`; its values still come as JSON strings, which the generated type (Instant) decodes as before; the schema no longer promises an RFC 3339 instant, and a value that is not one would fail the run (used at report.content.sentAt)",
            ),
            (
                "faxId: String!",
                "faxId: ID!",
                "",
                "notice: Fax.faxId: its type changed from `String!` to `ID!`; its values still come as JSON strings, which the generated type (String) decodes as before (used at report.content.faxId)",
            ),
            // Never null now and renamed: still a notice.
            (
                "note: String",
                "note: ID!",
                "",
                "notice: Fax.note: its type changed from `String` to `ID!`; its values still come as JSON strings, which the generated type (String) decodes as before (used at report.content.note)",
            ),
            // Renamed and nullable now: the null breaks it.
            (
                "faxId: String!",
                "faxId: ID",
                "",
                "Fax.faxId: may now be null: its type changed from `String!` to `ID`, and the compiled query's types expect a value (used at report.content.faxId)",
            ),
            (
                "sentAt: DateTime",
                "sentAt: Int",
                "",
                "Fax.sentAt: its type changed from `DateTime` to `Int`: its values now come as JSON integers, which the generated type (Instant) cannot decode: it takes JSON strings (used at report.content.sentAt)",
            ),
            (
                "sentAt: DateTime",
                "sentAt: [DateTime]",
                "",
                "Fax.sentAt: its type changed from `DateTime` to `[DateTime]` (used at report.content.sentAt)",
            ),
            (
                "sentAt: DateTime",
                "sentAt: Stamp",
                stamp,
                "Fax.sentAt: its type changed from `DateTime` to `Stamp`: `Stamp` is an object type, which the query selects no fields of (the vendor refuses such a query) and the generated type (DateTime) cannot decode (used at report.content.sentAt)",
            ),
        ];
        for (from, to, added, reported) in cases {
            let mut live = edited(from, to);
            if !added.is_empty() {
                live = live.replace("type Page", added);
            }
            assert_eq!(problems(&live), [reported], "{from} -> {to}");
        }
    }

    #[test]
    fn a_query_that_does_not_parse_is_an_error_not_a_panic() {
        let schema = SchemaModel::from_sdl(COMPILED).expect("parses");
        assert!(check_query("query {", &schema, &schema).is_err());
        assert!(check_query("fragment F on Fax { faxId }", &schema, &schema).is_err());
        assert!(SchemaModel::from_sdl("type {").is_err());
    }
}
