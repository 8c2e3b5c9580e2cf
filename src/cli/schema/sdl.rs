//! Prints an introspected schema as SDL, in the layout of async-graphql's `Schema::sdl()` so a
//! pulled schema diffs cleanly against the checked-in reconstruction.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};

use super::introspection::{DirectiveDef, FieldDef, FullType, InputValue, IntrospectionSchema, TypeRef};

/// The scalars every GraphQL schema has; SDL leaves them out.
const BUILT_IN_SCALARS: &[&str] = &["Int", "Float", "String", "Boolean", "ID"];

/// Whether a type appears in the SDL (introspection types and built-in scalars do not).
pub(super) fn printed(ty: &FullType) -> bool {
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
    use crate::cli::schema::Introspection;

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
