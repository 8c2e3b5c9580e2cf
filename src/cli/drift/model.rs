//! The parts of a GraphQL schema a query can depend on ([`SchemaModel`]: types, fields,
//! arguments, input fields, enum values, as [`Ty`] references), read from SDL (the compiled
//! schema in `schemas/`) or from an introspection result (the live one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use anyhow::{Context as _, Result, bail};
use graphql_parser::schema as s;

use crate::cli::schema::{IntrospectionSchema, TypeRef};

/// A type reference: a named type, or a list / non-null wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    Named(String),
    List(Box<Ty>),
    NonNull(Box<Ty>),
}

impl Ty {
    /// The named type inside the wrappers.
    pub(super) fn named(&self) -> &str {
        match self {
            Ty::Named(name) => name,
            Ty::List(inner) | Ty::NonNull(inner) => inner.named(),
        }
    }

    pub(super) fn is_non_null(&self) -> bool {
        matches!(self, Ty::NonNull(_))
    }

    pub(super) fn from_introspection(ty: &TypeRef) -> Result<Ty> {
        let inner = || {
            ty.of_type
                .as_deref()
                .with_context(|| format!("a {} type reference without its inner type", ty.kind))
        };
        Ok(match ty.kind.as_str() {
            "NON_NULL" => Ty::NonNull(Box::new(Ty::from_introspection(inner()?)?)),
            "LIST" => Ty::List(Box::new(Ty::from_introspection(inner()?)?)),
            _ => Ty::Named(
                ty.name
                    .clone()
                    .with_context(|| format!("a {} type reference without a name", ty.kind))?,
            ),
        })
    }

    pub(super) fn from_sdl<'a>(ty: &s::Type<'a, &'a str>) -> Ty {
        match ty {
            s::Type::NamedType(name) => Ty::Named((*name).to_owned()),
            s::Type::ListType(inner) => Ty::List(Box::new(Ty::from_sdl(inner))),
            s::Type::NonNullType(inner) => Ty::NonNull(Box::new(Ty::from_sdl(inner))),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Named(name) => write!(f, "{name}"),
            Ty::List(inner) => write!(f, "[{inner}]"),
            Ty::NonNull(inner) => write!(f, "{inner}!"),
        }
    }
}

/// What kind of type a name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Scalar,
    Object,
    Interface,
    Union,
    Enum,
    InputObject,
}

impl Kind {
    pub(super) fn composite(self) -> bool {
        matches!(self, Kind::Object | Kind::Interface | Kind::Union)
    }

    pub(super) fn from_introspection(kind: &str) -> Result<Kind> {
        Ok(match kind {
            "SCALAR" => Kind::Scalar,
            "OBJECT" => Kind::Object,
            "INTERFACE" => Kind::Interface,
            "UNION" => Kind::Union,
            "ENUM" => Kind::Enum,
            "INPUT_OBJECT" => Kind::InputObject,
            other => bail!("unknown type kind `{other}`"),
        })
    }
}

/// An argument or input field.
#[derive(Debug, Clone)]
pub(crate) struct InputDef {
    pub ty: Ty,
    pub has_default: bool,
}

impl InputDef {
    /// Must be given: non-null and without a default.
    pub(super) fn required(&self) -> bool {
        self.ty.is_non_null() && !self.has_default
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub ty: Ty,
    pub args: BTreeMap<String, InputDef>,
}

#[derive(Debug, Clone)]
pub(crate) struct TypeDef {
    pub kind: Kind,
    pub fields: BTreeMap<String, FieldDef>,
    pub input_fields: BTreeMap<String, InputDef>,
    pub enum_values: HashSet<String>,
}

impl TypeDef {
    pub(super) fn new(kind: Kind) -> TypeDef {
        TypeDef {
            kind,
            fields: BTreeMap::new(),
            input_fields: BTreeMap::new(),
            enum_values: HashSet::new(),
        }
    }
}

/// The parts of a schema a query can depend on.
#[derive(Debug, Clone)]
pub(crate) struct SchemaModel {
    pub query_type: String,
    pub types: HashMap<String, TypeDef>,
}

const BUILT_IN_SCALARS: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

impl SchemaModel {
    /// From an introspection result (the live schema).
    pub(crate) fn from_introspection(schema: &IntrospectionSchema) -> Result<SchemaModel> {
        let query_type = schema
            .query_type
            .as_ref()
            .context("the schema has no query type")?
            .name
            .clone();
        let mut types = HashMap::new();
        for ty in &schema.types {
            let Some(name) = &ty.name else { continue };
            let mut def =
                TypeDef::new(Kind::from_introspection(&ty.kind).with_context(|| format!("type {name}"))?);
            for field in ty.fields.iter().flatten() {
                let args = field
                    .args
                    .iter()
                    .map(|a| {
                        let ty = Ty::from_introspection(&a.ty)?;
                        Ok((
                            a.name.clone(),
                            InputDef {
                                ty,
                                has_default: a.default_value.is_some(),
                            },
                        ))
                    })
                    .collect::<Result<_>>()
                    .with_context(|| format!("{name}.{}", field.name))?;
                let ty =
                    Ty::from_introspection(&field.ty).with_context(|| format!("{name}.{}", field.name))?;
                def.fields.insert(field.name.clone(), FieldDef { ty, args });
            }
            for input in ty.input_fields.iter().flatten() {
                let ty =
                    Ty::from_introspection(&input.ty).with_context(|| format!("{name}.{}", input.name))?;
                def.input_fields.insert(
                    input.name.clone(),
                    InputDef {
                        ty,
                        has_default: input.default_value.is_some(),
                    },
                );
            }
            def.enum_values = ty.enum_values.iter().flatten().map(|v| v.name.clone()).collect();
            types.insert(name.clone(), def);
        }
        Ok(SchemaModel::with_built_ins(query_type, types))
    }

    /// From SDL (the compiled-in `schemas/<kind>.graphql`).
    pub(crate) fn from_sdl(sdl: &str) -> Result<SchemaModel> {
        let document = graphql_parser::parse_schema::<&str>(sdl).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut query_type = "Query".to_owned();
        let mut types = HashMap::new();
        for definition in &document.definitions {
            match definition {
                s::Definition::SchemaDefinition(schema) => {
                    if let Some(query) = schema.query {
                        query_type = query.to_owned();
                    }
                }
                s::Definition::TypeDefinition(ty) => {
                    let (name, def) = match ty {
                        s::TypeDefinition::Scalar(t) => (t.name, TypeDef::new(Kind::Scalar)),
                        s::TypeDefinition::Object(t) => (
                            t.name,
                            TypeDef {
                                fields: sdl_fields(&t.fields),
                                ..TypeDef::new(Kind::Object)
                            },
                        ),
                        s::TypeDefinition::Interface(t) => (
                            t.name,
                            TypeDef {
                                fields: sdl_fields(&t.fields),
                                ..TypeDef::new(Kind::Interface)
                            },
                        ),
                        s::TypeDefinition::Union(t) => (t.name, TypeDef::new(Kind::Union)),
                        s::TypeDefinition::Enum(t) => (
                            t.name,
                            TypeDef {
                                enum_values: t.values.iter().map(|v| v.name.to_owned()).collect(),
                                ..TypeDef::new(Kind::Enum)
                            },
                        ),
                        s::TypeDefinition::InputObject(t) => (
                            t.name,
                            TypeDef {
                                input_fields: sdl_inputs(&t.fields),
                                ..TypeDef::new(Kind::InputObject)
                            },
                        ),
                    };
                    types.insert(name.to_owned(), def);
                }
                s::Definition::TypeExtension(_) | s::Definition::DirectiveDefinition(_) => {}
            }
        }
        Ok(SchemaModel::with_built_ins(query_type, types))
    }

    pub(super) fn with_built_ins(query_type: String, mut types: HashMap<String, TypeDef>) -> SchemaModel {
        for scalar in BUILT_IN_SCALARS {
            types
                .entry(scalar.to_owned())
                .or_insert_with(|| TypeDef::new(Kind::Scalar));
        }
        SchemaModel { query_type, types }
    }

    pub(super) fn kind(&self, name: &str) -> Option<Kind> {
        self.types.get(name).map(|t| t.kind)
    }

    pub(super) fn field(&self, ty: &str, field: &str) -> Option<&FieldDef> {
        self.types.get(ty)?.fields.get(field)
    }
}

fn sdl_inputs<'a>(values: &[s::InputValue<'a, &'a str>]) -> BTreeMap<String, InputDef> {
    values
        .iter()
        .map(|v| {
            let def = InputDef {
                ty: Ty::from_sdl(&v.value_type),
                has_default: v.default_value.is_some(),
            };
            (v.name.to_owned(), def)
        })
        .collect()
}

fn sdl_fields<'a>(fields: &[s::Field<'a, &'a str>]) -> BTreeMap<String, FieldDef> {
    fields
        .iter()
        .map(|f| {
            let def = FieldDef {
                ty: Ty::from_sdl(&f.field_type),
                args: sdl_inputs(&f.arguments),
            };
            (f.name.to_owned(), def)
        })
        .collect()
}
