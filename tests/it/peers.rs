//! Test peers Herald did not write (aiosmtpd, moto, Standard Webhooks'
//! verifier), run as child processes on free loopback ports and killed when
//! dropped. `.ci/run` installs them; a missing one fails with how to install it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    name: String,
}

impl Peer {
    /// Starts `program args...` and waits until `port` accepts connections.
    pub async fn spawn(
        name: &str,
        program: &str,
        args: &[&str],
        port: u16,
        install_hint: &str,
    ) -> Peer {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {name} ({program}): {error}; install it with: {install_hint}")
            });
        let mut peer = Peer {
            port,
            child,
            name: name.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return peer;
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!(
                    "{name} exited with {status} before listening on {port}; install it with: {install_hint}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within 30 s",
                peer.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/peers/NAME`, an npm package of Node.js peers, installed from its
/// lock file on first use (`.ci/run` does it up front).
pub fn npm_peer(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name);
    // Tests run in parallel: one installs while the others wait.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join("node_modules").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm is needed for the Node.js test peers: install Node.js");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    dir
}

/// How to install the Python peers, for error messages.
pub const INSTALL_HINT: &str = "pip install -r tests/peers/requirements.txt";

/// aiosmtpd on a free port; `handler` is its `-c CLASS [ARGS]` (handlers of
/// `tests/peers` are importable), `extra` more flags.
pub async fn aiosmtpd(handler: &[&str], extra: &[&str]) -> Peer {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pythonpath = format!("PYTHONPATH={}/tests/peers", env!("CARGO_MANIFEST_DIR"));
    let mut args = vec![pythonpath.as_str(), "python3", "-m", "aiosmtpd", "-n"];
    args.extend(["-l", listen.as_str()]);
    args.extend(extra);
    args.push("-c");
    args.extend(handler);
    Peer::spawn("aiosmtpd", "env", &args, port, INSTALL_HINT).await
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
pub async fn webhook_receiver(port: u16, secret: &herald::providers::WebhookSecret) -> Peer {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/webhook_receiver.py"
    );
    Peer::spawn(
        "webhook receiver",
        "python3",
        &[
            script,
            "--port",
            &port.to_string(),
            "--secret",
            secret.expose(),
        ],
        port,
        INSTALL_HINT,
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
