//! The analysts' data dictionary, generated from the live database: every table and view of the
//! service's schemas with its columns, types, keys and comments, as Markdown.
//!
//! `docs/data-dictionary.md` is this output; a test regenerates it from a freshly migrated
//! database and fails when it differs, so a migration cannot change a table silently.

use std::fmt::Write;

use anyhow::{Context, Result};
use sqlx::PgPool;

use crate::catalog::{Catalog, SourceKind};

/// The schemas documented, in order: the service's own, its raw archive, then one per vendor of
/// `catalog` (named as its kind).
pub(crate) fn schemas(catalog: Catalog) -> Vec<&'static str> {
    ["etl", "archive"]
        .into_iter()
        .chain(catalog.kinds().map(SourceKind::as_str))
        .collect()
}

/// The dictionary as Markdown, of the service's schemas and those of the vendors in `catalog`
/// (`vendors::CATALOG`).
pub async fn generate(pool: &PgPool, catalog: Catalog) -> Result<String> {
    let tables: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text,
                CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END,
                obj_description(c.oid, 'pg_class')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'v', 'p')
         ORDER BY array_position($1, n.nspname::text), c.relname",
    )
    .bind(schemas(catalog))
    .fetch_all(pool)
    .await
    .context("listing tables")?;
    let mut out = String::from(
        "# Data dictionary\n\nGenerated from the database by `cargo test --test it dictionary` \
         (set `UPDATE_DATA_DICTIONARY=1` to rewrite it). Do not edit by hand.\n",
    );
    let mut current_schema = String::new();
    for (schema, table, kind, comment) in tables {
        if schema != current_schema {
            let _ = write!(out, "\n## Schema `{schema}`\n");
            current_schema = schema.clone();
        }
        let _ = write!(
            out,
            "\n### `{schema}.{table}` ({kind})\n\n{}\n\n",
            comment.unwrap_or_default()
        );
        let columns = columns(pool, &schema, &table).await?;
        out.push_str("| column | type | null | key | meaning |\n|---|---|---|---|---|\n");
        for Column {
            name,
            data_type,
            nullable,
            key,
            comment,
        } in columns
        {
            let _ = writeln!(
                out,
                "| `{name}` | {data_type} | {} | {} | {} |",
                if nullable { "yes" } else { "no" },
                if key { "PK" } else { "" },
                comment.unwrap_or_default().replace('|', "\\|").replace('\n', " ")
            );
        }
    }
    Ok(out)
}

/// One column of a table, as the catalog describes it.
#[derive(Debug)]
pub(crate) struct Column {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    /// Part of the primary key.
    pub key: bool,
    pub comment: Option<String>,
}

// Written out, not derived: sqlx's derive macro costs every cold build a second compile of sqlx (see build.rs).
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for Column {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(Self {
            name: row.try_get("name")?,
            data_type: row.try_get("data_type")?,
            nullable: row.try_get("nullable")?,
            key: row.try_get("key")?,
            comment: row.try_get("comment")?,
        })
    }
}

/// The columns of `schema.table` in table order (also read by `dbt sources`).
pub(crate) async fn columns(pool: &PgPool, schema: &str, table: &str) -> Result<Vec<Column>> {
    sqlx::query_as(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS data_type,
                NOT a.attnotnull AS nullable, COALESCE(a.attnum = ANY(i.indkey), false) AS key,
                col_description(c.oid, a.attnum) AS comment
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
         WHERE n.nspname = $1 AND c.relname = $2
         ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .with_context(|| format!("listing columns of {schema}.{table}"))
}
