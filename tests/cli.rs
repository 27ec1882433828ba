//! The command line: config file, log file, ports file, `--version` and `-t`.

mod common;

use common::{all_output, run_server, server_bin, temp_dir, Server};
use std::path::Path;
use std::time::{Duration, Instant};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn config_file_and_log_file() {
    let log_dir = temp_dir();
    let log = log_dir.join("server.log");
    let server = Server::start_with(
        Some("# limits\nmax_payload: 2048\n"),
        &["-l", log.to_str().unwrap()],
    );
    let c = server.client();
    assert_eq!(c.info["max_payload"], 2048, "config file applied");

    let want = format!(
        "Listening for client connections on 127.0.0.1:{}",
        server.port
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log file {} lacks {want:?}; it has:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&log_dir);
}

#[test]
fn ports_file_reports_the_random_port() {
    let server = Server::start();
    let exe = server_bin();
    let stem = exe.file_name().unwrap().to_string_lossy().into_owned();
    let path = server.dir().join(format!("{stem}_{}.ports", server.pid()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("ports file {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("ports file is JSON");
    assert_eq!(
        json["nats"],
        serde_json::json!([format!("nats://127.0.0.1:{}", server.port)]),
        "{text}"
    );
    assert_ne!(server.port, 4222, "-p -1 picks a random port");
    let mut c = server.client();
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn version_flag() {
    let out = run_server(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let text = all_output(&out);
    assert!(
        text.chars().any(|c| c.is_ascii_digit()),
        "--version should print a version: {text:?}"
    );
}

#[test]
fn test_flag_accepts_a_good_config() {
    let dir = temp_dir();
    let conf = write(
        &dir,
        "good.conf",
        "port: 4222\nmax_payload: 2048\nping_interval: \"30s\"\n",
    );
    let out = run_server(&["-t", "-c", &conf]);
    assert!(out.status.success(), "{}", all_output(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_flag_rejects_a_bad_config() {
    let dir = temp_dir();
    let conf = write(&dir, "bad.conf", "port: 4222\nmax_payload: \"abc\"\n");
    let out = run_server(&["-t", "-c", &conf]);
    assert!(!out.status.success(), "{}", all_output(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_value_is_reported_with_file_and_line() {
    // Both natter and nats-server 2.15 ("bad.conf:2:1: ...") name the file and line.
    let dir = temp_dir();
    let conf = write(&dir, "bad.conf", "port: -1\nmax_payload: \"abc\"\n");
    let out = run_server(&["-c", &conf]);
    assert!(
        !out.status.success(),
        "must not start: {}",
        all_output(&out)
    );
    let text = all_output(&out);
    assert!(text.contains(&conf), "names the file: {text}");
    assert!(
        text.contains(&format!("{conf}:2")) || text.contains("line 2"),
        "names line 2: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_config_file_fails() {
    let dir = temp_dir();
    let missing = dir.join("nope.conf");
    let out = run_server(&["-c", missing.to_str().unwrap(), "-p", "-1"]);
    assert!(!out.status.success(), "{}", all_output(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn natter_config_syntax_error_names_the_file() {
    if !common::is_natter() {
        return; // nats-server only gives the line here, not the file.
    }
    let dir = temp_dir();
    let conf = write(&dir, "broken.conf", "max_payload: 2048\nfoo {\n");
    let out = run_server(&["-t", "-c", &conf]);
    assert!(!out.status.success(), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(text.contains(&conf), "names the file: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
