//! A private PostgreSQL cluster run from the machine's installed binaries,
//! used when no DATABASE_URL is configured.
//!
//! Layout under `pg_dir`: the cluster in `data/`, the unix socket
//! `.s.PGSQL.5432` in `pg_dir` itself (there is no TCP listener), the server
//! log in `postgres.log`, and `herald.lock`, whose flock says who uses the
//! cluster: one exclusive owner (`herald serve`) or any number of shared
//! users (test processes). Linux only: liveness checks read `/proc`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, Connection};
use tracing::{info, warn};

const MIN_MAJOR: u32 = 14;
const PORT: u16 = 5432;
const SUPERUSER: &str = "herald";
/// `sun_path` is 104 bytes on macOS and 108 on Linux; stay portable.
const MAX_SOCKET_PATH: usize = 104;
const LOCK_FILE: &str = "herald.lock";
/// Serialises shared-mode starters; `herald.lock` itself only counts users.
const START_LOCK_FILE: &str = "herald-start.lock";
const LOG_FILE: &str = "postgres.log";
const VERSIONED_INSTALLS: &str = "/usr/lib/postgresql";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Drop must not hold up its thread for long.
const DROP_TIMEOUT: Duration = Duration::from_secs(5);
/// Runs at process exit, where nobody is waiting for us.
const LAST_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time SIGQUIT and then SIGKILL get to take effect.
const ESCALATION_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub max_connections: u32,
    /// Turn off fsync, synchronous_commit and full_page_writes: a crash may
    /// corrupt the cluster, so only for throwaway (test) data.
    pub fast_unsafe: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_connections: 100,
            fast_unsafe: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no usable PostgreSQL binaries ({0}): install PostgreSQL (14 or newer) binaries, or set DATABASE_URL"
    )]
    NoBinaries(String),
    #[error(
        "the PostgreSQL socket path {path} is {len} bytes, but must be under {max}: set HERALD_DATA_DIR to a shorter directory",
        max = MAX_SOCKET_PATH
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error(
        "herald runs as root, and PostgreSQL refuses to, but neither user `postgres` nor `herald-pg` exists to run it as (herald does not use `nobody`, which other services share): create one with `useradd --system --no-create-home --shell /usr/sbin/nologin herald-pg`, run herald as a non-root user, or set DATABASE_URL"
    )]
    NoServerUser,
    #[error(
        "PostgreSQL runs as user `{user}`, who cannot enter {dir} (no search permission): set HERALD_DATA_DIR to a directory it can reach, such as /var/lib/herald or one under /tmp"
    )]
    NotTraversable { dir: PathBuf, user: String },
    #[error(
        "another herald process is using {pg_dir} (it holds the lock on {lock}): stop it, or set HERALD_DATA_DIR to another directory"
    )]
    Locked { pg_dir: PathBuf, lock: PathBuf },
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("postgres exited during startup ({status}); last lines of {log}:\n{tail}")]
    EarlyExit {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "postgres did not accept connections in {pg_dir} within {}s (last error: {last_error}); see {}",
        START_TIMEOUT.as_secs(),
        .pg_dir.join(LOG_FILE).display()
    )]
    StartTimeout { pg_dir: PathBuf, last_error: String },
    #[error("postgres pid {pid} did not exit, even after SIGKILL")]
    NotStopped { pid: Pid },
    #[error("{context}: {error}")]
    Sql { context: String, error: sqlx::Error },
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |error| EmbeddedError::Io { context, error }
}

/// A running cluster, or a share in one. Dropping an owning handle without
/// [`stop`](Self::stop) still shuts the server down (with a short wait).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    pg_dir: PathBuf,
    /// Flock on `herald.lock`: exclusive for the owner, shared for a user.
    lock: File,
    /// The postmaster, while an owning handle has not stopped it yet.
    child: Option<Child>,
    shared: bool,
}

impl EmbeddedPostgres {
    /// Starts the cluster in `pg_dir` (creating it on first use) and owns it
    /// exclusively until [`stop`](Self::stop) or drop.
    pub async fn start(pg_dir: &Path, opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let pg_dir = create_pg_dir(pg_dir)?;
        let lock = open_lock_file(&pg_dir, LOCK_FILE)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(EmbeddedError::Locked {
                    lock: pg_dir.join(LOCK_FILE),
                    pg_dir,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(io_err(format!(
                    "could not lock {}",
                    pg_dir.join(LOCK_FILE).display()
                ))(e));
            }
        }
        let server = Server::prepare(pg_dir).await?;
        // We hold the lock, so any postgres still running here was orphaned
        // by a herald that crashed or was killed.
        server.clear_stale(find_postmaster(&server.data)?).await?;
        let child = server.launch(&opts).await?;
        Ok(Self {
            pg_dir: server.pg_dir,
            lock,
            child: Some(child),
            shared: false,
        })
    }

    /// Joins the cluster in `pg_dir`, starting it if it is not running, for
    /// test processes that share one cluster. The server is detached: it
    /// outlives this process and is stopped by the last user's
    /// [`stop_if_last_user`](Self::stop_if_last_user), never by drop.
    pub async fn start_shared(pg_dir: &Path, opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let pg_dir = create_pg_dir(pg_dir)?;
        let lock = open_lock_file(&pg_dir, LOCK_FILE)?;
        let start_lock = open_lock_file(&pg_dir, START_LOCK_FILE)?;
        // Count as a user before looking, so that an exiting last user cannot
        // stop the cluster between our check and our use; then let one
        // starter at a time look and start. (Waiting for an exclusive lock on
        // herald.lock instead would wait for every other user to exit.)
        let context = format!("could not lock {}", pg_dir.join(LOCK_FILE).display());
        let (lock, start_lock) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            lock.lock_shared()?;
            start_lock.lock()?;
            Ok((lock, start_lock))
        })
        .await?
        .map_err(io_err(context))?;

        let server = Server::prepare(pg_dir).await?;
        match find_postmaster(&server.data)? {
            Postmaster::Ours {
                pid,
                stopping: false,
            } => {
                info!(%pid, pg_dir = %server.pg_dir.display(), "joining running postgres");
                wait_ready(&server.pg_dir, || {
                    (!pid_alive(pid)).then(|| "it exited".to_owned())
                })
                .await?;
            }
            found => {
                server.clear_stale(found).await?;
                // Not kept: the detached server must outlive this process.
                server.launch(&opts).await?;
            }
        }
        drop(start_lock);
        Ok(Self {
            pg_dir: server.pg_dir,
            lock,
            child: None,
            shared: true,
        })
    }

    /// Options to reach `database` over the private socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        connect_options(&self.pg_dir, database)
    }

    /// Creates `name` unless it exists (concurrent callers are fine).
    pub async fn ensure_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let sql_err = |context: String| move |error| EmbeddedError::Sql { context, error };
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .map_err(sql_err(format!(
                "could not connect to postgres in {}",
                self.pg_dir.display()
            )))?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(sql_err(format!("could not look up database {name:?}")))?;
        if exists {
            return Ok(());
        }
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(AssertSqlSafe(create))
            .execute(&mut conn)
            .await
        {
            Ok(_) => info!(database = name, "created database"),
            // Someone else created it since we looked.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(sql_err(format!("could not create database {name:?}"))(e)),
        }
        Ok(())
    }

    /// Shuts the server down: SIGINT (fast shutdown) with up to 30 s to
    /// finish, then SIGQUIT, then SIGKILL. For a shared handle this is
    /// [`stop_if_last_user`](Self::stop_if_last_user).
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        tokio::task::spawn_blocking(move || {
            if self.shared {
                self.release_shared().map(drop)
            } else {
                self.stop_child(STOP_TIMEOUT)
            }
        })
        .await?
    }

    /// For shared handles, at process exit: gives up this process's share
    /// and, if no other process uses the cluster, stops it. Meant for an
    /// `atexit` handler, so it reports failure on stderr: tracing's
    /// thread-locals may be gone by then. Calling it again is harmless; on
    /// an owning handle it does nothing.
    pub fn stop_if_last_user(&self) {
        if let Err(e) = self.release_shared() {
            // Nothing to do if stderr is gone too.
            let _ = writeln!(
                io::stderr(),
                "herald: stopping the shared PostgreSQL cluster: {e}"
            );
        }
    }

    /// [`stop_if_last_user`](Self::stop_if_last_user), returning whether it
    /// stopped the server.
    fn release_shared(&self) -> Result<bool, EmbeddedError> {
        if !self.shared {
            return Ok(false);
        }
        let lock_path = self.pg_dir.join(LOCK_FILE);
        self.lock
            .unlock()
            .map_err(io_err(format!("could not unlock {}", lock_path.display())))?;
        match self.lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => {
                return Err(io_err(format!("could not lock {}", lock_path.display()))(e));
            }
        }
        match find_postmaster(&self.pg_dir.join("data"))? {
            Postmaster::Ours { pid, .. } => {
                terminate(pid, LAST_USER_TIMEOUT, || !pid_alive(pid))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn stop_child(&mut self, grace: Duration) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child_pid(&child);
        let signal = terminate(pid, grace, || !matches!(child.try_wait(), Ok(None)))?;
        log_stopped(pid, signal);
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_child(DROP_TIMEOUT) {
            warn!(error = %e, "could not stop postgres on drop");
        }
    }
}

/// Whether `pg_dir` holds a cluster already (initdb ran there).
pub fn is_initialised(pg_dir: &Path) -> bool {
    pg_dir.join("data").exists()
}

/// How a client reaches the cluster in `pg_dir` over its unix socket.
pub fn connect_options(pg_dir: &Path, database: &str) -> PgConnectOptions {
    // Port and TLS set explicitly so PGPORT / PGSSLMODE cannot redirect us.
    PgConnectOptions::new_without_pgpass()
        .socket(pg_dir)
        .port(PORT)
        .ssl_mode(PgSslMode::Disable)
        .username(SUPERUSER)
        .database(database)
}

/// Creates `pg_dir` and returns its canonical path (the form postgres
/// reports as its working directory), checking the socket path fits.
fn create_pg_dir(pg_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    fs::create_dir_all(pg_dir).map_err(io_err(format!("could not create {}", pg_dir.display())))?;
    let pg_dir = fs::canonicalize(pg_dir)
        .map_err(io_err(format!("could not resolve {}", pg_dir.display())))?;
    let socket = pg_dir.join(format!(".s.PGSQL.{PORT}"));
    let len = socket.as_os_str().len();
    if len >= MAX_SOCKET_PATH {
        return Err(EmbeddedError::SocketPathTooLong { path: socket, len });
    }
    Ok(pg_dir)
}

fn open_lock_file(pg_dir: &Path, name: &str) -> Result<File, EmbeddedError> {
    let path = pg_dir.join(name);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("could not open {}", path.display())))
}

/// Everything needed to run the server binaries on one `pg_dir`.
struct Server {
    pg_dir: PathBuf,
    data: PathBuf,
    bins: Binaries,
    /// Who initdb and postgres run as, when that is not us (we are root).
    user: Option<User>,
}

impl Server {
    async fn prepare(pg_dir: PathBuf) -> Result<Self, EmbeddedError> {
        let bins = find_binaries().await?;
        let user = server_user()?;
        let data = pg_dir.join("data");
        if let Some(user) = &user {
            check_traversable(&pg_dir, user)?;
            chown_tree(&pg_dir, user)?;
        }
        // The socket lives in pg_dir, so only the server user may enter it;
        // postgres itself insists on 0700 (or 0750) for data.
        for dir in [&pg_dir, &data] {
            match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(format!(
                        "could not set the mode of {}",
                        dir.display()
                    ))(e));
                }
                _ => {}
            }
        }
        Ok(Self {
            pg_dir,
            data,
            bins,
            user,
        })
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.pg_dir).stdin(Stdio::null());
        if let Some(user) = &self.user {
            // std also drops root's supplementary groups when setting uid.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    /// Makes way for a fresh start after an unclean exit of herald.
    async fn clear_stale(&self, found: Postmaster) -> Result<(), EmbeddedError> {
        match found {
            Postmaster::NotRunning => Ok(()),
            Postmaster::Stale => {
                let pid_file = self.data.join("postmaster.pid");
                // postgres would refuse to start while that pid is alive.
                warn!(file = %pid_file.display(), "removing stale postmaster.pid: its pid is not a postgres of this cluster");
                match fs::remove_file(&pid_file) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(format!(
                        "could not remove {}",
                        pid_file.display()
                    ))(e)),
                    _ => Ok(()),
                }
            }
            Postmaster::Ours { pid, .. } => {
                warn!(%pid, data = %self.data.display(), "stopping orphaned postgres left running by an earlier herald");
                let signal = tokio::task::spawn_blocking(move || {
                    terminate(pid, STOP_TIMEOUT, || !pid_alive(pid))
                })
                .await??;
                log_stopped(pid, signal);
                Ok(())
            }
        }
    }

    /// Initialises the cluster if needed, starts the postmaster and waits
    /// until it accepts connections.
    async fn launch(&self, opts: &EmbeddedOptions) -> Result<Child, EmbeddedError> {
        if !is_initialised(&self.pg_dir) {
            self.initdb(opts).await?;
        }
        let log_path = self.pg_dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("could not open {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("could not open {}", log_path.display())))?;

        let mut cmd = self.command(&self.bins.postgres);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &PORT.to_string()])
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(socket_dir_setting(&self.pg_dir))
            .arg("-c")
            .arg(format!("max_connections={}", opts.max_connections));
        if opts.fast_unsafe {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                cmd.args(["-c", setting]);
            }
        }
        // Own process group: a terminal's Ctrl-C reaches herald only, which
        // then stops postgres in order (or, detached, leaves it running).
        cmd.process_group(0)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let mut child = cmd.spawn().map_err(io_err(format!(
            "could not run {}",
            self.bins.postgres.display()
        )))?;
        let pid = child_pid(&child);

        let ready = wait_ready(&self.pg_dir, || match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(e.to_string()),
        })
        .await;
        if let Err(e) = ready {
            // The startup error matters more than how the cleanup went.
            let _ = tokio::task::spawn_blocking(move || {
                terminate(pid, DROP_TIMEOUT, || !matches!(child.try_wait(), Ok(None)))
            })
            .await;
            return Err(e);
        }
        info!(%pid, major = self.bins.major, pg_dir = %self.pg_dir.display(), "started postgres pid {pid}");
        Ok(child)
    }

    async fn initdb(&self, opts: &EmbeddedOptions) -> Result<(), EmbeddedError> {
        // initdb works in a staging directory renamed into place on
        // success, so an interrupted run never leaves a half-made `data`.
        let staging = self.pg_dir.join("data.initdb");
        match fs::remove_dir_all(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("could not remove {}", staging.display()))(e));
            }
            _ => {}
        }
        info!(major = self.bins.major, pg_dir = %self.pg_dir.display(), "initialising PostgreSQL cluster");
        let mut cmd = self.command(&self.bins.initdb);
        // Trust is safe: the only listener is a socket in a 0700 directory.
        cmd.arg("-D").arg(&staging).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]);
        if opts.fast_unsafe {
            cmd.arg("--no-sync");
        }
        let command = format!("{} -D {}", self.bins.initdb.display(), staging.display());
        let output = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(io_err(format!("could not run {command}")))?;
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                command,
                detail: format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        fs::rename(&staging, &self.data).map_err(io_err(format!(
            "could not rename {} to {}",
            staging.display(),
            self.data.display()
        )))
    }
}

/// `unix_socket_directories` is a comma-separated list: double-quote the
/// path (doubling any quote in it) so commas and spaces stay literal.
fn socket_dir_setting(dir: &Path) -> OsString {
    let mut setting = b"unix_socket_directories=\"".to_vec();
    for &byte in dir.as_os_str().as_bytes() {
        if byte == b'"' {
            setting.push(b'"');
        }
        setting.push(byte);
    }
    setting.push(b'"');
    OsString::from_vec(setting)
}

/// Polls until the server in `pg_dir` accepts connections. `exited` says
/// (and how) the server process is gone, which ends the wait early.
async fn wait_ready(
    pg_dir: &Path,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), EmbeddedError> {
    let options = connect_options(pg_dir, "postgres");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let timeout = |last_error: String| EmbeddedError::StartTimeout {
        pg_dir: pg_dir.to_owned(),
        last_error,
    };
    loop {
        let last_error =
            match tokio::time::timeout_at(deadline, PgConnection::connect_with(&options)).await {
                Ok(Ok(conn)) => {
                    // A failed goodbye does not make the server less ready.
                    let _ = conn.close().await;
                    return Ok(());
                }
                // Up, but full: a busy shared test cluster.
                Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("53300") => {
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => return Err(timeout("connection attempt timed out".to_owned())),
            };
        if let Some(status) = exited() {
            let log = pg_dir.join(LOG_FILE);
            return Err(EmbeddedError::EarlyExit {
                status,
                tail: log_tail(&log, 20),
                log,
            });
        }
        if tokio::time::Instant::now() + POLL >= deadline {
            return Err(timeout(last_error));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

#[derive(Debug)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
    major: u32,
}

/// initdb and postgres (pg_ctl is not needed: we run postgres directly),
/// from the first PATH directory holding both, else from the newest
/// `/usr/lib/postgresql/<version>/bin`; the first of those at least
/// PostgreSQL 14 wins.
async fn find_binaries() -> Result<Binaries, EmbeddedError> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_binaries(dir));
    let candidates = on_path.into_iter().chain(
        versioned_bin_dirs()
            .into_iter()
            .filter(|dir| has_binaries(dir)),
    );

    let mut too_old = None;
    for dir in candidates {
        // Resolve symlinks (e.g. /usr/local/bin/initdb) so initdb finds the
        // postgres installed beside it.
        let resolve = |name: &str| {
            let path = dir.join(name);
            fs::canonicalize(&path).map_err(io_err(format!("could not resolve {}", path.display())))
        };
        let (initdb, postgres) = (resolve("initdb")?, resolve("postgres")?);
        let major = postgres_major(&postgres).await?;
        if major >= MIN_MAJOR {
            return Ok(Binaries {
                initdb,
                postgres,
                major,
            });
        }
        too_old.get_or_insert_with(|| format!("{} is version {major}", postgres.display()));
    }
    Err(EmbeddedError::NoBinaries(too_old.unwrap_or_else(|| {
        format!("found no initdb and postgres on PATH or in {VERSIONED_INSTALLS}/*/bin")
    })))
}

fn has_binaries(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|name| {
        fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    })
}

/// `/usr/lib/postgresql/*/bin`, newest version first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(VERSIONED_INSTALLS) else {
        return Vec::new();
    };
    let mut dirs: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

async fn postgres_major(postgres: &Path) -> Result<u32, EmbeddedError> {
    let command = format!("{} --version", postgres.display());
    let output = tokio::process::Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(format!("could not run {command}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_major(&text) {
        Some(major) if output.status.success() => Ok(major),
        _ => Err(EmbeddedError::Command {
            command,
            detail: format!("{}, printed {:?}", output.status, text.trim()),
        }),
    }
}

/// The major version in `postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`.
fn parse_major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits = number.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Who runs the cluster when herald runs as root, in order of preference.
/// Never `nobody`: other daemons run as it too, and could then read and
/// write the cluster's data. Herald does not create a user itself: adding
/// accounts is the operator's call, so the error says how.
const SERVER_USERS: [&str; 2] = ["postgres", "herald-pg"];

/// initdb and postgres refuse to run as root: as root, run them as the
/// first of `SERVER_USERS` that exists.
fn server_user() -> Result<Option<User>, EmbeddedError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    first_existing(|name| {
        User::from_name(name)
            .map_err(|e| io_err(format!("could not look up user {name}"))(e.into()))
    })
    .map(Some)
}

/// The first of `SERVER_USERS` that `lookup` finds.
fn first_existing<U>(
    mut lookup: impl FnMut(&str) -> Result<Option<U>, EmbeddedError>,
) -> Result<U, EmbeddedError> {
    for name in SERVER_USERS {
        if let Some(user) = lookup(name)? {
            return Ok(user);
        }
    }
    Err(EmbeddedError::NoServerUser)
}

/// Every ancestor of `pg_dir` must be searchable by `user` (e.g. /root,
/// mode 0700, is not), or postgres cannot reach its data.
fn check_traversable(pg_dir: &Path, user: &User) -> Result<(), EmbeddedError> {
    for dir in pg_dir.ancestors().skip(1) {
        let meta =
            fs::metadata(dir).map_err(io_err(format!("could not inspect {}", dir.display())))?;
        // The same class rule as the kernel: owner, else group, else other.
        // Only the primary group counts: the server runs without others.
        let search_bit = if meta.uid() == user.uid.as_raw() {
            0o100
        } else if meta.gid() == user.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if meta.mode() & search_bit == 0 {
            return Err(EmbeddedError::NotTraversable {
                dir: dir.to_owned(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}

/// Gives the tree to `user`, including files a root herald created in it
/// (herald.lock, postgres.log). Files may vanish meanwhile if a shared
/// cluster is running.
fn chown_tree(path: &Path, user: &User) -> Result<(), EmbeddedError> {
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let context = || format!("could not give {} to user {}", path.display(), user.name);
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let meta = match fs::symlink_metadata(path) {
        Err(e) if gone(&e) => return Ok(()),
        other => other.map_err(io_err(context()))?,
    };
    if meta.uid() != uid || meta.gid() != gid {
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Err(e) if !gone(&e) => return Err(io_err(context())(e)),
            _ => {}
        }
    }
    if meta.is_dir() {
        let entries = match fs::read_dir(path) {
            Err(e) if gone(&e) => return Ok(()),
            other => other.map_err(io_err(context()))?,
        };
        for entry in entries {
            chown_tree(&entry.map_err(io_err(context()))?.path(), user)?;
        }
    }
    Ok(())
}

/// What `data/postmaster.pid` says about a running server.
#[derive(Debug, PartialEq)]
enum Postmaster {
    /// No file, or its pid is gone (postgres then removes the file itself).
    NotRunning,
    /// Unreadable, or its pid is alive but no postgres of this cluster.
    Stale,
    Ours {
        pid: Pid,
        stopping: bool,
    },
}

fn find_postmaster(data: &Path) -> Result<Postmaster, EmbeddedError> {
    let pid_file = data.join("postmaster.pid");
    let contents = match fs::read_to_string(&pid_file) {
        Ok(contents) => contents,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Postmaster::NotRunning),
        Err(e) => return Err(io_err(format!("could not read {}", pid_file.display()))(e)),
    };
    let mut lines = contents.lines();
    let Some(pid) = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .filter(|&pid: &i32| pid > 0)
        .map(Pid::from_raw)
    else {
        return Ok(Postmaster::Stale);
    };
    if !pid_alive(pid) {
        return Ok(Postmaster::NotRunning);
    }
    // The pid may have been reused by anything since; a postgres working in
    // this data directory (postgres chdirs there) is this cluster's own.
    let ours = fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == "postgres")
        && fs::read_link(format!("/proc/{pid}/cwd"))
            .is_ok_and(|cwd| fs::canonicalize(data).is_ok_and(|data| cwd == data));
    if !ours {
        return Ok(Postmaster::Stale);
    }
    // Line 8 is the server status: starting, ready, stopping or standby.
    let stopping = lines
        .nth(6)
        .is_some_and(|status| status.trim() == "stopping");
    Ok(Postmaster::Ours { pid, stopping })
}

/// Whether `pid` runs; a zombie (exited, not yet reaped) does not.
fn pid_alive(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn child_pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// Stops a postmaster: SIGINT (fast shutdown) with `grace` to finish, then
/// SIGQUIT (immediate shutdown), then SIGKILL. Returns the signal it gave
/// way to. Does not log, as it also runs in `atexit` handlers.
fn terminate(
    pid: Pid,
    grace: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<Signal, EmbeddedError> {
    let steps = [
        (Signal::SIGINT, grace),
        (Signal::SIGQUIT, ESCALATION_TIMEOUT),
        (Signal::SIGKILL, ESCALATION_TIMEOUT),
    ];
    for (signal, wait) in steps {
        // ESRCH means it is gone already; any other failure shows up as
        // the process not exiting.
        let _ = kill(pid, signal);
        let deadline = Instant::now() + wait;
        loop {
            if exited() {
                return Ok(signal);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL / 2);
        }
    }
    Err(EmbeddedError::NotStopped { pid })
}

fn log_stopped(pid: Pid, signal: Signal) {
    if signal == Signal::SIGINT {
        info!(%pid, "stopped postgres");
    } else {
        warn!(%pid, %signal, "postgres ignored fast shutdown; stopped it with {signal}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under /tmp, removed again on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = PathBuf::from(format!("/tmp/herald-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn pg_dir(&self) -> PathBuf {
            self.0.join("pg")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fast() -> EmbeddedOptions {
        EmbeddedOptions {
            max_connections: 20,
            fast_unsafe: true,
        }
    }

    /// Live processes working in `data`: the postmaster and its children.
    fn processes_in(data: &Path) -> Vec<String> {
        let data = fs::canonicalize(data).expect("data dir");
        fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let pid = Pid::from_raw(name.parse().ok()?);
                let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                (cwd == data && pid_alive(pid)).then_some(name)
            })
            .collect()
    }

    async fn select_one(pg: &EmbeddedPostgres, database: &str) -> i32 {
        let mut conn = PgConnection::connect_with(&pg.connect_options(database))
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .expect("SELECT 1")
    }

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn quotes_socket_dir() {
        assert_eq!(
            socket_dir_setting(Path::new("/tmp/a \"b\",c")),
            OsString::from("unix_socket_directories=\"/tmp/a \"\"b\"\",c\"")
        );
    }

    #[tokio::test]
    async fn finds_binaries() {
        let bins = find_binaries().await.expect("PostgreSQL binaries");
        assert!(bins.major >= MIN_MAJOR);
        assert!(bins.initdb.is_absolute() && bins.initdb.ends_with("initdb"));
        assert!(bins.postgres.is_file());
    }

    #[tokio::test]
    async fn start_query_stop() {
        // A space and a comma exercise the quoting of the socket directory.
        let tmp = TempDir::new("cycle a,b");
        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), EmbeddedOptions::default())
            .await
            .expect("start");
        pg.ensure_database("herald_test").await.expect("create");
        pg.ensure_database("herald_test")
            .await
            .expect("exists already");
        assert_eq!(select_one(&pg, "herald_test").await, 1);

        let data = tmp.pg_dir().join("data");
        let pid_file = fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
        assert_eq!(pid_file.lines().nth(5), Some(""), "no TCP listen address");
        assert!(tmp.pg_dir().join(".s.PGSQL.5432").exists());
        if geteuid().is_root() {
            let owner = fs::metadata(&data).expect("data").uid();
            assert_ne!(owner, 0, "the cluster belongs to the server user");
        }

        pg.stop().await.expect("stop");
        assert_eq!(processes_in(&data), Vec::<String>::new());
        assert!(!data.join("postmaster.pid").exists());

        // Stopped cleanly, so it starts again on the existing cluster.
        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("restart");
        assert_eq!(select_one(&pg, "herald_test").await, 1);
        drop(pg);
        assert_eq!(processes_in(&data), Vec::<String>::new(), "drop stops it");
    }

    #[tokio::test]
    async fn second_owner_is_refused() {
        let tmp = TempDir::new("locked");
        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("start");
        let err = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect_err("second start");
        assert!(matches!(err, EmbeddedError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("another herald process is using"),
            "{err}"
        );
        let pg_dir = tmp.pg_dir();
        let shared = EmbeddedPostgres::start_shared(&pg_dir, fast());
        assert!(
            tokio::time::timeout(Duration::from_millis(500), shared)
                .await
                .is_err(),
            "a shared user waits while an owner runs"
        );
        assert_eq!(
            select_one(&pg, "postgres").await,
            1,
            "the first one is unharmed"
        );
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn orphaned_postgres_is_replaced() {
        let tmp = TempDir::new("orphan");
        let data = tmp.pg_dir().join("data");
        let mut pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("start");
        // As if herald were killed: the lock goes, the postmaster stays.
        let orphan = pg.child.take().expect("child");
        let orphan_pid = child_pid(&orphan);
        std::mem::forget(orphan);
        drop(pg);
        assert!(
            matches!(find_postmaster(&data), Ok(Postmaster::Ours { pid, .. }) if pid == orphan_pid)
        );

        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("restart");
        assert!(!pid_alive(orphan_pid), "the orphan was stopped");
        assert_eq!(select_one(&pg, "postgres").await, 1);
        pg.stop().await.expect("stop");
        assert_eq!(processes_in(&data), Vec::<String>::new());
    }

    #[tokio::test]
    async fn stale_pid_file_is_removed() {
        let tmp = TempDir::new("stale");
        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("start");
        pg.stop().await.expect("stop");
        // A live pid that is not postgres: ours.
        let pid_file = tmp.pg_dir().join("data/postmaster.pid");
        fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write");
        assert_eq!(
            find_postmaster(&tmp.pg_dir().join("data")).ok(),
            Some(Postmaster::Stale)
        );
        let pg = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect("restart");
        assert_eq!(select_one(&pg, "postgres").await, 1);
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn shared_cluster_stops_with_last_user() {
        let tmp = TempDir::new("shared");
        let data = tmp.pg_dir().join("data");
        let opts = EmbeddedOptions {
            max_connections: 300,
            fast_unsafe: true,
        };
        let first = EmbeddedPostgres::start_shared(&tmp.pg_dir(), opts.clone())
            .await
            .expect("first user");
        let Ok(Postmaster::Ours { pid, .. }) = find_postmaster(&data) else {
            panic!("no postmaster");
        };
        let second = EmbeddedPostgres::start_shared(&tmp.pg_dir(), opts)
            .await
            .expect("second user");
        assert!(matches!(find_postmaster(&data), Ok(Postmaster::Ours { pid: p, .. }) if p == pid));
        let err = EmbeddedPostgres::start(&tmp.pg_dir(), fast())
            .await
            .expect_err("an owner while users run");
        assert!(matches!(err, EmbeddedError::Locked { .. }), "{err}");

        assert!(!first.release_shared().expect("release"));
        first.stop_if_last_user();
        drop(first);
        assert!(pid_alive(pid), "still used by the second user");
        assert_eq!(select_one(&second, "postgres").await, 1);

        assert!(
            second.release_shared().expect("stop"),
            "the last user stops it"
        );
        assert!(!pid_alive(pid));
        assert_eq!(processes_in(&data), Vec::<String>::new());
    }

    #[tokio::test]
    async fn socket_path_too_long() {
        let tmp = TempDir::new("long");
        let err = EmbeddedPostgres::start(&tmp.0.join("x".repeat(100)), fast())
            .await
            .expect_err("too long");
        assert!(
            matches!(err, EmbeddedError::SocketPathTooLong { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("HERALD_DATA_DIR"), "{err}");
    }

    #[test]
    fn the_server_user_is_postgres_or_a_dedicated_one_never_nobody() {
        let among = |present: &'static [&'static str]| {
            first_existing(|name| Ok(present.contains(&name).then(|| name.to_string())))
        };
        assert_eq!(
            among(&["nobody", "postgres", "herald-pg"]).unwrap(),
            "postgres"
        );
        assert_eq!(among(&["nobody", "herald-pg"]).unwrap(), "herald-pg");
        let err = among(&["nobody"]).expect_err("nobody is not enough");
        assert!(matches!(err, EmbeddedError::NoServerUser), "{err}");
        assert!(err.to_string().contains("useradd --system"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_dir_is_reported() {
        if !geteuid().is_root() {
            return;
        }
        let tmp = TempDir::new("blocked");
        let blocked = tmp.0.join("private");
        fs::create_dir(&blocked).expect("create");
        fs::set_permissions(&blocked, fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = EmbeddedPostgres::start(&blocked.join("pg"), fast())
            .await
            .expect_err("unreachable");
        assert!(
            matches!(&err, EmbeddedError::NotTraversable { dir, .. } if *dir == blocked),
            "{err}"
        );
    }
}
