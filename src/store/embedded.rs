//! The embedded default database: a private PostgreSQL server started from the machine's own
//! `initdb`/`pg_ctl` binaries in a data directory of ours, so `demo` and `cargo test` work on a
//! fresh machine with no database configured.
//!
//! The data directory survives restarts. A server that another process of ours already runs in
//! the same directory is reused and left running; one we started is stopped by [`EmbeddedPostgres::stop`].
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` (or `nobody`) user.
//!
//! # Where the cluster lives
//!
//! That user must be able to enter every directory above the data directory. A clone under
//! `/root` or in a `mktemp -d` (both `0700`) shuts it out, so as root a data directory it cannot
//! reach is replaced by one of its own under [`EmbeddedPostgres::RELOCATION_PARENT`], named after the configured
//! path (so the next run from the same place finds the same cluster). A configured directory that
//! already holds a cluster is never replaced: that would look like lost data. Where neither works,
//! the error names the directory in the way, the user and the fixes.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// Database created inside the embedded server.
pub(crate) const DATABASE: &str = "reporting_etl";

/// The unprivileged user the server runs as when we are root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// Why the cluster is not in the configured data directory.
#[derive(Debug, Clone)]
struct Relocation {
    /// The configured data directory, resolved.
    configured: PathBuf,
    /// The directory above it that the server's user cannot enter.
    blocked_by: PathBuf,
    user: String,
}

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<ServerUser>,
    relocation: Option<Relocation>,
    /// Whether this process started the server (and so stops it).
    owned: bool,
}

impl EmbeddedPostgres {
    /// Where a cluster moves when, as root, the server's user cannot reach the configured data directory.
    pub const RELOCATION_PARENT: &str = "/var/lib/reporting-etl";

    /// Starts (or joins) the server in `data_dir`, creating the cluster on first use. As root,
    /// a `data_dir` the server's user cannot reach is replaced by one under [`EmbeddedPostgres::RELOCATION_PARENT`].
    pub fn start(data_dir: &Path) -> Result<EmbeddedPostgres> {
        Self::start_relocating_under(data_dir, Path::new(Self::RELOCATION_PARENT))
    }

    /// [`EmbeddedPostgres::start`] with another parent for a relocated cluster.
    pub fn start_relocating_under(data_dir: &Path, relocation_parent: &Path) -> Result<EmbeddedPostgres> {
        let bin_dir = find_binaries()?;
        let run_as = unprivileged_user()?;
        let (data_dir, relocation) = place(data_dir, run_as.as_ref(), relocation_parent)?;
        if let Some(moved) = &relocation {
            tracing::info!(
                configured = %moved.configured.display(),
                data_dir = %data_dir.display(),
                blocked_by = %moved.blocked_by.display(),
                user = %moved.user,
                "The embedded PostgreSQL server's user cannot reach the configured data directory: \
                 using one of its own instead."
            );
        }
        // Serialise concurrent starters (e.g. parallel test processes) on a lock file beside the cluster.
        let lock_path = data_dir.join("start.lock");
        let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;

        let cluster = data_dir.join("cluster");
        let port_file = data_dir.join("port");
        let mut server = EmbeddedPostgres {
            data_dir: data_dir.clone(),
            bin_dir,
            port: 0,
            run_as,
            relocation,
            owned: false,
        };
        if !cluster.join("PG_VERSION").exists() {
            server.init(&cluster)?;
        }
        let previous_port = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        if server.is_running(&cluster) {
            server.port = previous_port.ok_or_else(|| {
                anyhow!(
                    "a server runs in {} but its port file is missing",
                    cluster.display()
                )
            })?;
            return Ok(server);
        }
        server.port = match previous_port {
            Some(port) if port_is_free(port) => port,
            _ => free_port()?,
        };
        fs::write(&port_file, server.port.to_string())
            .with_context(|| format!("writing {}", port_file.display()))?;
        let log = data_dir.join("postgres.log");
        let output = server.pg_ctl_serving(["-t", "60", "start"])?;
        if !output.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!(
                "the embedded PostgreSQL server did not start: {}\n{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        server.owned = true;
        server.ensure_database()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/reporting_etl`
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// How a person connects with psql.
    pub(crate) fn psql_hint(&self) -> String {
        format!("psql -h 127.0.0.1 -p {} -U postgres {DATABASE}", self.port)
    }

    /// Where the cluster lives: the configured data directory, or its replacement.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// When the cluster is not in the configured data directory: from where and why, in a sentence.
    pub fn relocation_note(&self) -> Option<String> {
        self.relocation.as_ref().map(|moved| {
            format!(
                "moved from {configured}: `{user}`, the user PostgreSQL runs as under root, cannot enter \
                 {blocked}; every run from there finds it here (set database.data_dir to choose another place)",
                configured = moved.configured.display(),
                user = moved.user,
                blocked = moved.blocked_by.display(),
            )
        })
    }

    /// Stops the server if this process started it. Fast shutdown: sessions are ended, data is safe.
    pub fn stop(&mut self) -> Result<()> {
        if !self.owned {
            return Ok(());
        }
        let cluster = self.data_dir.join("cluster");
        let output = self.pg(
            "pg_ctl",
            [
                OsStr::new("-D"),
                cluster.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        )?;
        self.owned = false;
        if !output.status.success() {
            bail!(
                "stopping the embedded PostgreSQL server failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Restarts the server as an operator's `pg_ctl restart -m fast` does: every session ends
    /// at once, the data and the port stay. Only for a server this process started. A test-only
    /// API (the database-restart tests): built with the `sandbox` feature, not in production.
    #[cfg(any(test, feature = "sandbox"))]
    pub fn restart_fast(&self) -> Result<()> {
        if !self.owned {
            bail!("only a server this process started can be restarted");
        }
        let output = self.pg_ctl_serving(["-m", "fast", "restart"])?;
        if !output.status.success() {
            bail!(
                "restarting the embedded PostgreSQL server failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// `pg_ctl -D <cluster> -l <log> -o <options> -w <action...>` for an action that (re)starts
    /// the server: our port, loopback only, the socket inside the cluster directory.
    fn pg_ctl_serving<const N: usize>(&self, action: [&str; N]) -> Result<Output> {
        let cluster = self.data_dir.join("cluster");
        let log = self.data_dir.join("postgres.log");
        let options = format!("-p {} -h 127.0.0.1 -k {}", self.port, cluster.display());
        let mut args = vec![
            OsStr::new("-D"),
            cluster.as_os_str(),
            OsStr::new("-l"),
            log.as_os_str(),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("-w"),
        ];
        args.extend(action.iter().map(OsStr::new));
        self.pg("pg_ctl", args)
    }

    /// Leaves the server running after this process exits (tests share one server this way).
    pub fn detach(mut self) {
        self.owned = false;
    }

    /// Like [`EmbeddedPostgres::detach`], in place.
    #[cfg(feature = "sandbox")] // only `demo` uses it
    pub(crate) fn keep_running(&mut self) {
        self.owned = false;
    }

    /// How a person stops a server left running (SIGINT is PostgreSQL's fast shutdown; it works
    /// whichever user the server runs as).
    #[cfg(feature = "sandbox")] // only `demo` uses it
    pub(crate) fn stop_hint(&self) -> String {
        format!(
            "kill -INT $(head -1 {})",
            self.data_dir.join("cluster").join("postmaster.pid").display()
        )
    }

    fn init(&self, cluster: &Path) -> Result<()> {
        fs::create_dir_all(cluster).with_context(|| format!("creating {}", cluster.display()))?;
        if let Some(user) = &self.run_as {
            give_to(&self.data_dir, user)?;
            give_to(cluster, user)?;
        }
        fs::set_permissions(cluster, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", cluster.display()))?;
        let output = self.pg(
            "initdb",
            [
                OsStr::new("-D"),
                cluster.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
            ],
        )?;
        if !output.status.success() {
            bail!(
                "initdb failed in {}: {}",
                cluster.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn is_running(&self, cluster: &Path) -> bool {
        self.pg(
            "pg_ctl",
            [OsStr::new("-D"), cluster.as_os_str(), OsStr::new("status")],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    fn ensure_database(&self) -> Result<()> {
        let exists = self.pg(
            "psql",
            [
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
            ],
        )?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let created = self.pg(
            "createdb",
            [
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                DATABASE,
            ],
        )?;
        if !created.status.success() {
            bail!(
                "createdb {DATABASE} failed: {}",
                String::from_utf8_lossy(&created.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs one of the PostgreSQL binaries, as the unprivileged user when we are root.
    fn pg<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(self.bin_dir.join(program));
        command.args(args).current_dir(&self.data_dir).env("LC_ALL", "C");
        if let Some(user) = &self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command.output().with_context(|| {
            let by = match &self.run_as {
                Some(user) => format!(" as `{}`", user.name),
                None => String::new(),
            };
            format!(
                "running {}{by} in {}",
                self.bin_dir.join(program).display(),
                self.data_dir.display()
            )
        })
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = self.stop()
        {
            tracing::warn!(error = %error, "Could not stop the embedded PostgreSQL server.");
        }
    }
}

/// Finds a directory holding `initdb`, `pg_ctl` and `psql`: `$PATH` first, then Debian's layout.
fn find_binaries() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "psql", "createdb"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    // pg_ctl must sit beside `postgres`; resolve symlinks (e.g. /usr/local/bin/initdb → /usr/lib/postgresql/15/bin).
    for dir in from_path {
        if has_all(&dir)
            && let Ok(real) = dir.join("pg_ctl").canonicalize()
            && let Some(parent) = real.parent()
            && has_all(parent)
        {
            return Ok(parent.to_path_buf());
        }
    }
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    debian.into_iter().rev().find(|dir| has_all(dir)).ok_or_else(|| {
        anyhow!(
            "no database is configured and no PostgreSQL server binaries (initdb, pg_ctl) were found on PATH \
             or under /usr/lib/postgresql/*/bin. Install them (Debian: `apt-get install postgresql`) or set \
             database.url (REPORTING_ETL__DATABASE__URL) to an existing PostgreSQL database."
        )
    })
}

/// `initdb` refuses to run as root: as root, pick the `postgres` user, else `nobody`.
fn unprivileged_user() -> Result<Option<ServerUser>> {
    // The effective uid, read from /proc to avoid unsafe code for one call.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|uid| uid.parse::<u32>().ok());
    if euid != Some(0) {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for name in ["postgres", "nobody"] {
        if let Some(line) = passwd.lines().find(|l| l.split(':').next() == Some(name)) {
            let fields: Vec<&str> = line.split(':').collect();
            if let (Some(uid), Some(gid)) = (
                fields.get(2).and_then(|u| u.parse().ok()),
                fields.get(3).and_then(|g| g.parse().ok()),
            ) {
                return Ok(Some(ServerUser {
                    name: name.to_owned(),
                    uid,
                    gid,
                }));
            }
        }
    }
    bail!("running as root and no `postgres` or `nobody` user exists to run the embedded PostgreSQL server")
}

/// The data directory to use for `configured`: itself, resolved, or (as root, when the server's
/// user cannot reach it) a directory of that user's own under `relocation_parent`.
fn place(
    configured: &Path,
    run_as: Option<&ServerUser>,
    relocation_parent: &Path,
) -> Result<(PathBuf, Option<Relocation>)> {
    fs::create_dir_all(configured).with_context(|| format!("creating {}", configured.display()))?;
    let configured = configured
        .canonicalize()
        .with_context(|| format!("resolving {}", configured.display()))?;
    let Some(user) = run_as else {
        return Ok((configured, None));
    };
    // The data directory itself is handed to the user at initdb; the ones above must let it pass.
    let Some(blocked_by) = configured.parent().and_then(|parent| first_closed(parent, user)) else {
        return Ok((configured, None));
    };
    let cause = format!(
        "PostgreSQL refuses to run as root, so the embedded server runs as `{user}`, and `{user}` cannot \
         enter {blocked} ({why})",
        user = user.name,
        blocked = blocked_by.display(),
        why = describe(&blocked_by),
    );
    if configured.join("cluster").join("PG_VERSION").exists() {
        bail!(
            "the embedded PostgreSQL cluster in {data_dir} cannot be reached: {cause}. Let it pass \
             (`chmod o+x {blocked}`), move {data_dir} to a place `{user}` can reach and set \
             database.data_dir (REPORTING_ETL__DATABASE__DATA_DIR) to it, or run as a user other than root",
            data_dir = configured.display(),
            blocked = blocked_by.display(),
            user = user.name,
        );
    }
    let target = relocation_parent.join(relocated_name(&configured));
    if let Err(problem) = prepare_relocation(relocation_parent, &target, user) {
        bail!(
            "the embedded PostgreSQL server cannot use the data directory {data_dir}: {cause}; and its own \
             directory {target} cannot be used either: {problem:#}. Set `database.data_dir = \"…\"` \
             (or REPORTING_ETL__DATABASE__DATA_DIR) to a directory whose every parent `{user}` can \
             enter (not below {blocked}), let it pass (`chmod o+x {blocked}`), run as a user other than root, \
             or set database.url",
            data_dir = configured.display(),
            target = target.display(),
            user = user.name,
            blocked = blocked_by.display(),
        );
    }
    Ok((
        target,
        Some(Relocation {
            configured,
            blocked_by,
            user: user.name.clone(),
        }),
    ))
}

/// Creates `target` under `parent` for `user`: `parent` root's and not writable by others (we run
/// as root: a directory someone else controls could redirect us), every directory down to it
/// passable by `user`.
fn prepare_relocation(parent: &Path, target: &Path, user: &ServerUser) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !parent.exists() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        // Whatever the umask: the server's user has to pass through it.
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", parent.display()))?;
    }
    let meta = fs::metadata(parent).with_context(|| format!("reading {}", parent.display()))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!("{} is not root's alone ({})", parent.display(), describe(parent));
    }
    if let Some(closed) = first_closed(parent, user) {
        bail!(
            "`{}` cannot enter {} ({})",
            user.name,
            closed.display(),
            describe(&closed)
        );
    }
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    give_to(target, user)?;
    fs::set_permissions(target, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", target.display()))
}

/// The highest directory from `/` down to `dir` (included) that `user` may not pass through.
/// The server gets no supplementary groups (the standard library drops them with the uid), so only
/// the owner, the primary group and the others' bits count.
fn first_closed(dir: &Path, user: &ServerUser) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|step| {
        let meta = fs::metadata(step).ok()?;
        let mode = meta.mode();
        let passable = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!passable).then(|| step.to_path_buf())
    })
}

/// `mode 0700, owner root` for an error message.
fn describe(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(meta) => format!(
            "mode {:04o}, owner {}",
            meta.mode() & 0o7777,
            user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string())
        ),
        Err(error) => error.to_string(),
    }
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// Longest readable part of a relocated directory's name. The server's socket lies in
/// `<parent>/<name>/cluster/.s.PGSQL.<port>`, and a socket path has at most 107 bytes.
const RELOCATED_NAME_TAIL: usize = 40;

/// The relocated directory's name: the last components of the configured path (readable in a
/// listing) plus a hash of the whole path (distinct for distinct paths, the same on every run from
/// the same place).
fn relocated_name(configured: &Path) -> String {
    let path = configured.to_string_lossy();
    let digest = Sha256::digest(path.as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let plain = |component: &str| -> String {
        component
            .chars()
            .map(|c| match c {
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => c,
                _ => '_',
            })
            .collect()
    };
    let mut tail: Vec<String> = Vec::new();
    let mut length = 0;
    for component in path.rsplit('/').filter(|c| !c.is_empty()) {
        let component = plain(component);
        let added = component.len() + usize::from(!tail.is_empty());
        if length + added > RELOCATED_NAME_TAIL {
            if tail.is_empty() {
                // One long last component: its end, which is ASCII by now.
                tail.push(component[component.len() - RELOCATED_NAME_TAIL..].to_owned());
            }
            break;
        }
        length += added;
        tail.push(component);
    }
    tail.reverse();
    tail.push(hash);
    tail.join("-")
}

fn give_to(path: &Path, user: &ServerUser) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("handing {} to `{}`", path.display(), user.name))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relocated_name_is_the_same_for_a_path_and_differs_between_paths() {
        let one = relocated_name(Path::new("/root/reporting-etl/.reporting-etl/pg"));
        assert_eq!(
            one,
            relocated_name(Path::new("/root/reporting-etl/.reporting-etl/pg"))
        );
        assert!(one.starts_with("root-reporting-etl-.reporting-etl-pg-"), "{one}");
        // Flattening alone would make these two the same name.
        assert_ne!(
            relocated_name(Path::new("/a-b/pg")),
            relocated_name(Path::new("/a/b/pg"))
        );
    }

    #[test]
    fn a_relocated_name_is_one_plain_file_name_that_leaves_room_for_the_socket() {
        let deep = format!("/{}/dåta dir/pg", "x".repeat(300));
        for path in [
            deep.as_str(),
            "/tmp/tmp.4xjNhNHFTq/reporting-etl/.reporting-etl/pg",
        ] {
            let name = relocated_name(Path::new(path));
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "{name}"
            );
            let socket = Path::new(EmbeddedPostgres::RELOCATION_PARENT)
                .join(&name)
                .join("cluster/.s.PGSQL.65535");
            assert!(
                socket.as_os_str().len() <= 107,
                "{} is too long for a socket",
                socket.display()
            );
        }
        assert!(relocated_name(Path::new(&deep)).starts_with("d_ta_dir-pg-"));
        assert_eq!(
            relocated_name(Path::new("/tmp/tmp.4xjNhNHFTq/reporting-etl/.reporting-etl/pg"))
                .rsplit_once('-')
                .unwrap()
                .0,
            "reporting-etl-.reporting-etl-pg",
            "whole components are kept from the end"
        );
        let long_leaf = format!("/srv/{}", "y".repeat(60));
        assert_eq!(
            relocated_name(Path::new(&long_leaf)).len(),
            RELOCATED_NAME_TAIL + 1 + 12
        );
    }
}
