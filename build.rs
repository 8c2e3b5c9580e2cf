//! Rebuild when a migration, schema or query changes: they are compiled into the binary.
//!
//! Also lists `migrations/` for `src/store/mod.rs` (`$OUT_DIR/migrations.rs`): embedding them
//! with `include_str!` instead of `sqlx::migrate!` keeps sqlx's proc macros, and the second
//! build of sqlx, rustls and tokio they need at compile time, out of every cold build.
use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=schemas");
    println!("cargo:rerun-if-changed=queries");

    let dir =
        Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        // The files sqlx's own resolver takes, `<VERSION>_<DESCRIPTION>.sql`; like it, ignore the rest.
        .filter(|path| path.is_file() && path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut list = String::from("&[\n");
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("{}: file name is not UTF-8", path.display()));
        let Some((version, rest)) = name.split_once('_') else {
            continue;
        };
        let version: i64 = version.parse().unwrap_or_else(|_| {
            panic!(
                "{}: expected an integer version before the first `_`",
                path.display()
            )
        });
        writeln!(
            list,
            "    ({version}, {rest:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    list.push(']');
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    fs::write(&out, list).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
