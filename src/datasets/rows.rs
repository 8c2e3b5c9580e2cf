//! Typed rows: what a mapped upstream record becomes before it is written, and their encoding
//! in PostgreSQL's COPY text format.
//!
//! Each table has one row struct, declared with [`table_row!`]: its fields are the table's data
//! columns in write order, and the same declaration names the table, its natural key, its scope
//! column and its window column ([`TableRow::spec`]). Nothing else lists the columns: the writer
//! builds its COPY, delete and upsert statements from the spec, and a test checks every struct
//! against its table in the database (names, order-independent, and types, via
//! [`TableRow::column_types`]).
//!
//! A field's type says how it is written ([`Column`]): `Option` fields become SQL NULL when the
//! vendor sent nothing, so nothing is unwrapped. Text is trimmed on the way out because some
//! vendors pad fields with spaces (Retarus `trackingId`); NaN and infinities are stored as
//! unknown. Encoding appends to one buffer per page: no allocation per row or cell.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::TableSpec;

/// An instant in COPY text (`2026-01-31 23:59:59.123+00`), written digit by digit: the general
/// formatter allocated a string per cell, and `write!` with padded fields still cost a visible
/// share of the loader's time (a Retarus record holds a dozen instants).
fn write_instant(at: &DateTime<Utc>, out: &mut String) {
    use chrono::{Datelike, Timelike};
    let nanos = at.nanosecond();
    let Ok(year) = u32::try_from(at.year()) else {
        out.push_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        // Years outside four digits and leap seconds: the general formatter knows them.
        out.push_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, at.month(), 2);
    out.push('-');
    push_digits(out, at.day(), 2);
    out.push(' ');
    push_digits(out, at.hour(), 2);
    out.push(':');
    push_digits(out, at.minute(), 2);
    out.push(':');
    push_digits(out, at.second(), 2);
    if nanos != 0 {
        out.push('.');
        push_digits(out, nanos, 9);
    }
    out.push_str("+00");
}

/// Appends `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        // A digit 0-9: always an ASCII character.
        out.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

fn escape(text: &str, out: &mut String) {
    // Almost no vendor text needs escaping: copy it whole instead of char by char (the per-char
    // loop was a visible share of the loader's CPU time).
    if !text
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | b'\0'))
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            // NUL cannot be stored in PostgreSQL text at all; drop it rather than fail the page.
            '\0' => {}
            c => out.push(c),
        }
    }
}

/// Formats an instant the way the vendors send them (milliseconds, `Z`), for JSON cells built
/// from typed fields.
pub fn instant_text(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A value that fills one column: how it is written in COPY text, and which PostgreSQL types
/// (`information_schema.columns.data_type`) a column holding it may have.
pub trait Column {
    /// The column types this value may be stored in.
    fn sql_types() -> &'static [&'static str]
    where
        Self: Sized;
    /// Appends the value in COPY text (`\N` for NULL, backslash escapes for the rest).
    fn write_copy(&self, out: &mut String);
}

const TEXT: &[&str] = &["text"];
const INTEGER: &[&str] = &["bigint", "integer"];
const NUMBER: &[&str] = &["numeric", "double precision"];
const BOOLEAN: &[&str] = &["boolean"];
const INSTANT: &[&str] = &["timestamp with time zone"];
const DAY: &[&str] = &["date"];
const JSON: &[&str] = &["jsonb"];

impl Column for String {
    fn sql_types() -> &'static [&'static str] {
        TEXT
    }
    fn write_copy(&self, out: &mut String) {
        escape(self.trim(), out);
    }
}

impl Column for &str {
    fn sql_types() -> &'static [&'static str] {
        TEXT
    }
    fn write_copy(&self, out: &mut String) {
        escape(self.trim(), out);
    }
}

impl Column for i64 {
    fn sql_types() -> &'static [&'static str] {
        INTEGER
    }
    // `itoa` rather than `Display`: the formatter's machinery was a visible share of encoding.
    fn write_copy(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl Column for i32 {
    fn sql_types() -> &'static [&'static str] {
        INTEGER
    }
    fn write_copy(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl Column for f64 {
    fn sql_types() -> &'static [&'static str] {
        NUMBER
    }
    fn write_copy(&self, out: &mut String) {
        use std::fmt::Write;
        if self.is_finite() {
            // `Display` of f64 never uses an exponent and round-trips exactly.
            let _ = write!(out, "{self}");
        } else {
            // NaN and infinities have no place in an analyst's sum: store them as unknown.
            out.push_str("\\N");
        }
    }
}

impl Column for bool {
    fn sql_types() -> &'static [&'static str] {
        BOOLEAN
    }
    fn write_copy(&self, out: &mut String) {
        out.push(if *self { 't' } else { 'f' });
    }
}

impl Column for DateTime<Utc> {
    fn sql_types() -> &'static [&'static str] {
        INSTANT
    }
    fn write_copy(&self, out: &mut String) {
        write_instant(self, out);
    }
}

impl Column for NaiveDate {
    fn sql_types() -> &'static [&'static str] {
        DAY
    }
    fn write_copy(&self, out: &mut String) {
        use chrono::Datelike;
        match u32::try_from(self.year()) {
            Ok(year) if year <= 9999 => {
                push_digits(out, year, 4);
                out.push('-');
                push_digits(out, self.month(), 2);
                out.push('-');
                push_digits(out, self.day(), 2);
            }
            // Years outside four digits: the general formatter knows them.
            _ => {
                use std::fmt::Write;
                let _ = write!(out, "{}", self.format("%Y-%m-%d"));
            }
        }
    }
}

impl Column for serde_json::Value {
    fn sql_types() -> &'static [&'static str] {
        JSON
    }
    fn write_copy(&self, out: &mut String) {
        if self.is_null() {
            out.push_str("\\N");
        } else {
            escape(&self.to_string(), out);
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn sql_types() -> &'static [&'static str] {
        T::sql_types()
    }
    fn write_copy(&self, out: &mut String) {
        match self {
            Some(value) => value.write_copy(out),
            None => out.push_str("\\N"),
        }
    }
}

/// A table's row struct (declared with [`table_row!`]): its table's layout, its data columns in
/// COPY text and a hash of its natural key.
pub trait TableRow {
    /// The table's layout, built from the same declaration as the struct.
    fn spec() -> &'static TableSpec;
    /// Per data column (in [`TableSpec::columns`] order), the column types its field may be
    /// stored in.
    fn column_types() -> Vec<&'static [&'static str]>;
    /// Appends every data column, each preceded by a tab.
    fn write_columns(&self, out: &mut String);
    /// A hash of the natural key (`spec.key`) as written, NULL told apart from empty text;
    /// `scratch` is a buffer to write into, so hashing allocates nothing.
    fn key_hash(&self, scratch: &mut String) -> u64;
}

/// Hashes key columns the way [`TableRow::key_hash`] promises.
pub fn hash_key_columns(columns: &[&dyn Column], scratch: &mut String) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for column in columns {
        scratch.clear();
        // As written: `\N` for NULL, so NULL and empty text differ.
        column.write_copy(scratch);
        scratch.as_str().hash(&mut hasher);
    }
    hasher.finish()
}

/// Declares a table's row struct and its layout in one place.
///
/// ```ignore
/// table_row! {
///     /// A location of a company.
///     pub(crate) struct LocationRow<'a> in "roubler.locations" {
///         key: [company_id, location_id],
///         scope: company_id,
///         columns: {
///             company_id: &'a str,
///             location_id: String,
///             name: Option<String>,
///         }
///     }
/// }
/// ```
///
/// `scope:` (the column holding the scope id) and `window:` (the column a load window applies
/// to) are optional, in that order. The fields are the data columns in write order; `source`,
/// `_run_id` and `_loaded_at` are added by the writer. A key, scope or window column that is not
/// a field does not compile.
#[macro_export]
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> in $table:literal { $($rest:tt)* }
    ) => {
        $crate::table_row!(@emit [$(#[$meta])*] [$vis] $name [<$lt>] [$name<'static>] $table $($rest)*);
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal { $($rest:tt)* }
    ) => {
        $crate::table_row!(@emit [$(#[$meta])*] [$vis] $name [] [$name] $table $($rest)*);
    };
    (@emit [$($meta:tt)*] [$vis:vis] $name:ident [$($generics:tt)*] [$($static_ty:tt)*] $table:literal
        key: [$($key:ident),+ $(,)?],
        $(scope: $scope:ident,)?
        $(window: $window:ident,)?
        columns: {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),+ $(,)?
        } $(,)?
    ) => {
        $($meta)*
        $vis struct $name $($generics)* {
            $( $(#[$field_meta])* pub $field: $ty, )+
        }

        impl $($generics)* $crate::datasets::rows::TableRow for $name $($generics)* {
            fn spec() -> &'static $crate::datasets::TableSpec {
                static SPEC: $crate::datasets::TableSpec = $crate::datasets::TableSpec {
                    table: $table,
                    columns: &[$(stringify!($field)),+],
                    key: &[$(stringify!($key)),+],
                    scope_column: $crate::table_row!(@column $($scope)?),
                    window_column: $crate::table_row!(@column $($window)?),
                    column_types: <$($static_ty)* as $crate::datasets::rows::TableRow>::column_types,
                };
                &SPEC
            }
            fn column_types() -> Vec<&'static [&'static str]> {
                vec![$(<$ty as $crate::datasets::rows::Column>::sql_types()),+]
            }
            fn write_columns(&self, out: &mut String) {
                $(
                    out.push('\t');
                    $crate::datasets::rows::Column::write_copy(&self.$field, out);
                )+
            }
            fn key_hash(&self, scratch: &mut String) -> u64 {
                $crate::datasets::rows::hash_key_columns(
                    &[$(&self.$key as &dyn $crate::datasets::rows::Column),+],
                    scratch,
                )
            }
        }
    };
    (@column) => { None };
    (@column $column:ident) => { Some(stringify!($column)) };
}

pub use table_row;

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(value: &impl Column) -> String {
        let mut out = String::new();
        value.write_copy(&mut out);
        out
    }

    #[test]
    fn padded_text_is_trimmed_and_nulls_are_written_as_backslash_n() {
        assert_eq!(copy(&Some("12345   ".to_string())), "12345");
        assert_eq!(copy(&"  bor\trowed \n"), "bor\\trowed");
        assert_eq!(copy(&Option::<String>::None), "\\N");
        assert_eq!(copy(&Option::<i64>::None), "\\N");
        assert_eq!(copy(&Some(serde_json::Value::Null)), "\\N");
        assert_eq!(copy(&Some(serde_json::json!({"a": 1}))), r#"{"a":1}"#);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(copy(&"a\tb\nc\\d\r\0e".to_string()), "a\\tb\\nc\\\\d\\re");
    }

    #[test]
    fn instants_are_written_in_utc_with_their_fraction() {
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        assert_eq!(copy(&at("2026-03-01T10:20:30Z")), "2026-03-01 10:20:30+00");
        assert_eq!(
            copy(&at("2026-03-01T10:20:30.5+02:00")),
            "2026-03-01 08:20:30.500000000+00"
        );
        assert_eq!(
            copy(&at("0999-01-02T03:04:05.000001Z")),
            "0999-01-02 03:04:05.000001000+00"
        );
        assert_eq!(
            copy(&at("2026-12-31T23:59:59.999999999Z")),
            "2026-12-31 23:59:59.999999999+00"
        );
        // Outside four-digit years, as the general formatter writes them (PostgreSQL reads both).
        let late = DateTime::from_timestamp(253_402_300_800, 0).unwrap(); // 10000-01-01
        assert_eq!(copy(&late), "+10000-01-01T00:00:00Z");
        let day = NaiveDate::from_ymd_opt(2026, 3, 1);
        assert_eq!(copy(&day), "2026-03-01");
        assert_eq!(copy(&NaiveDate::from_ymd_opt(7, 12, 9)), "0007-12-09");
    }

    #[test]
    fn integers_are_written_in_full() {
        assert_eq!(copy(&i64::MIN), "-9223372036854775808");
        assert_eq!(copy(&Some(i32::MAX)), "2147483647");
        assert_eq!(copy(&0i64), "0");
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(copy(&Some(f64::NAN)), "\\N");
        assert_eq!(copy(&f64::INFINITY), "\\N");
        assert_eq!(copy(&Some(240000.5)), "240000.5");
        assert_eq!(copy(&Some(true)), "t");
    }
}
