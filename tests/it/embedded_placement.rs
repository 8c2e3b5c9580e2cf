//! Where the embedded server's cluster lives when we run as root (as CI does): PostgreSQL runs as
//! `postgres` (or `nobody`), which cannot enter a directory only root may enter, such as a clone
//! in a `mktemp -d` or under `/root`. Such a data directory moves to one of the server's own, and
//! where that cannot work either, the error names the directory in the way.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reporting_etl::store::{self, EmbeddedPostgres};

use crate::support;

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A directory only its owner (root, in CI) may enter, as `mktemp -d` makes.
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Removes a relocated cluster when the test ends, passed or not (it lies outside any tempdir).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_data_dir_below_a_private_directory_works_and_its_cluster_is_reused() {
    let private = private_tempdir();
    let data_dir = private.path().join("clone").join(".reporting-etl").join("pg");
    let mut cleanup = RemoveOnDrop(None);

    // First process: the service binary with no database.url starts the server and migrates.
    let first = support::binary()
        .arg("migrate")
        .env("REPORTING_ETL__DATABASE__DATA_DIR", &data_dir)
        .current_dir(private.path())
        .output()
        .unwrap();
    let log = stderr(&first);
    assert!(first.status.success(), "{log}");

    // Second start: the same configured directory finds the same cluster, schema included.
    let mut server = EmbeddedPostgres::start(&data_dir).unwrap();
    if running_as_root() {
        cleanup.0 = Some(server.data_dir().to_path_buf());
        assert!(
            server.data_dir().starts_with(EmbeddedPostgres::RELOCATION_PARENT),
            "the cluster is not in a place of the server's own: {}",
            server.data_dir().display()
        );
        assert!(
            log.contains(&server.data_dir().display().to_string()),
            "the first run did not name where the cluster went: {log}"
        );
        let note = server.relocation_note().expect("a relocation is explained");
        assert!(
            note.contains(&private.path().display().to_string()),
            "the note does not name the directory in the way: {note}"
        );
        assert!(
            !data_dir.join("cluster").exists(),
            "a cluster was also made in the unreachable directory"
        );
    } else {
        // Not root: the server runs as us and may enter our own private directory.
        assert_eq!(server.data_dir(), data_dir.canonicalize().unwrap());
        assert!(server.relocation_note().is_none());
    }
    assert!(server.data_dir().join("cluster").join("PG_VERSION").is_file());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let migrations: i64 = runtime.block_on(async {
        let pool = store::connect(&server.url(), 1).await.unwrap();
        // Both ledgers: sqlx's up to migration 8, ours from 9 on (docs/migrations.md).
        let (count,): (i64,) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM _sqlx_migrations) + (SELECT count(*) FROM etl.schema_migrations)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        count
    });
    assert_eq!(
        migrations as usize,
        store::MIGRATOR.iter().count(),
        "the second start found a cluster without the first run's schema"
    );
    server.stop().unwrap();
}

#[test]
fn with_nowhere_to_put_the_cluster_the_error_names_the_directory_in_the_way() {
    if !running_as_root() {
        eprintln!("skipped: only root's server runs as another user");
        return;
    }
    let private = private_tempdir();
    let data_dir = private.path().join("clone").join(".reporting-etl").join("pg");
    // The place of the server's own is below a private directory too.
    let elsewhere = private_tempdir();
    let relocation_parent = elsewhere.path().join("clusters");

    let error = EmbeddedPostgres::start_relocating_under(&data_dir, &relocation_parent)
        .expect_err("a server its user cannot reach started");
    let message = format!("{error:#}");
    for needed in [
        private.path().display().to_string(),
        elsewhere.path().display().to_string(),
        "mode 0700, owner root".to_owned(),
        "database.data_dir".to_owned(),
        "run as a user other than root".to_owned(),
    ] {
        assert!(message.contains(&needed), "`{needed}` missing from: {message}");
    }
    let user = ["postgres", "nobody"]
        .into_iter()
        .find(|user| message.contains(&format!("runs as `{user}`")));
    assert!(user.is_some(), "the server's user is not named: {message}");
    assert_no_cluster_below(elsewhere.path());
}

#[test]
fn a_cluster_that_became_unreachable_is_refused_not_replaced_by_an_empty_one() {
    if !running_as_root() {
        eprintln!("skipped: only root's server runs as another user");
        return;
    }
    let dir = support::shared_tempdir();
    let data_dir = dir.path().join("pg");
    let mut server = EmbeddedPostgres::start(&data_dir).unwrap();
    server.stop().unwrap();

    // Someone closes the directory above it (as `mktemp -d` would have).
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let relocation_parent = support::shared_tempdir();
    let error = EmbeddedPostgres::start_relocating_under(&data_dir, relocation_parent.path())
        .expect_err("an unreachable cluster was replaced");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("chmod o+x {}", dir.path().display())),
        "the fix is not named: {message}"
    );
    assert!(message.contains("database.data_dir"), "{message}");
    assert_no_cluster_below(relocation_parent.path());
}

fn assert_no_cluster_below(dir: &Path) {
    let found = walk(dir).into_iter().find(|path| path.ends_with("PG_VERSION"));
    assert!(found.is_none(), "a cluster was made anyway: {found:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            paths.extend(walk(&path));
        }
        paths.push(path);
    }
    paths
}
