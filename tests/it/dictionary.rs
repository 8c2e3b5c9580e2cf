//! The committed data dictionary matches what the migrations create: a migration that changes a
//! table without regenerating `docs/data-dictionary.md` fails here.

use crate::support;

use reporting_etl::store::dictionary;
use reporting_etl::vendors;

#[tokio::test]
async fn the_committed_data_dictionary_matches_the_migrated_database() {
    let db = support::TestDb::new().await;
    let generated = dictionary::generate(&db.pool, vendors::CATALOG).await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/data-dictionary.md");
    if std::env::var_os("UPDATE_DATA_DICTIONARY").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/data-dictionary.md is out of date with the migrations; regenerate it with \
         `UPDATE_DATA_DICTIONARY=1 cargo test --test dictionary` and commit it"
    );
}
