//! The SDL files under `schemas/` are what the service's GraphQL codegen reads; they must be
//! byte-identical to what the sandbox serves. Regenerate with
//! `cargo run -p sandbox -- sdl <vendor> > schemas/<vendor>.graphql`.

use std::path::PathBuf;

fn schema_file(vendor: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("schemas")
        .join(format!("{vendor}.graphql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_same(vendor: &str, served: String) {
    let file = schema_file(vendor);
    assert!(
        file == served,
        "schemas/{vendor}.graphql differs from the SDL the sandbox serves; regenerate it with \
         `cargo run -p sandbox -- sdl {vendor} > schemas/{vendor}.graphql`"
    );
}

#[test]
fn the_retarus_schema_file_equals_the_served_sdl() {
    assert_same("retarus", sandbox::retarus::sdl());
}

#[test]
fn the_altrata_schema_file_equals_the_served_sdl() {
    assert_same("altrata", sandbox::altrata::sdl());
}

#[test]
fn the_schemas_use_the_shared_date_and_time_scalars() {
    let retarus = sandbox::retarus::sdl();
    assert!(retarus.contains("scalar DateTime") && retarus.contains("type Query {"));
    assert!(retarus.contains("interface Base {"));
    let altrata = sandbox::altrata::sdl();
    assert!(altrata.contains("scalar Date\n") && altrata.contains("scalar DateTime"));
}

#[test]
fn the_roubler_schema_file_equals_the_served_sdl() {
    assert_same("roubler", sandbox::roubler::sdl());
}
