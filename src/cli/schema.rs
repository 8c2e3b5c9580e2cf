//! `schema pull SOURCE`: fetch a vendor's GraphQL schema by introspection and write it as SDL.
//!
//! The schemas under `schemas/` are reconstructed from the vendors' documentation; the typed
//! queries (`graphql_client`) are checked against them at build time. With real credentials,
//! `schema pull` replaces a reconstruction with what the vendor's server actually describes, so a
//! rebuild type-checks every query against the real schema.
//!
//! The introspection query goes through the [`Executor`] like every other upstream call, so the
//! source's auth, shared rate budget and retries apply (`check --upstream` introspects the same
//! way: see `src/cli/upstream_check.rs`). The SDL is printed in the layout of
//! async-graphql's `Schema::sdl()` (which produced the checked-in files from the sandbox): a
//! pulled schema then differs from the reconstruction only where the schemas differ, and a
//! `git diff` after a pull shows exactly what the reconstruction got wrong.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::auth;
use crate::catalog::SourceKind;
use crate::config::{HttpUrl, Settings, SourceSettings};
use crate::executor::{CallContext, Executor, ExecutorOptions, ScopeHeader, Service};
use crate::store::Store;

/// `schema pull` arguments.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Source name from the configuration (a Retarus, Roubler or Altrata source).
    pub source: String,
    /// Where to write the SDL; `-` for stdout. Default: schemas/<kind>.graphql (relative to the
    /// working directory: run it from the repository root).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Altrata only: which of its services to ask (default: events).
    #[arg(long, value_enum)]
    pub service: Option<AltrataService>,
}

/// Altrata's two GraphQL services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AltrataService {
    Events,
    Profile,
}

/// `schema pull SOURCE [--out PATH] [--service events|profile]`
pub async fn pull(args: PullArgs, settings: Settings) -> Result<ExitCode> {
    let Some(source) = settings.sources.get(&args.source) else {
        let known: Vec<&str> = settings.sources.keys().map(String::as_str).collect();
        bail!(
            "`{}` is not a configured source (configured: {})",
            args.source,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    let kind = source.kind();
    let (service, endpoint) =
        endpoint(source, args.service).with_context(|| format!("schema pull {}", args.source))?;
    let endpoint = display_url(endpoint);

    let (store, executor) = open_executor(Arc::new(settings), "schema pull").await?;
    let introspection = introspect(&executor, &args.source, service).await;
    store.close().await?;
    let introspection = introspection?;
    let sdl = to_sdl(&introspection.schema)
        .with_context(|| format!("{}: the introspection result is incomplete", args.source))?;
    let text = format!(
        "# Pulled by `reporting-etl schema pull {}` from {endpoint} (GraphQL introspection):\n\
         # the schema the vendor's server describes. Pull again rather than edit by hand.\n\n{sdl}",
        args.source
    );

    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("schemas/{kind}.graphql")));
    if out.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    let types = introspection.schema.types.iter().filter(|t| printed(t)).count();
    println!(
        "Wrote {} ({types} types, from `{}` at {endpoint}). Rebuild to type-check the queries against it.",
        out.display(),
        args.source
    );
    Ok(ExitCode::SUCCESS)
}

/// The store and an executor like `run`'s: auth needs the token store (Roubler's refresh chain,
/// Altrata's shared token), and the calls spend the source's rate budget shared by every process.
pub(crate) async fn open_executor(settings: Arc<Settings>, command: &str) -> Result<(Store, Executor)> {
    let store = Store::open(&settings.database, command).await?;
    let registry = auth::build(&settings, store.pool().clone());
    let executor = Executor::with_shared_budget(
        settings.clone(),
        registry,
        ExecutorOptions::default(),
        store.pool().clone(),
        store.instance().id(),
    )?;
    Ok((store, executor))
}

/// Asks `source`'s `service` for its schema with [`INTROSPECTION_QUERY`], through the executor
/// (auth, rate budget, retries).
pub(crate) async fn introspect(executor: &Executor, source: &str, service: Service) -> Result<Introspection> {
    let call = CallContext::new(source.to_owned(), "schema");
    // Introspection is schema-wide: no tenant scope, even for Roubler, whose data queries need an
    // X-Company-ID.
    let answer = executor
        .execute_raw(
            &call,
            service,
            &ScopeHeader::None,
            INTROSPECTION_QUERY,
            serde_json::json!({}),
        )
        .await?;
    for warning in &answer.warnings {
        tracing::warn!(source = %source, warning = %warning, "The introspection answer carried a warning.");
    }
    serde_json::from_value(answer.data)
        .with_context(|| format!("{source}: the answer is not an introspection result"))
}

/// The executor's service and the URL the introspection query goes to.
pub(crate) fn endpoint(
    source: &SourceSettings,
    service: Option<AltrataService>,
) -> Result<(Service, &HttpUrl)> {
    let kind = source.kind();
    match (source, service) {
        (SourceSettings::Altrata(s), None | Some(AltrataService::Events)) => {
            Ok((Service::AltrataEvents, &s.events_url))
        }
        (SourceSettings::Altrata(s), Some(AltrataService::Profile)) => {
            Ok((Service::AltrataProfile, &s.profile_url))
        }
        (_, Some(_)) => bail!("--service applies to Altrata sources only; this is a {kind} source"),
        (SourceSettings::Retarus(s), None) => Ok((Service::Default, &s.graphql_url)),
        (SourceSettings::Roubler(s), None) => Ok((Service::Default, &s.graphql_url)),
        (SourceSettings::Retently(_), None) => bail!(
            "this is a {} source, which has a REST API and no GraphQL schema; schema pull works for {}, {} and {} sources",
            SourceKind::Retently,
            SourceKind::Retarus,
            SourceKind::Roubler,
            SourceKind::Altrata
        ),
    }
}

/// The endpoint for the file's header and the message: without user info, query or fragment,
/// which could hold credentials.
pub(crate) fn display_url(url: &HttpUrl) -> String {
    let mut url = url.url().clone();
    // Setting these fails only for URLs that cannot have them; then there is nothing to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The standard introspection query (graphql-js `getIntrospectionQuery()` with its defaults).
/// Newer additions (`isRepeatable`, `specifiedByURL`, `isOneOf`, deprecated arguments) are left
/// out on purpose: a server that predates them rejects the whole query, and none of them changes
/// what a `graphql_client` query type-checks against.
pub const INTROSPECTION_QUERY: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives {
      name
      description
      locations
      args { ...InputValue }
    }
  }
}

fragment FullType on __Type {
  kind
  name
  description
  fields(includeDeprecated: true) {
    name
    description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated
    deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) {
    name
    description
    isDeprecated
    deprecationReason
  }
  possibleTypes { ...TypeRef }
}

fragment InputValue on __InputValue {
  name
  description
  type { ...TypeRef }
  defaultValue
}

fragment TypeRef on __Type {
  kind
  name
  ofType {
    kind
    name
    ofType {
      kind
      name
      ofType {
        kind
        name
        ofType {
          kind
          name
          ofType {
            kind
            name
            ofType {
              kind
              name
              ofType {
                kind
                name
              }
            }
          }
        }
      }
    }
  }
}
"#;

/// The `data` of an introspection answer.
#[derive(Debug, Deserialize)]
pub struct Introspection {
    #[serde(rename = "__schema")]
    pub schema: IntrospectionSchema,
}

/// `__schema`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectionSchema {
    pub query_type: Option<NamedRef>,
    pub mutation_type: Option<NamedRef>,
    pub subscription_type: Option<NamedRef>,
    pub types: Vec<FullType>,
    #[serde(default)]
    pub directives: Vec<DirectiveDef>,
}

#[derive(Debug, Deserialize)]
pub struct NamedRef {
    pub name: String,
}

/// One named type with everything the SDL needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FullType {
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub fields: Option<Vec<FieldDef>>,
    pub input_fields: Option<Vec<InputValue>>,
    pub interfaces: Option<Vec<TypeRef>>,
    pub enum_values: Option<Vec<EnumValueDef>>,
    pub possible_types: Option<Vec<TypeRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub args: Vec<InputValue>,
    #[serde(rename = "type")]
    pub ty: TypeRef,
    #[serde(default)]
    pub is_deprecated: bool,
    pub deprecation_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputValue {
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub ty: TypeRef,
    /// A GraphQL literal, printed as is.
    pub default_value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnumValueDef {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub is_deprecated: bool,
    pub deprecation_reason: Option<String>,
}

/// A type reference: a named type, or a list / non-null wrapper around `of_type`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeRef {
    pub kind: String,
    pub name: Option<String>,
    pub of_type: Option<Box<TypeRef>>,
}

#[derive(Debug, Deserialize)]
pub struct DirectiveDef {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub args: Vec<InputValue>,
}

/// The scalars every GraphQL schema has; SDL leaves them out.
const BUILT_IN_SCALARS: &[&str] = &["Int", "Float", "String", "Boolean", "ID"];

/// Whether a type appears in the SDL (introspection types and built-in scalars do not).
fn printed(ty: &FullType) -> bool {
    match ty.name.as_deref() {
        None => false,
        Some(name) => !name.starts_with("__") && (ty.kind != "SCALAR" || !BUILT_IN_SCALARS.contains(&name)),
    }
}

/// Prints an introspection result as SDL, in the layout of async-graphql's `Schema::sdl()`
/// (default options): types sorted by name, each with its description in a tab-indented block
/// string and followed by a blank line; fields, arguments and enum values in the server's order;
/// then the directive definitions, sorted by name; then the `schema {}` block.
///
/// Differences from async-graphql, all where its output would not parse: `"""` inside a
/// description and `"` inside a deprecation reason are escaped.
pub fn to_sdl(schema: &IntrospectionSchema) -> Result<String> {
    let mut types: Vec<&FullType> = schema.types.iter().filter(|t| printed(t)).collect();
    types.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sdl = String::new();
    for ty in types {
        print_type(&mut sdl, ty)?;
    }

    // async-graphql prints the built-in @deprecated only when something is deprecated (it looks
    // at object fields and enum values), and @specifiedBy and @oneOf only when a scalar has a
    // specification URL or an input type is one-of: the standard query does not ask for either,
    // so those two are left out (they are built in; no query needs their definitions).
    let anything_deprecated = schema.types.iter().any(|t| {
        (t.kind == "OBJECT" && t.fields.iter().flatten().any(|f| f.is_deprecated))
            || (t.kind == "ENUM" && t.enum_values.iter().flatten().any(|v| v.is_deprecated))
    });
    let mut directives: Vec<&DirectiveDef> = schema
        .directives
        .iter()
        .filter(|d| match d.name.as_str() {
            "deprecated" => anything_deprecated,
            "specifiedBy" | "oneOf" => false,
            _ => true,
        })
        .collect();
    directives.sort_by(|a, b| a.name.cmp(&b.name));
    for directive in directives {
        if let Some(description) = &directive.description {
            write_description(&mut sdl, 0, description);
        }
        let _ = write!(sdl, "directive @{}", directive.name);
        if !directive.args.is_empty() {
            let args = directive
                .args
                .iter()
                .map(input_value)
                .collect::<Result<Vec<_>>>()?;
            let _ = write!(sdl, "({})", args.join(", "));
        }
        let _ = writeln!(sdl, " on {}", directive.locations.join(" | "));
    }

    let query = schema
        .query_type
        .as_ref()
        .context("the schema has no query type")?;
    sdl.push_str("schema {\n");
    let _ = writeln!(sdl, "\tquery: {}", query.name);
    if let Some(mutation) = &schema.mutation_type {
        let _ = writeln!(sdl, "\tmutation: {}", mutation.name);
    }
    if let Some(subscription) = &schema.subscription_type {
        let _ = writeln!(sdl, "\tsubscription: {}", subscription.name);
    }
    sdl.push_str("}\n");
    Ok(sdl)
}

fn print_type(sdl: &mut String, ty: &FullType) -> Result<()> {
    // `printed` let only named types through.
    let name = ty.name.as_deref().unwrap_or_default();
    if let Some(description) = &ty.description {
        write_description(sdl, 0, description);
    }
    match ty.kind.as_str() {
        "SCALAR" => {
            let _ = write!(sdl, "scalar {name}\n\n");
        }
        "OBJECT" | "INTERFACE" => {
            let keyword = if ty.kind == "OBJECT" { "type" } else { "interface" };
            let _ = write!(sdl, "{keyword} {name}");
            let interfaces = ty
                .interfaces
                .iter()
                .flatten()
                .map(|i| named(i).map(str::to_owned))
                .collect::<Result<Vec<_>>>()?;
            if !interfaces.is_empty() {
                let _ = write!(sdl, " implements {}", interfaces.join(" & "));
            }
            sdl.push_str(" {\n");
            for field in ty.fields.iter().flatten() {
                print_field(sdl, field)?;
            }
            sdl.push_str("}\n\n");
        }
        "ENUM" => {
            let _ = writeln!(sdl, "enum {name} {{");
            for value in ty.enum_values.iter().flatten() {
                if let Some(description) = &value.description {
                    write_description(sdl, 1, description);
                }
                let _ = write!(sdl, "\t{}", value.name);
                write_deprecated(sdl, value.is_deprecated, value.deprecation_reason.as_deref());
                sdl.push('\n');
            }
            sdl.push_str("}\n\n");
        }
        "INPUT_OBJECT" => {
            let _ = writeln!(sdl, "input {name} {{");
            for field in ty.input_fields.iter().flatten() {
                if let Some(description) = &field.description {
                    write_description(sdl, 1, description);
                }
                let _ = writeln!(sdl, "\t{}", input_value(field)?);
            }
            sdl.push_str("}\n\n");
        }
        "UNION" => {
            let _ = write!(sdl, "union {name} =");
            for (i, member) in ty.possible_types.iter().flatten().enumerate() {
                let separator = if i == 0 { " " } else { " | " };
                let _ = write!(sdl, "{separator}{}", named(member)?);
            }
            sdl.push_str("\n\n");
        }
        other => bail!("type `{name}` has an unknown kind `{other}`"),
    }
    Ok(())
}

/// One field of an object or interface. Arguments stay on the field's line unless one has a
/// description; then each goes on its own line after its description. async-graphql starts a
/// new line only where a description is, and this copies it so that the output is byte-equal.
fn print_field(sdl: &mut String, field: &FieldDef) -> Result<()> {
    if field.name.starts_with("__") {
        return Ok(());
    }
    if let Some(description) = &field.description {
        write_description(sdl, 1, description);
    }
    let ty = type_ref(&field.ty)?;
    if field.args.is_empty() {
        let _ = write!(sdl, "\t{}: {ty}", field.name);
    } else {
        let _ = write!(sdl, "\t{}(", field.name);
        let multiline = field.args.iter().any(|a| a.description.is_some());
        for (i, arg) in field.args.iter().enumerate() {
            if i != 0 {
                sdl.push(',');
            }
            if let Some(description) = &arg.description {
                sdl.push('\n');
                write_description(sdl, 2, description);
            }
            if multiline {
                sdl.push_str("\t\t");
            } else if i != 0 {
                sdl.push(' ');
            }
            sdl.push_str(&input_value(arg)?);
        }
        if multiline {
            sdl.push_str("\n\t");
        }
        let _ = write!(sdl, "): {ty}");
    }
    write_deprecated(sdl, field.is_deprecated, field.deprecation_reason.as_deref());
    sdl.push('\n');
    Ok(())
}

/// `name: Type` or `name: Type = default`.
fn input_value(value: &InputValue) -> Result<String> {
    let ty = type_ref(&value.ty)?;
    Ok(match &value.default_value {
        Some(default) => format!("{}: {ty} = {default}", value.name),
        None => format!("{}: {ty}", value.name),
    })
}

/// `Name`, `[Name]`, `Name!`, `[Name!]!`, ...
fn type_ref(ty: &TypeRef) -> Result<String> {
    let inner = || {
        ty.of_type
            .as_deref()
            .with_context(|| format!("a {} type without its inner type", ty.kind))
    };
    Ok(match ty.kind.as_str() {
        "NON_NULL" => format!("{}!", type_ref(inner()?)?),
        "LIST" => format!("[{}]", type_ref(inner()?)?),
        _ => named(ty)?.to_owned(),
    })
}

fn named(ty: &TypeRef) -> Result<&str> {
    ty.name
        .as_deref()
        .with_context(|| format!("a {} type reference without a name", ty.kind))
}

/// A block-string description indented to `level` tabs. A `"""` inside it is escaped (the one
/// sequence a block string cannot hold).
fn write_description(sdl: &mut String, level: usize, description: &str) {
    let tabs = "\t".repeat(level);
    let body = description
        .replace(r#"""""#, r#"\""""#)
        .replace('\n', &format!("\n{tabs}"));
    let _ = writeln!(sdl, "{tabs}\"\"\"\n{tabs}{body}\n{tabs}\"\"\"");
}

fn write_deprecated(sdl: &mut String, deprecated: bool, reason: Option<&str>) {
    if !deprecated {
        return;
    }
    match reason {
        Some(reason) => {
            let _ = write!(sdl, " @deprecated(reason: \"{}\")", escape_string(reason));
        }
        None => sdl.push_str(" @deprecated"),
    }
}

/// A GraphQL string literal's content.
fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: serde_json::Value) -> IntrospectionSchema {
        serde_json::from_value::<Introspection>(serde_json::json!({ "__schema": json }))
            .expect("valid introspection")
            .schema
    }

    fn named_type(name: &str) -> serde_json::Value {
        serde_json::json!({ "kind": "OBJECT", "name": name, "ofType": null })
    }

    #[test]
    fn prints_wrappers_arguments_deprecations_unions_and_the_schema_block() {
        let schema = schema(serde_json::json!({
            "queryType": { "name": "Query" },
            "mutationType": null,
            "subscriptionType": null,
            "types": [
                { "kind": "UNION", "name": "Hit", "description": null, "fields": null,
                  "inputFields": null, "interfaces": null, "enumValues": null,
                  "possibleTypes": [named_type("A"), named_type("B")] },
                { "kind": "OBJECT", "name": "Query", "description": "Root \"\"\" here",
                  "fields": [{
                      "name": "hits", "description": null,
                      "args": [
                          { "name": "first", "description": null, "defaultValue": "10",
                            "type": { "kind": "SCALAR", "name": "Int", "ofType": null } },
                          { "name": "ids", "description": "Which.", "defaultValue": null,
                            "type": { "kind": "NON_NULL", "name": null, "ofType":
                              { "kind": "LIST", "name": null, "ofType":
                                { "kind": "NON_NULL", "name": null, "ofType":
                                  { "kind": "SCALAR", "name": "ID", "ofType": null } } } } }
                      ],
                      "type": { "kind": "LIST", "name": null, "ofType": named_type("Hit") },
                      "isDeprecated": true, "deprecationReason": "use \"search\""
                  }],
                  "inputFields": null, "interfaces": [], "enumValues": null, "possibleTypes": null },
                { "kind": "SCALAR", "name": "Int", "description": null, "fields": null,
                  "inputFields": null, "interfaces": null, "enumValues": null, "possibleTypes": null },
            ],
            "directives": [
                { "name": "deprecated", "description": null, "locations": ["FIELD_DEFINITION", "ENUM_VALUE"],
                  "args": [{ "name": "reason", "description": null, "defaultValue": "\"No longer supported\"",
                             "type": { "kind": "SCALAR", "name": "String", "ofType": null } }] },
                { "name": "specifiedBy", "description": null, "locations": ["SCALAR"], "args": [] }
            ]
        }));
        let expected = "union Hit = A | B\n\n\
            \"\"\"\nRoot \\\"\"\" here\n\"\"\"\n\
            type Query {\n\
            \thits(\t\tfirst: Int = 10,\n\
            \t\t\"\"\"\n\t\tWhich.\n\t\t\"\"\"\n\
            \t\tids: [ID!]!\n\
            \t): [Hit] @deprecated(reason: \"use \\\"search\\\"\")\n\
            }\n\n\
            directive @deprecated(reason: String = \"No longer supported\") on FIELD_DEFINITION | ENUM_VALUE\n\
            schema {\n\tquery: Query\n}\n";
        assert_eq!(to_sdl(&schema).expect("prints"), expected);
    }

    #[test]
    fn a_truncated_type_reference_is_an_error_not_a_panic() {
        let schema = schema(serde_json::json!({
            "queryType": { "name": "Query" },
            "types": [{ "kind": "OBJECT", "name": "Query", "description": null,
                        "fields": [{ "name": "x", "description": null, "args": [],
                                     "type": { "kind": "NON_NULL", "name": null, "ofType": null },
                                     "isDeprecated": false, "deprecationReason": null }],
                        "inputFields": null, "interfaces": [], "enumValues": null, "possibleTypes": null }],
            "directives": []
        }));
        let error = to_sdl(&schema).expect_err("incomplete");
        assert!(error.to_string().contains("NON_NULL"), "{error}");
    }
}
