//! Rebuild when a migration, schema or query changes: they are compiled into the binary.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=schemas");
    println!("cargo:rerun-if-changed=queries");
}
