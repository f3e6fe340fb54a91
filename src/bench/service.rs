//! `herald serve` as a child process, for the benchmarks that measure the
//! whole service (its latency as a client sees it, its peak memory).

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::ConnectOptions;

use super::ScratchDatabase;
use super::report::peak_rss_mib_of;

/// `herald serve` as a child process on the scratch database.
pub(super) struct Service {
    child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) address: std::net::SocketAddr,
}

impl Service {
    /// Started with `--roles roles` and ready to serve.
    pub(super) async fn start(scratch: &ScratchDatabase, roles: &str) -> anyhow::Result<Service> {
        let address = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let config = std::env::temp_dir().join(format!("herald-bench-{}.toml", std::process::id()));
        // Metrics are not measured here (their default port may be taken);
        // the benchmarks' sinks listen on loopback; the load generators
        // stay below the request rate.
        std::fs::write(
            &config,
            format!(
                "log_filter = \"warn\"\nmetrics_listen = \"off\"\n\
                 [egress]\nallow = [\"127.0.0.0/8\"]\n\
                 [limits]\napi_rate = {{ per_second = {rate}, burst = {rate} }}\n",
                rate = super::BENCH_API_RATE
            ),
        )?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--roles", roles, "--listen", &address.to_string()])
            .env("DATABASE_URL", scratch.target.to_url_lossy().to_string())
            .env("HERALD_CONFIG", &config)
            .kill_on_drop(true)
            .spawn()
            .context("starting herald serve")?;
        let pid = child.id().context("the service exited at once")?;
        let ready = format!("http://{address}/ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(&ready).await
                && response.status().is_success()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("herald serve exited with {status} before it was ready");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "herald serve was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::remove_file(&config).ok();
        Ok(Service {
            child,
            pid,
            address,
        })
    }

    /// The service's peak resident set size (VmHWM), in MiB.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_mib_of(&self.pid.to_string())
    }

    /// SIGTERM, then a kill if it has not stopped within 30 s.
    pub(super) async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
