//! Whether the generated types still decode a leaf (a scalar or enum field) whose type the live
//! schema renamed.
//!
//! A query's Rust types decode JSON, not type names: `graphql_client` maps `String` and `ID` to
//! `String`, `Int` to `i64`, `Float` to `f64`, `Boolean` to `bool`, an enum to a generated enum
//! that keeps a value it does not know as `Other(String)`, and each custom scalar to the Rust
//! type the vendor module names for it (`type Date = NaiveDate;` in
//! `src/vendors/<vendor>/datasets.rs`, listed in [`CUSTOM_SCALARS`]). So a leaf renamed from
//! `Date` to `String`, `ID` to `String` or one enum to another still decodes: its values travel
//! as the same JSON strings. That is a notice, not drift. It breaks when the values now travel
//! as JSON the Rust type refuses: a number where it decodes a string (or the reverse), a
//! fraction where it decodes an integer, or a custom scalar whose known format the Rust type
//! does not parse (`DateTime` instants where it decodes `Date`s).
//!
//! A custom scalar this build does not know is taken to travel as a JSON string, as custom
//! scalars conventionally do (every custom scalar of these vendors does); its format is then
//! unknown, which the notice says.

use super::model::{Kind, SchemaModel};

/// A custom scalar of the compiled schemas and how the generated types decode it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CustomScalar {
    pub name: &'static str,
    /// The Rust type the vendor modules map it to (as written there).
    pub rust: &'static str,
    /// The JSON strings that Rust type parses.
    pub format: &'static str,
}

/// Every custom scalar of `schemas/*.graphql`, as the vendor modules map them (a test keeps this
/// list, the schemas and the modules in step).
pub(super) const CUSTOM_SCALARS: [CustomScalar; 2] = [
    CustomScalar {
        name: "Date",
        rust: "NaiveDate",
        format: "a calendar date (YYYY-MM-DD)",
    },
    CustomScalar {
        name: "DateTime",
        rust: "Instant",
        format: "an RFC 3339 instant",
    },
];

/// The JSON a leaf type's values travel as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Json {
    /// Strings; in the format of a known custom scalar, or of any form.
    String(Option<&'static CustomScalar>),
    Integer,
    /// Numbers, fractions included.
    Number,
    Boolean,
}

impl Json {
    fn of(name: &str, kind: Kind) -> Json {
        match (name, kind) {
            ("Int", Kind::Scalar) => Json::Integer,
            ("Float", Kind::Scalar) => Json::Number,
            ("Boolean", Kind::Scalar) => Json::Boolean,
            (_, Kind::Scalar) => Json::String(CUSTOM_SCALARS.iter().find(|s| s.name == name)),
            // Enum values are sent as their names; the rest has no leaf values.
            _ => Json::String(None),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Json::String(_) => "JSON strings",
            Json::Integer => "JSON integers",
            Json::Number => "JSON numbers, fractions included",
            Json::Boolean => "JSON booleans",
        }
    }
}

/// The verdict on a leaf whose type was renamed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LeafFit {
    /// The generated type still decodes every value; why, in a clause.
    Notice(String),
    /// It no longer does; why, in a clause.
    Breaks(String),
}

/// The Rust type `graphql_client` generated for a leaf of `name` (of `kind`).
fn rust_type(name: &str, kind: Kind) -> &'static str {
    match (name, kind) {
        ("String" | "ID", Kind::Scalar) => "String",
        ("Int", Kind::Scalar) => "i64",
        ("Float", Kind::Scalar) => "f64",
        ("Boolean", Kind::Scalar) => "bool",
        (_, Kind::Scalar) => CUSTOM_SCALARS
            .iter()
            .find(|s| s.name == name)
            .map_or("String", |s| s.rust),
        _ => "an enum keeping unknown values as `Other`",
    }
}

/// Whether the types generated for the compiled leaf `expected` decode the values of the live
/// type `live`, which has another name. `None` when either is not a leaf type (an object, an
/// input type, a name the schema lacks): the caller decides.
pub(super) fn leaf_fit(
    compiled: &SchemaModel,
    expected: &str,
    live_schema: &SchemaModel,
    live: &str,
) -> Option<LeafFit> {
    let leaf = |kind: Option<Kind>| kind.filter(|k| matches!(k, Kind::Scalar | Kind::Enum));
    let expected_kind = leaf(compiled.kind(expected))?;
    let live_kind = leaf(live_schema.kind(live))?;
    let (wanted, sent) = (Json::of(expected, expected_kind), Json::of(live, live_kind));
    let rust = rust_type(expected, expected_kind);
    let decodes = match (wanted, sent) {
        (Json::String(None), Json::String(_)) => Ok(None),
        (Json::String(Some(format)), Json::String(None)) => Ok(Some(format)),
        (Json::String(Some(format)), Json::String(Some(now))) if format.rust == now.rust => Ok(Some(format)),
        (Json::String(Some(format)), Json::String(Some(now))) => Err(format!(
            "its values are now {}, which the generated type ({rust}) cannot decode: it parses {}",
            now.format, format.format
        )),
        (Json::Integer, Json::Integer) | (Json::Boolean, Json::Boolean) => Ok(None),
        (Json::Number, Json::Integer | Json::Number) => Ok(None),
        (wanted, sent) => Err(format!(
            "its values now come as {}, which the generated type ({rust}) cannot decode: it takes {}",
            sent.describe(),
            wanted.describe()
        )),
    };
    Some(match decodes {
        Ok(format) => {
            let mut why = format!(
                "its values still come as {}, which the generated type ({rust}) decodes as before",
                sent.describe()
            );
            if let Some(format) = format {
                why.push_str(&format!(
                    "; the schema no longer promises {}, and a value that is not one would fail the run",
                    format.format
                ));
            }
            LeafFit::Notice(why)
        }
        Err(why) => LeafFit::Breaks(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use serde_json::{Value, json};

    fn fit(expected: &str, live: &str) -> LeafFit {
        let schema = SchemaModel::from_sdl(
            "scalar Date scalar DateTime scalar LocalDate enum Status { ON OFF } enum State { ON }
             type Query { x: Int }",
        )
        .expect("parses");
        leaf_fit(&schema, expected, &schema, live).expect("both are leaves")
    }

    fn is_notice(fit: &LeafFit) -> bool {
        matches!(fit, LeafFit::Notice(_))
    }

    #[test]
    fn a_rename_whose_values_travel_as_the_same_json_is_a_notice() {
        for (expected, live) in [
            ("Date", "String"),
            ("String", "Date"),
            ("ID", "String"),
            ("String", "ID"),
            ("Date", "LocalDate"),
            ("Status", "State"),
            ("Status", "String"),
            ("String", "Status"),
            ("Float", "Int"),
        ] {
            let verdict = fit(expected, live);
            assert!(is_notice(&verdict), "{expected} -> {live}: {verdict:?}");
        }
        assert_eq!(
            fit("Date", "String"),
            LeafFit::Notice(
                "its values still come as JSON strings, which the generated type (NaiveDate) decodes \
                 as before; the schema no longer promises a calendar date (YYYY-MM-DD), and a value \
                 that is not one would fail the run"
                    .into()
            )
        );
    }

    #[test]
    fn a_rename_whose_values_the_generated_type_refuses_breaks() {
        for (expected, live) in [
            ("Date", "Int"),
            ("String", "Int"),
            ("Int", "String"),
            ("Float", "String"),
            ("Int", "Float"),
            ("ID", "Int"),
            ("Boolean", "String"),
            ("String", "Boolean"),
            ("Status", "Int"),
            ("Date", "DateTime"),
            ("DateTime", "Date"),
        ] {
            let verdict = fit(expected, live);
            assert!(!is_notice(&verdict), "{expected} -> {live}: {verdict:?}");
        }
        assert_eq!(
            fit("Date", "Int"),
            LeafFit::Breaks(
                "its values now come as JSON integers, which the generated type (NaiveDate) cannot \
                 decode: it takes JSON strings"
                    .into()
            )
        );
    }

    /// The verdicts rest on what these Rust types decode; serde says so here, not a belief.
    #[test]
    fn the_rust_types_decode_what_the_verdicts_say() {
        let decodes = |rust: &str, value: Value| match rust {
            "NaiveDate" => serde_json::from_value::<NaiveDate>(value).is_ok(),
            "Instant" => serde_json::from_value::<crate::datasets::instant::Instant>(value).is_ok(),
            "String" => serde_json::from_value::<String>(value).is_ok(),
            "i64" => serde_json::from_value::<i64>(value).is_ok(),
            "f64" => serde_json::from_value::<f64>(value).is_ok(),
            "bool" => serde_json::from_value::<bool>(value).is_ok(),
            other => panic!("no decoder for {other}"),
        };
        let date = json!("2026-03-10");
        let instant = json!("2026-03-10T09:00:00Z");
        assert!(decodes("NaiveDate", date.clone()) && !decodes("NaiveDate", instant.clone()));
        let instants = "Instant";
        assert!(decodes(instants, instant) && !decodes(instants, date.clone()));
        assert!(decodes("String", date) && !decodes("String", json!(20260310)));
        assert!(!decodes("NaiveDate", json!(20260310)));
        assert!(decodes("f64", json!(3)) && decodes("f64", json!(3.5)));
        assert!(decodes("i64", json!(3)) && !decodes("i64", json!(3.5)) && !decodes("i64", json!("3")));
        assert!(!decodes("bool", json!("true")) && !decodes("String", json!(true)));
        for scalar in &CUSTOM_SCALARS {
            assert!(!decodes(scalar.rust, json!(1)), "{}", scalar.name);
        }
    }

    /// Every custom scalar of the compiled schemas is listed, with the Rust type every vendor
    /// module that uses it maps it to.
    #[test]
    fn the_custom_scalars_are_those_of_the_schemas_mapped_as_the_vendor_modules_map_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for vendor in ["retarus", "roubler", "altrata"] {
            let sdl =
                std::fs::read_to_string(root.join(format!("schemas/{vendor}.graphql"))).expect("schema");
            let module = std::fs::read_to_string(root.join(format!("src/vendors/{vendor}/datasets.rs")))
                .expect("vendor module");
            for line in sdl.lines() {
                let Some(name) = line.trim().strip_prefix("scalar ") else {
                    continue;
                };
                let name = name.trim();
                let scalar = CUSTOM_SCALARS
                    .iter()
                    .find(|s| s.name == name)
                    .unwrap_or_else(|| panic!("{vendor}: scalar {name} is not in CUSTOM_SCALARS"));
                let alias = format!("type {name} = {};", scalar.rust);
                assert!(module.contains(&alias), "{vendor}: no `{alias}`");
            }
        }
    }
}
