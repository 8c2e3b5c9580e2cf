//! The embedded default database: a private PostgreSQL server started from the machine's own
//! `initdb`/`pg_ctl` binaries in a data directory of ours, so `demo` and `cargo test` work on a
//! fresh machine with no database configured.
//!
//! The data directory survives restarts. A server that another process of ours already runs in
//! the same directory is reused and left running; one we started is stopped by [`EmbeddedPostgres::stop`].
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` (or `nobody`) user.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, anyhow, bail};

/// Database created inside the embedded server.
pub(crate) const DATABASE: &str = "reporting_etl";

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// Whether this process started the server (and so stops it).
    owned: bool,
}

impl EmbeddedPostgres {
    /// Starts (or joins) the server in `data_dir`, creating the cluster on first use.
    pub fn start(data_dir: &Path) -> Result<EmbeddedPostgres> {
        let bin_dir = find_binaries()?;
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        // Serialise concurrent starters (e.g. parallel test processes) on a lock file beside the cluster.
        let lock_path = data_dir.join("start.lock");
        let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;

        let run_as = unprivileged_user()?;
        let cluster = data_dir.join("cluster");
        let port_file = data_dir.join("port");
        let mut server = EmbeddedPostgres {
            data_dir: data_dir.clone(),
            bin_dir,
            port: 0,
            run_as,
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
        fs::write(&port_file, server.port.to_string())?;
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

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
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
    /// at once, the data and the port stay. Only for a server this process started.
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
        fs::create_dir_all(cluster)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(cluster, Some(uid), Some(gid))?;
        }
        fs::set_permissions(cluster, fs::Permissions::from_mode(0o700))?;
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
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
            .output()
            .with_context(|| format!("running {}", self.bin_dir.join(program).display()))
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

/// `initdb` refuses to run as root: pick the `postgres` user, else `nobody`.
fn unprivileged_user() -> Result<Option<(u32, u32)>> {
    // The effective uid, read from /proc to avoid a libc dependency for one call.
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
                return Ok(Some((uid, gid)));
            }
        }
    }
    bail!("running as root and no `postgres` or `nobody` user exists to run the embedded PostgreSQL server")
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
