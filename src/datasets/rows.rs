//! Typed cells: what a mapped upstream record becomes before it is written, and their encoding
//! in PostgreSQL's COPY text format.
//!
//! Mapping code turns every `Option` field into a [`Cell`] with `.into()`, so a `None` from the
//! vendor becomes SQL NULL deliberately and nothing is unwrapped. Text is trimmed on the way in
//! because some vendors pad fields with spaces (Retarus `trackingId`).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// One column value of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Num(Option<f64>),
    Bool(Option<bool>),
    Ts(Option<DateTime<Utc>>),
    Date(Option<NaiveDate>),
    Json(Option<serde_json::Value>),
}

/// One row in the column order of its table's [`super::TableSpec`] (without `source`, `_run_id`
/// and `_loaded_at`, which the writer adds).
pub type Row = Vec<Cell>;

impl From<Option<String>> for Cell {
    fn from(value: Option<String>) -> Cell {
        Cell::Text(value.map(trimmed))
    }
}

impl From<String> for Cell {
    fn from(value: String) -> Cell {
        Cell::Text(Some(trimmed(value)))
    }
}

impl From<&str> for Cell {
    fn from(value: &str) -> Cell {
        Cell::Text(Some(value.trim().to_owned()))
    }
}

impl From<Option<&str>> for Cell {
    fn from(value: Option<&str>) -> Cell {
        Cell::Text(value.map(|v| v.trim().to_owned()))
    }
}

impl From<Option<i64>> for Cell {
    fn from(value: Option<i64>) -> Cell {
        Cell::Int(value)
    }
}

impl From<Option<i32>> for Cell {
    fn from(value: Option<i32>) -> Cell {
        Cell::Int(value.map(i64::from))
    }
}

impl From<Option<f64>> for Cell {
    fn from(value: Option<f64>) -> Cell {
        // NaN and infinities have no place in an analyst's sum: store them as unknown.
        Cell::Num(value.filter(|v| v.is_finite()))
    }
}

impl From<Option<bool>> for Cell {
    fn from(value: Option<bool>) -> Cell {
        Cell::Bool(value)
    }
}

impl From<bool> for Cell {
    fn from(value: bool) -> Cell {
        Cell::Bool(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Cell {
    fn from(value: Option<DateTime<Utc>>) -> Cell {
        Cell::Ts(value)
    }
}

impl From<DateTime<Utc>> for Cell {
    fn from(value: DateTime<Utc>) -> Cell {
        Cell::Ts(Some(value))
    }
}

impl From<Option<NaiveDate>> for Cell {
    fn from(value: Option<NaiveDate>) -> Cell {
        Cell::Date(value)
    }
}

impl From<NaiveDate> for Cell {
    fn from(value: NaiveDate) -> Cell {
        Cell::Date(Some(value))
    }
}

impl From<Option<serde_json::Value>> for Cell {
    fn from(value: Option<serde_json::Value>) -> Cell {
        Cell::Json(value.filter(|v| !v.is_null()))
    }
}

fn trimmed(value: String) -> String {
    let trimmed = value.trim();
    if trimmed.len() == value.len() {
        value
    } else {
        trimmed.to_owned()
    }
}

impl Cell {
    /// Appends this cell in COPY text format (`\N` for NULL, backslash escapes for the rest).
    pub fn write_copy(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Cell::Text(Some(text)) => escape(text, out),
            Cell::Int(Some(n)) => {
                let _ = write!(out, "{n}");
            }
            Cell::Num(Some(n)) => {
                // `Display` of f64 never uses an exponent and round-trips exactly.
                let _ = write!(out, "{n}");
            }
            Cell::Bool(Some(b)) => out.push(if *b { 't' } else { 'f' }),
            Cell::Ts(Some(at)) => write_instant(at, out),
            Cell::Date(Some(day)) => {
                let _ = write!(out, "{}", day.format("%Y-%m-%d"));
            }
            Cell::Json(Some(value)) => escape(&value.to_string(), out),
            _ => out.push_str("\\N"),
        }
    }
}

/// An instant in COPY text (`2026-01-31 23:59:59.123+00`), formatted field by field: the
/// general formatter allocated a string per cell, a visible share of the loader's time.
fn write_instant(at: &DateTime<Utc>, out: &mut String) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        // Years outside four digits and leap seconds: the general formatter knows them.
        out.push_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if nanos != 0 {
        let _ = write!(out, ".{nanos:09}");
    }
    out.push_str("+00");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(cell: Cell) -> String {
        let mut out = String::new();
        cell.write_copy(&mut out);
        out
    }

    #[test]
    fn padded_text_is_trimmed_and_nulls_are_written_as_backslash_n() {
        assert_eq!(copy(Some("12345   ".to_string()).into()), "12345");
        assert_eq!(copy(Option::<String>::None.into()), "\\N");
        assert_eq!(copy(Option::<i32>::None.into()), "\\N");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(copy(Cell::from("a\tb\nc\\d")), "a\\tb\\nc\\\\d");
    }

    #[test]
    fn instants_are_written_in_utc_with_their_fraction() {
        let at = |s: &str| Cell::Ts(Some(DateTime::parse_from_rfc3339(s).unwrap().to_utc()));
        assert_eq!(copy(at("2026-03-01T10:20:30Z")), "2026-03-01 10:20:30+00");
        assert_eq!(
            copy(at("2026-03-01T10:20:30.5+02:00")),
            "2026-03-01 08:20:30.500000000+00"
        );
        assert_eq!(
            copy(at("0999-01-02T03:04:05.000001Z")),
            "0999-01-02 03:04:05.000001000+00"
        );
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(copy(Some(f64::NAN).into()), "\\N");
        assert_eq!(copy(Some(240000.5).into()), "240000.5");
    }
}
