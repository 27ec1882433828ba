//! nats.py, the Python client, unchanged against the server: JetStream streams, publish acks,
//! pull and push consumers with redelivery, KV (with watches), the object store and per-message
//! TTL, as `tests/clients/nats_py.py` drives them.
//!
//! `make test` installs nats-py into `.venv` and sets `NATTER_REQUIRE_PYTHON_CLIENT=1`, so there
//! a missing client fails the test; a developer's `cargo test` without it skips, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{temp_dir, Server};

/// A Python with nats-py: `NATTER_PYTHON`, else the project's `.venv`.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("NATTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let has_client = Command::new(&python)
        .args(["-c", "import nats"])
        .output()
        .is_ok_and(|o| o.status.success());
    has_client.then_some(python)
}

#[test]
fn nats_py_streams_consumers_kv_and_object_store() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("NATTER_REQUIRE_PYTHON_CLIENT").is_none(),
            "nats-py is required (NATTER_REQUIRE_PYTHON_CLIENT) but not installed"
        );
        eprintln!("skipped: no nats-py (make test installs it into .venv)");
        return;
    };
    let store = temp_dir();
    let server = Server::start_with(None, &["-js", "-sd", store.to_str().unwrap()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/nats_py.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.url())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("OK\n"),
        "nats.py script failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
}
