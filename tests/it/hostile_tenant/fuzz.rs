//! A bounded schema fuzz: hypothesis-graphql (`tests/peers/graphql_fuzz.py`)
//! generates queries and mutations from `schema.graphql`, with odd values in
//! every argument, and sends them to a real `herald serve` with an admin key.
//! Bad input must come back as a typed error: no 5xx, no `INTERNAL`, no
//! panic, and the service stays ready.

use std::fs::File;
use std::process::Stdio;

use crate::peers::INSTALL_HINT;
use crate::served::serve_with_stderr;

/// Operations per run: enough to reach every root field many times over,
/// few enough for a minute or so against a debug build.
const OPERATIONS: &str = "300";

#[tokio::test]
async fn generated_operations_get_typed_errors_and_the_service_stays_ready() {
    let dir = std::env::temp_dir().join(format!("herald-fuzz-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let stderr_path = dir.join("herald.stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let served = serve_with_stderr(&dir, "Fuzz", "", Stdio::from(stderr)).await;

    let output = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/graphql_fuzz.py"
        ))
        .args(["--url", &served.base, "--key", &served.key])
        .args(["--count", OPERATIONS])
        .args([
            "--schema",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"),
        ])
        .output()
        .await
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let server_stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        output.status.success(),
        "{report}\n{}\n(install the peer with: {INSTALL_HINT})\nserver stderr:\n{server_stderr}",
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        !server_stderr.contains("panicked"),
        "herald panicked during the fuzz:\n{server_stderr}"
    );
    eprintln!("{report}");
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
