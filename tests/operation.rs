//! Running the server as an operator does: signals, graceful shutdown, lame duck, pid file,
//! protocol trace, and refusing to start open when protection is asked for.

mod common;

use common::{is_natter, server_bin, Server};
use std::process::Command;
use std::time::Duration;

fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .args(["-s", sig, &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {sig}");
}

fn ports_files(server: &Server) -> usize {
    std::fs::read_dir(server.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ports")
        })
        .count()
}

#[test]
fn sigterm_closes_clients_and_exits_cleanly() {
    let mut server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB foo 1\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    signal(&server, "TERM");
    c.expect_closed();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    if is_natter() {
        assert!(status.success(), "{status}");
        assert_eq!(ports_files(&server), 0, "ports file removed on shutdown");
    }
}

#[test]
fn sigint_shuts_down() {
    let mut server = Server::start();
    let mut c = server.quiet_client();
    signal(&server, "INT");
    c.expect_closed();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn lame_duck_tells_clients_and_refuses_new_ones() {
    let server =
        Server::with_config("lame_duck_grace_period: \"1s\"\nlame_duck_duration: \"30s\"\n");
    let mut c = server.client();
    // Only clients that speak protocol 1 take an INFO after the first.
    c.send(b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    signal(&server, "USR2");
    // nats-server also sends an INFO right after CONNECT; the lame-duck one carries `ldm`.
    let ldm = (0..3).any(|_| {
        let info = c.expect_line_starting_with("INFO ");
        let json: serde_json::Value = serde_json::from_str(info["INFO ".len()..].trim()).unwrap();
        json["ldm"] == true
    });
    assert!(ldm, "an INFO with \"ldm\":true");
    // The listener is closed: a new client is refused or hung up on without an INFO.
    std::thread::sleep(Duration::from_millis(200));
    if let Ok(mut s) = std::net::TcpStream::connect(server.addr()) {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "no INFO for a new client"
        );
    }
    if is_natter() {
        // One client: closed as soon as the grace period is over; drained, the server exits.
        c.expect_closed();
        let mut server = server;
        let status = server.wait_exit(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "exited after draining: {status:?}"
        );
    }
}

#[test]
fn pid_file_holds_the_pid() {
    let dir = common::temp_dir();
    let pid_file = dir.join("natter.pid");
    let server = Server::start_with(None, &["-P", pid_file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(text.trim(), server.pid().to_string());
}

#[test]
fn signal_flag_stops_a_running_server() {
    let mut server = Server::start();
    let status = Command::new(server_bin())
        .args(["--signal", &format!("quit={}", server.pid())])
        .status()
        .expect("run --signal");
    assert!(status.success());
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "server stopped"
    );
}

#[test]
fn trace_logs_the_protocol_as_nats_server_does() {
    let dir = common::temp_dir();
    let log = dir.join("trace.log");
    let server = Server::start_with(None, &["-DV", "-l", log.to_str().unwrap()]);
    let mut c = server.quiet_client();
    c.send(b"SUB foo 1\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[TRC] 127.0.0.1:"), "{text}");
    assert!(text.contains(" - <<- [SUB foo 1]"), "{text}");
    assert!(
        text.contains("[DBG] 127.0.0.1:") && text.contains("Client connection created"),
        "{text}"
    );
}

#[test]
fn json_log_lines_and_size_rotation() {
    if !common::is_natter() {
        return; // --log_format is natter's; nats-server has no JSON logs.
    }
    let dir = common::temp_dir();
    let log = dir.join("natter.log");
    let args = [
        "-DV",
        "-l",
        log.to_str().unwrap(),
        "--log_format",
        "json",
        "--log_size_limit",
        "4KB",
    ];
    let server = Server::start_with(None, &args);
    let mut c = server.quiet_client();
    for i in 0..60 {
        c.send(format!("SUB subject.number.{i} {i}\r\n").as_bytes());
    }
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
    drop(server);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("natter.log")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "the trace outgrew 4KB at least once: {files:?}"
    );
    let mut messages = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.len() <= 4096 + 512,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["time"].is_string() && v["level"].is_string(), "{line}");
            messages.push(v["msg"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        messages.iter().any(|m| m == "Server is ready"),
        "{messages:?}"
    );
    assert!(messages
        .iter()
        .any(|m| m.contains("<<- [SUB subject.number.59 59]")));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("Rotated log, backup saved as")));
}

#[test]
fn half_given_security_flags_refuse_to_start() {
    if !is_natter() {
        return; // nats-server starts open with a lone --pass; natter will not.
    }
    for (args, says) in [
        (&["--tls"][..], "certificate"),
        (&["--pass", "p"], "--user"),
        (
            &[
                "--tls",
                "--tlscert",
                "/nonexistent/cert.pem",
                "--tlskey",
                "/nonexistent/key.pem",
            ],
            "/nonexistent/",
        ),
    ] {
        let out = Command::new(server_bin()).args(args).output().expect("run");
        assert!(!out.status.success(), "{args:?} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
