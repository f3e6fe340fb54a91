//! Test peers Herald did not write (aiosmtpd, moto, Standard Webhooks'
//! verifier), run as child processes on free loopback ports and killed when
//! dropped. The tests install them on first use: the Python peers into a
//! virtual environment under `target/`, the Node.js ones from their lock files.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::support::eventually;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A child process serving on `port`; killed on drop.
pub struct Peer {
    pub port: u16,
    child: Child,
}

impl Peer {
    /// Starts the Python peer `args...` (a script of `tests/peers`, or `-m`
    /// and a module) with [`python`], the scripts of `tests/peers`
    /// importable, and waits until `port` accepts connections.
    pub async fn spawn_python(name: &str, args: &[&str], port: u16) -> Peer {
        let mut command = Command::new(python());
        command.args(args).env("PYTHONPATH", peers_dir());
        Peer::start(name, command, port, PYTHON_PEERS).await
    }

    async fn start(name: &str, command: Command, port: u16, install_hint: &str) -> Peer {
        let mut peer = Peer::start_unchecked(name, command, port, install_hint);
        eventually(Duration::from_secs(30), async || {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = peer.exited() {
                panic!(
                    "{name} exited with {status} before listening on {port}; install it with: {install_hint}"
                );
            }
            Err(format!("{name} does not listen on {port}"))
        })
        .await;
        peer
    }

    /// Starts `command`, which is to serve on `port`, without waiting for it.
    pub fn start_unchecked(
        name: &str,
        mut command: Command,
        port: u16,
        install_hint: &str,
    ) -> Peer {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {name} ({}): {error}; install it with: {install_hint}",
                    command.get_program().display()
                )
            });
        Peer { port, child }
    }

    /// How the peer ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/peers`: the peers' own scripts and packages.
pub fn peers_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers"))
}

/// `target/test-peers`: what the tests install for their peers.
fn installed_peers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is under the target dir")
        .join("test-peers");
    std::fs::create_dir_all(&dir).expect("target/test-peers");
    dir
}

/// Runs `install` unless `installed` already holds, once for every test
/// process on the machine: tests run in parallel, in one process or many,
/// and one installs while the others wait on `target/test-peers/NAME.lock`.
fn install_once(name: &str, installed: impl Fn() -> bool, install: impl FnOnce()) {
    if installed() {
        return;
    }
    let lock = File::create(installed_peers_dir().join(format!("{name}.lock")))
        .expect("the install lock file");
    let _locked = Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, error)| panic!("cannot lock the {name} install: {error}"));
    if !installed() {
        install();
    }
}

/// Runs `command` to install a peer; panics with `what` if it fails.
fn run_install_step(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot {what}: {error}"));
    assert!(status.success(), "{what} failed ({status})");
}

/// `tests/peers/NAME`, an npm package of Node.js peers, installed from its
/// lock file on first use.
pub fn npm_peer(name: &str) -> PathBuf {
    let dir = peers_dir().join(name);
    // npm writes its own record of the tree last, once the install is whole.
    let finished = dir.join("node_modules/.package-lock.json");
    install_once(
        &format!("npm-{name}"),
        || finished.exists(),
        || {
            run_install_step(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--silent"])
                    .current_dir(&dir),
                &format!("npm ci in {} (npm comes with Node.js)", dir.display()),
            );
        },
    );
    dir
}

/// How the Python peers are installed, for error messages.
pub const PYTHON_PEERS: &str = "apt-get install python3-venv (the tests install \
    tests/peers/requirements.txt into target/test-peers/venv themselves)";

/// The Python of `target/test-peers/venv`, a virtual environment holding
/// `tests/peers/requirements.txt`, made on first use and made again when
/// the requirements change: the peers need nothing installed by hand.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = peers_dir().join("requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("tests/peers/requirements.txt");
        let venv = installed_peers_dir().join("venv");
        // The venv keeps a copy of the requirements it was made from, written last.
        let stamp = venv.join("herald-requirements.txt");
        install_once(
            "venv",
            || std::fs::read_to_string(&stamp).is_ok_and(|made_from| made_from == wanted),
            || {
                if venv.exists() {
                    std::fs::remove_dir_all(&venv).expect("remove the outdated venv");
                }
                run_install_step(
                    Command::new("python3").arg("-m").arg("venv").arg(&venv),
                    &format!("create the venv of the Python peers ({PYTHON_PEERS})"),
                );
                run_install_step(
                    Command::new(venv.join("bin/python"))
                        .args([
                            "-m",
                            "pip",
                            "install",
                            "--quiet",
                            "--disable-pip-version-check",
                        ])
                        .arg("-r")
                        .arg(&requirements),
                    &format!("install the Python peers ({PYTHON_PEERS})"),
                );
                std::fs::write(&stamp, &wanted).expect("stamp the venv");
            },
        );
        venv.join("bin/python")
    })
}

/// aiosmtpd on a free port; `handler` is its `-c CLASS [ARGS]` (handlers of
/// `tests/peers` are importable), `extra` more flags.
pub async fn aiosmtpd(handler: &[&str], extra: &[&str]) -> Peer {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["-m", "aiosmtpd", "-n", "-l", listen.as_str()];
    args.extend(extra);
    args.push("-c");
    args.extend(handler);
    Peer::spawn_python("aiosmtpd", &args, port).await
}

/// aiosmtpd with `tests/peers/smtp_recorder.py`, which appends one line per
/// recipient received to a file.
pub struct SmtpRecorder {
    pub peer: Peer,
    file: PathBuf,
}

/// Starts an [`SmtpRecorder`] writing to a file in `dir`.
pub async fn smtp_recorder(dir: &Path) -> SmtpRecorder {
    let file = dir.join("received.txt");
    std::fs::write(&file, "").expect("the receipts file");
    let peer = aiosmtpd(&["smtp_recorder.Recorder", file.to_str().unwrap()], &[]).await;
    SmtpRecorder { peer, file }
}

impl SmtpRecorder {
    /// Every recipient received so far, in order, repeats included: when
    /// (UNIX seconds) and the address.
    pub fn receipts(&self) -> Vec<(f64, String)> {
        let text = std::fs::read_to_string(&self.file).expect("the receipts file");
        text.lines()
            .filter_map(|line| {
                let (at, address) = line.split_once(' ')?;
                Some((at.parse().expect("a time"), address.to_string()))
            })
            .collect()
    }
}

/// `tests/peers/webhook_receiver.py` on `port`: verifies every POST with the
/// independent `standardwebhooks` library against `secret` and records it.
pub async fn webhook_receiver(port: u16, secret: &herald::signing::WebhookSecret) -> Peer {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/webhook_receiver.py"
    );
    Peer::spawn_python(
        "webhook receiver",
        &[
            script,
            "--port",
            &port.to_string(),
            "--secret",
            secret.expose(),
        ],
        port,
    )
    .await
}

/// What the webhook receiver recorded, oldest first.
pub async fn webhook_requests(peer: &Peer) -> Vec<serde_json::Value> {
    reqwest::get(format!("http://127.0.0.1:{}/_peer/requests", peer.port))
        .await
        .expect("the receiver answers")
        .json()
        .await
        .expect("a JSON list")
}

/// The webhook receiver answers the next requests with these, in order.
pub async fn webhook_answer_next(peer: &Peer, answers: serde_json::Value) {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/_peer/respond", peer.port))
        .json(&answers)
        .send()
        .await
        .expect("the receiver takes a script")
        .error_for_status()
        .expect("the receiver accepts the script");
}
