//! HTTP monitoring, black-box: the server runs with `-m -1` (a random monitoring port, reported
//! in the ports file as nats-server does) and is asked over plain HTTP/1.0. Every test passes
//! against nats-server 2.15 too (`NATTER_TEST_SERVER=.../nats-server cargo test --test monitor`),
//! so only what the two have in common is asserted: nats-server runs internal system clients and
//! subscriptions of its own, so counts are compared before and after, and lists are filtered to
//! the test's own connections.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::Value;

/// A server with monitoring on a random port.
fn monitored() -> Server {
    Server::start_with(None, &["-m", "-1"])
}

/// One HTTP response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "body: {}", self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` over HTTP/1.0: the server answers and closes.
fn get(addr: &str, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to monitoring port");
    stream
        .set_read_timeout(Some(common::TIMEOUT))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get_json(addr: &str, path: &str) -> Value {
    get(addr, path).json()
}

/// A connected client that announced `name`, with `subs` subscribed and synchronised.
fn named_client(server: &Server, name: &str, subs: &str) -> Client {
    let mut c = server.client();
    let connect = format!(
        "CONNECT {{\"verbose\":false,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"1.2\"}}\r\n"
    );
    c.send(connect.as_bytes());
    c.send(subs.as_bytes());
    c.ping_pong_within(common::TIMEOUT);
    c
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

/// A time as Go's `RFC3339Nano` in UTC writes it.
fn assert_rfc3339(s: &Value) {
    let s = s.as_str().expect("a time string");
    assert!(
        s.len() >= 20 && s.ends_with('Z') && &s[4..5] == "-" && &s[10..11] == "T",
        "not an RFC 3339 UTC time: {s}"
    );
}

#[test]
fn ports_file_and_log_announce_the_monitor() {
    let server = monitored();
    let addr = server.monitor_addr();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(
        server
            .output("stderr")
            .contains("Starting http monitor on "),
        "{}",
        server.output("stderr")
    );
}

#[test]
fn healthz_is_ok() {
    let server = monitored();
    let addr = server.monitor_addr();
    for path in ["/healthz", "/healthz?js-enabled-only=true"] {
        let r = get(&addr, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json(), serde_json::json!({"status": "ok"}), "{path}");
    }
}

#[test]
fn varz_shows_configuration_and_counts_traffic() {
    let server = monitored();
    let addr = server.monitor_addr();
    let r = get(&addr, "/varz");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let before = r.json();
    for key in [
        "server_id",
        "server_name",
        "version",
        "proto",
        "host",
        "port",
        "max_connections",
        "ping_interval",
        "ping_max",
        "http_host",
        "http_port",
        "max_control_line",
        "max_payload",
        "max_pending",
        "write_deadline",
        "start",
        "now",
        "uptime",
        "mem",
        "cores",
        "cpu",
        "connections",
        "total_connections",
        "in_msgs",
        "in_bytes",
        "out_msgs",
        "out_bytes",
        "slow_consumers",
        "subscriptions",
        "http_req_stats",
    ] {
        assert!(before.get(key).is_some(), "/varz lacks {key}: {before}");
    }
    assert_eq!(u64_of(&before, "port"), u64::from(server.port));
    assert_eq!(u64_of(&before, "ping_interval"), 120_000_000_000);
    assert_eq!(u64_of(&before, "write_deadline"), 10_000_000_000);
    assert_eq!(u64_of(&before, "max_payload"), 1024 * 1024);
    assert_eq!(u64_of(&before, "connections"), 0);
    assert!(u64_of(&before, "mem") > 0);
    assert_rfc3339(&before["start"]);
    assert_rfc3339(&before["now"]);

    let mut sub = named_client(&server, "sub", "SUB foo 1\r\n");
    let mut publisher = server.quiet_client();
    assert_eq!(publisher.info["server_id"], before["server_id"]);
    publisher.send(b"PUB foo 5\r\nhello\r\nPUB foo 5\r\nhello\r\nPUB foo 5\r\nhello\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    assert_eq!(sub.msgs_until_pong().len(), 3);

    let after = get_json(&addr, "/varz");
    let delta = |key: &str| u64_of(&after, key) - u64_of(&before, key);
    assert_eq!(u64_of(&after, "connections"), 2);
    assert_eq!(delta("total_connections"), 2);
    assert_eq!(delta("subscriptions"), 1);
    assert!(delta("in_msgs") >= 3 && delta("in_bytes") >= 15, "{after}");
    assert!(
        delta("out_msgs") >= 3 && delta("out_bytes") >= 15,
        "{after}"
    );
    assert!(u64_of(&after["http_req_stats"], "/varz") >= 2, "{after}");
}

#[test]
fn connz_lists_connections_with_their_subscriptions() {
    let server = monitored();
    let addr = server.monitor_addr();
    let mut sub = named_client(&server, "alpha", "SUB foo 1\r\nSUB bar q 2\r\n");
    let mut publisher = server.quiet_client();
    publisher.send(b"PUB foo 2\r\nhi\r\nPUB foo 2\r\nhi\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    assert_eq!(sub.msgs_until_pong().len(), 2);

    // The server's own early PING (for the RTT) may sit in the publisher's buffer for an
    // instant on a loaded machine: read /connz once nothing is pending.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    let connz = loop {
        let connz = get_json(&addr, "/connz");
        let pending = connz["connections"][1]["pending_bytes"].as_u64();
        if pending == Some(0) || std::time::Instant::now() > deadline {
            break connz;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(u64_of(&connz, "num_connections"), 2);
    assert_eq!(u64_of(&connz, "total"), 2);
    assert_eq!(u64_of(&connz, "offset"), 0);
    assert_eq!(u64_of(&connz, "limit"), 1024);
    assert_rfc3339(&connz["now"]);
    let conns = connz["connections"].as_array().expect("connections");
    let (s, p) = (&conns[0], &conns[1]);
    assert!(u64_of(s, "cid") < u64_of(p, "cid"), "cid order: {connz}");
    assert_eq!(s["kind"], "Client");
    assert_eq!(s["type"], "nats");
    assert_eq!(s["ip"], "127.0.0.1");
    assert!(u64_of(s, "port") > 0);
    for key in ["start", "last_activity"] {
        assert_rfc3339(&s[key]);
    }
    for key in ["rtt", "uptime", "idle"] {
        assert!(
            s[key].as_str().is_some_and(|d| d.ends_with('s')),
            "{key}: {s}"
        );
    }
    assert_eq!(s["name"], "alpha");
    assert_eq!(s["lang"], "rust");
    assert_eq!(s["version"], "1.2");
    assert!(p.get("name").is_none(), "an empty name is left out: {p}");
    assert_eq!(u64_of(s, "subscriptions"), 2);
    assert_eq!(u64_of(s, "out_msgs"), 2);
    assert_eq!(u64_of(s, "out_bytes"), 4);
    assert_eq!(u64_of(p, "in_msgs"), 2);
    assert_eq!(u64_of(p, "in_bytes"), 4);
    assert_eq!(u64_of(p, "pending_bytes"), 0);
    assert!(s.get("subscriptions_list").is_none());

    let listed = get_json(&addr, "/connz?subs=1");
    let mut subjects: Vec<&str> = listed["connections"][0]["subscriptions_list"]
        .as_array()
        .expect("subscriptions_list")
        .iter()
        .map(|v| v.as_str().expect("subject"))
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["bar", "foo"]);

    let detail = get_json(&addr, "/connz?subs=detail");
    let mut subs = detail["connections"][0]["subscriptions_list_detail"]
        .as_array()
        .expect("subscriptions_list_detail")
        .clone();
    subs.sort_by_key(|d| d["sid"].as_str().unwrap_or_default().to_string());
    let cid = s["cid"].clone();
    assert_eq!(
        subs,
        [
            serde_json::json!({"subject": "foo", "sid": "1", "msgs": 2, "cid": cid}),
            serde_json::json!({"subject": "bar", "qgroup": "q", "sid": "2", "msgs": 0, "cid": cid}),
        ]
    );
}

#[test]
fn connz_pages_sorts_and_picks_one() {
    let server = monitored();
    let addr = server.monitor_addr();
    let mut sub = named_client(&server, "sub", "SUB foo 1\r\nSUB foo.> 2\r\n");
    let mut publisher = named_client(&server, "pub", "");
    let _idle = named_client(&server, "idle", "");
    publisher.send(b"PUB foo 3\r\nabc\r\nPUB foo 3\r\nabc\r\nPUB foo 3\r\nabc\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    assert_eq!(sub.msgs_until_pong().len(), 3);

    let names = |path: &str| -> Vec<String> {
        get_json(&addr, path)["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names("/connz"), ["sub", "pub", "idle"]);
    assert_eq!(names("/connz?sort=cid"), ["sub", "pub", "idle"]);
    assert_eq!(names("/connz?sort=start"), ["sub", "pub", "idle"]);
    assert_eq!(names("/connz?sort=uptime"), ["idle", "pub", "sub"]);
    assert_eq!(names("/connz?sort=subs")[0], "sub");
    assert_eq!(names("/connz?sort=msgs_to")[0], "sub");
    assert_eq!(names("/connz?sort=bytes_to")[0], "sub");
    assert_eq!(names("/connz?sort=msgs_from")[0], "pub");
    assert_eq!(names("/connz?sort=bytes_from")[0], "pub");
    for sort in ["pending", "last", "idle", "rtt"] {
        assert_eq!(names(&format!("/connz?sort={sort}")).len(), 3, "{sort}");
    }

    let page = get_json(&addr, "/connz?limit=1&offset=1");
    assert_eq!(u64_of(&page, "num_connections"), 1);
    assert_eq!(u64_of(&page, "total"), 3);
    assert_eq!(u64_of(&page, "offset"), 1);
    assert_eq!(u64_of(&page, "limit"), 1);
    assert_eq!(page["connections"][0]["name"], "pub");

    let beyond = get_json(&addr, "/connz?offset=10");
    assert_eq!(u64_of(&beyond, "num_connections"), 0);
    assert_eq!(u64_of(&beyond, "total"), 3);
    assert_eq!(beyond["connections"], serde_json::json!([]));

    let all = get_json(&addr, "/connz");
    let pub_cid = u64_of(&all["connections"][1], "cid");
    let one = get_json(&addr, &format!("/connz?cid={pub_cid}"));
    assert_eq!(u64_of(&one, "num_connections"), 1);
    assert_eq!(u64_of(&one, "limit"), 1);
    assert_eq!(one["connections"][0]["name"], "pub");
}

#[test]
fn bad_requests_and_unknown_paths_are_refused() {
    let server = monitored();
    let addr = server.monitor_addr();
    let r = get(&addr, "/connz?sort=bogus");
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "invalid sorting option: bogus");
    let r = get(&addr, "/connz?sort=stop");
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "sort by stop only valid on closed connections");
    let r = get(&addr, "/connz?limit=abc");
    assert_eq!(r.status, 400);
    assert!(
        r.body.starts_with("Error decoding int for 'limit': "),
        "{}",
        r.body
    );
    let r = get(&addr, "/connz?subs=maybe");
    assert_eq!(r.status, 400);
    let r = get(&addr, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(get(&addr, "/varz/").status, 404);
}

#[test]
fn subsz_counts_and_lists_subscriptions() {
    let server = monitored();
    let addr = server.monitor_addr();
    let before = get_json(&addr, "/subsz");
    for key in [
        "server_id",
        "now",
        "num_subscriptions",
        "num_cache",
        "num_inserts",
        "num_removes",
        "num_matches",
        "cache_hit_rate",
        "max_fanout",
        "avg_fanout",
        "total",
        "offset",
        "limit",
    ] {
        assert!(before.get(key).is_some(), "/subsz lacks {key}: {before}");
    }
    assert!(before.get("subscriptions_list").is_none());

    let mut sub = named_client(&server, "s", "SUB foo 1\r\nSUB bar.* q 2\r\nSUB gone 3\r\n");
    sub.send(b"UNSUB 3\r\n");
    sub.ping_pong_within(common::TIMEOUT);
    let cid = u64_of(&get_json(&addr, "/connz")["connections"][0], "cid");

    let after = get_json(&addr, "/subsz");
    let delta = |key: &str| u64_of(&after, key) - u64_of(&before, key);
    assert_eq!(delta("num_subscriptions"), 2);
    assert_eq!(delta("num_inserts"), 3);
    assert_eq!(delta("num_removes"), 1);
    assert!(after["cache_hit_rate"].is_number());

    let ours = |path: &str| -> Vec<Value> {
        let mut list: Vec<Value> = get_json(&addr, path)["subscriptions_list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["cid"].as_u64() == Some(cid))
            .collect();
        list.sort_by_key(|s| s["sid"].as_str().unwrap_or_default().to_string());
        list
    };
    let listed = ours("/subsz?subs=1");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["subject"], "foo");
    assert_eq!(listed[0]["account"], "$G");
    assert_eq!(listed[1]["subject"], "bar.*");
    assert_eq!(listed[1]["qgroup"], "q");
    let tested = ours("/subsz?subs=1&test=bar.x");
    assert_eq!(tested.len(), 1, "{tested:?}");
    assert_eq!(tested[0]["subject"], "bar.*");
}

#[test]
fn jsz_without_jetstream_says_disabled() {
    let server = monitored();
    let jsz = get_json(&server.monitor_addr(), "/jsz");
    assert_eq!(jsz["disabled"], true, "{jsz}");
    for key in [
        "memory",
        "storage",
        "streams",
        "consumers",
        "messages",
        "bytes",
    ] {
        assert_eq!(u64_of(&jsz, key), 0, "{key}");
    }
}

#[test]
fn jsz_counts_streams_and_messages() {
    let store = common::temp_dir();
    let server = Server::start_with(None, &["-m", "-1", "-js", "-sd", store.to_str().unwrap()]);
    let addr = server.monitor_addr();
    let mut c = server.quiet_client();
    let create = br#"{"name":"ORDERS","subjects":["orders.>"]}"#;
    c.send(
        format!(
            "SUB _INBOX.r 1\r\nPUB $JS.API.STREAM.CREATE.ORDERS _INBOX.r {}\r\n",
            create.len()
        )
        .as_bytes(),
    );
    c.send(create);
    c.send(b"\r\n");
    let created: Value = serde_json::from_slice(&c.read_msg().payload).unwrap();
    assert_eq!(created["config"]["name"], "ORDERS", "{created}");
    for i in 0..3 {
        c.send(format!("PUB orders.{i} _INBOX.r 5\r\nhello\r\n").as_bytes());
        let ack: Value = serde_json::from_slice(&c.read_msg().payload).unwrap();
        assert_eq!(ack["seq"], i + 1, "{ack}");
    }

    let jsz = get_json(&addr, "/jsz");
    assert!(jsz.get("disabled").is_none(), "{jsz}");
    assert_eq!(u64_of(&jsz, "streams"), 1);
    assert_eq!(u64_of(&jsz, "messages"), 3);
    assert!(u64_of(&jsz, "bytes") > 15);
    assert_eq!(u64_of(&jsz, "storage"), u64_of(&jsz, "bytes"));
    assert_eq!(u64_of(&jsz, "accounts"), 1);
    assert!(u64_of(&jsz["api"], "total") >= 1);
    assert_eq!(
        jsz["config"]["store_dir"],
        store.join("jetstream").display().to_string()
    );
    assert!(jsz.get("account_details").is_none());

    let detail = get_json(&addr, "/jsz?streams=true&config=true");
    let account = &detail["account_details"][0];
    assert_eq!(account["name"], "$G", "{detail}");
    let stream = &account["stream_detail"][0];
    assert_eq!(stream["name"], "ORDERS");
    assert_eq!(u64_of(&stream["state"], "messages"), 3);
    assert_eq!(u64_of(&stream["state"], "last_seq"), 3);
    assert_eq!(stream["config"]["subjects"][0], "orders.>");
    let consumer =
        br#"{"stream_name":"ORDERS","config":{"durable_name":"worker","ack_policy":"explicit"}}"#;
    c.send(
        format!(
            "PUB $JS.API.CONSUMER.CREATE.ORDERS.worker _INBOX.r {}\r\n",
            consumer.len()
        )
        .as_bytes(),
    );
    c.send(consumer);
    c.send(b"\r\n");
    let created: Value = serde_json::from_slice(&c.read_msg().payload).unwrap();
    assert_eq!(created["name"], "worker", "{created}");
    let with_consumers = get_json(&addr, "/jsz?consumers=true");
    let detail = &with_consumers["account_details"][0]["stream_detail"][0]["consumer_detail"][0];
    assert_eq!(detail["name"], "worker", "{with_consumers}");
    assert_eq!(detail["stream_name"], "ORDERS");
    assert_eq!(u64_of(detail, "num_pending"), 3);
    assert!(detail.get("config").is_none());
    assert_eq!(u64_of(&get_json(&addr, "/jsz"), "consumers"), 1);
    let without_config = get_json(&addr, "/jsz?accounts=true&streams=true");
    assert!(without_config["account_details"][0]["stream_detail"][0]
        .get("config")
        .is_none());
    assert_eq!(get(&addr, "/jsz?streams=maybe").status, 400);

    if common::is_natter() {
        // nats-server needs prometheus-nats-exporter for this; natter serves it itself.
        let samples = scrape(&addr, "/metrics");
        let stream = |name: &str| {
            samples
                .iter()
                .find(|(k, _)| {
                    k.starts_with(&format!("jetstream_stream_{name}{{"))
                        && k.contains("stream_name=\"ORDERS\"")
                })
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no jetstream_stream_{name}: {samples:?}"))
        };
        assert_eq!(stream("total_messages"), 3.0);
        assert_eq!(stream("last_seq"), 3.0);
        assert!(stream("total_bytes") > 15.0);
        let server = |name: &str| {
            samples
                .iter()
                .find(|(k, _)| k.starts_with(&format!("{name}{{")))
                .map(|(_, v)| *v)
        };
        assert_eq!(server("jetstream_server_total_streams"), Some(1.0));
        assert_eq!(server("jetstream_server_total_messages"), Some(3.0));
        assert_eq!(server("jetstream_server_jetstream_disabled"), Some(0.0));
        assert_eq!(server("jetstream_server_total_consumers"), Some(1.0));
        // Creating the stream and acknowledging three publishes took fsyncs.
        let fsyncs = server("natter_jetstream_fsync_seconds_count").expect("fsync histogram");
        assert!(fsyncs >= 3.0, "{fsyncs}");
        let inf = samples
            .iter()
            .find(|(k, _)| {
                k.starts_with("natter_jetstream_fsync_seconds_bucket{") && k.contains("le=\"+Inf\"")
            })
            .map(|(_, v)| *v);
        assert_eq!(inf, Some(fsyncs));
        assert!(server("natter_jetstream_fsync_seconds_sum").unwrap() > 0.0);
        let lag = samples
            .iter()
            .find(|(k, _)| {
                k.starts_with("jetstream_consumer_num_pending{")
                    && k.contains("consumer_name=\"worker\"")
            })
            .map(|(_, v)| *v);
        assert_eq!(lag, Some(3.0), "{samples:?}");
    }
}

#[test]
fn routez_has_no_routes() {
    let server = monitored();
    let addr = server.monitor_addr();
    let routez = get_json(&addr, "/routez");
    assert_eq!(u64_of(&routez, "num_routes"), 0);
    assert_eq!(routez["routes"], serde_json::json!([]));
    assert!(routez["server_id"].is_string());
}

#[test]
fn connz_reports_the_round_trip_of_the_early_ping() {
    // Both servers PING a new client within about 2 s; the answer gives /connz its rtt.
    let server = monitored();
    let addr = server.monitor_addr();
    let mut c = named_client(&server, "rtt-probe", "");
    c.expect_within(b"PING\r\n", Duration::from_secs(4));
    c.send(b"PONG\r\n");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let connz = get_json(&addr, "/connz");
        let rtt = connz["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "rtt-probe")
            .map(|c| c["rtt"].as_str().unwrap().to_string())
            .expect("our connection");
        if rtt != "0s" {
            assert!(rtt.ends_with('s'), "a Go duration: {rtt}");
            break;
        }
        assert!(Instant::now() < deadline, "rtt never measured");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `name` is a valid Prometheus metric name (`label` false) or label name.
fn valid_prometheus_name(name: &str, label: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (!label && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Checks `{a="x",b="y\"z"}` (names valid, values quoted and escaped) and returns the pairs.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("labels not in braces: {text}"));
    let mut pairs = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(valid_prometheus_name(name, true), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escaped character").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c} in {text}"),
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    pairs
}

/// One scrape of `path`, checked against the text exposition format 0.0.4: the content type,
/// a `# HELP` and a `# TYPE` for every family before its samples, valid names, well-formed
/// labels with a `server_id`, float values, no series twice. Returns `name{labels}` → value.
fn scrape(addr: &str, path: &str) -> BTreeMap<String, f64> {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(valid_prometheus_name(name, false), "{line}");
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "untyped"].contains(&kind),
                "type {kind}: {line}"
            );
            assert!(typed.insert(name.to_string()), "second TYPE: {line}");
        } else {
            assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a float: {line}"));
            let name = &series[..series.find('{').unwrap_or(series.len())];
            assert!(valid_prometheus_name(name, false), "{line}");
            // A histogram's samples are its family name plus _bucket, _sum or _count.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|base| typed.contains(*base))
                .unwrap_or(name);
            assert!(
                helped.contains(family) && typed.contains(family),
                "no HELP and TYPE before {line}"
            );
            let labels = parse_labels(&series[name.len()..]);
            assert!(labels.iter().any(|(k, _)| k == "server_id"), "{line}");
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "series twice: {line}"
            );
        }
    }
    assert_eq!(helped, typed, "every family has both HELP and TYPE");
    samples
}

/// The value of `name`'s server-wide series (the one whose only label is `server_id`).
fn server_metric(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    let prefix = format!("{name}{{server_id=");
    let found: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix) && !k.contains(','))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name} in {samples:#?}");
    found[0]
}

#[test]
fn metrics_serve_the_exporters_names_in_the_prometheus_text_format() {
    // nats-server has no /metrics (prometheus-nats-exporter makes these from its JSON).
    if !common::is_natter() {
        return;
    }
    let server = monitored();
    let addr = server.monitor_addr();
    assert!(get(&addr, "/").body.contains("/metrics"));
    let before = scrape(&addr, "/metrics");
    for name in [
        "gnatsd_varz_connections",
        "gnatsd_varz_total_connections",
        "gnatsd_varz_subscriptions",
        "gnatsd_varz_in_msgs",
        "gnatsd_varz_out_msgs",
        "gnatsd_varz_in_bytes",
        "gnatsd_varz_out_bytes",
        "gnatsd_varz_slow_consumers",
        "gnatsd_varz_stale_connections",
        "gnatsd_varz_cpu",
        "gnatsd_subsz_num_cache",
        "gnatsd_subsz_num_removes",
        "gnatsd_subsz_cache_hit_rate",
        "gnatsd_connz_pending_bytes",
        "gnatsd_routez_num_routes",
        "gnatsd_healthz_status",
        "natter_sublist_cache_hits_total",
    ] {
        server_metric(&before, name);
    }
    assert!(server_metric(&before, "gnatsd_varz_mem") > 0.0);
    let start_ms = server_metric(&before, "gnatsd_varz_start");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    assert!(
        start_ms > now_ms - 600_000.0 && start_ms <= now_ms,
        "{start_ms}"
    );
    assert!(
        !before.keys().any(|k| k.contains("cid=")),
        "per-connection series only when asked for"
    );

    let mut sub = named_client(&server, "metrics-sub", "SUB foo 1\r\n");
    let mut publisher = server.quiet_client();
    publisher.send(b"PUB foo 5\r\nhello\r\nPUB foo 5\r\nhello\r\nPUB foo 5\r\nhello\r\n");
    publisher.ping_pong_within(common::TIMEOUT);
    assert_eq!(sub.msgs_until_pong().len(), 3);

    let after = scrape(&addr, "/metrics?connz_detailed=true");
    let delta = |name: &str| server_metric(&after, name) - server_metric(&before, name);
    assert_eq!(server_metric(&after, "gnatsd_varz_connections"), 2.0);
    assert_eq!(delta("gnatsd_varz_total_connections"), 2.0);
    assert_eq!(delta("gnatsd_varz_subscriptions"), 1.0);
    assert_eq!(delta("gnatsd_varz_in_msgs"), 3.0);
    assert_eq!(delta("gnatsd_varz_in_bytes"), 15.0);
    assert_eq!(delta("gnatsd_varz_out_msgs"), 3.0);
    assert_eq!(delta("gnatsd_varz_out_bytes"), 15.0);
    assert_eq!(delta("gnatsd_subsz_num_inserts"), 1.0);
    assert!(delta("gnatsd_subsz_num_matches") >= 1.0);
    assert_eq!(server_metric(&after, "gnatsd_connz_in_msgs"), 3.0);
    assert_eq!(server_metric(&after, "gnatsd_connz_out_msgs"), 3.0);
    assert_eq!(server_metric(&after, "gnatsd_connz_subscriptions"), 1.0);
    assert!(server_metric(&after, "gnatsd_varz_http_req_stats_metrics") >= 2.0);

    // connz_detailed: the exporter's per-connection series, labelled with the connection.
    let ours: Vec<(&String, &f64)> = after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("gnatsd_connz_out_msgs{") && k.contains("name=\"metrics-sub\"")
        })
        .collect();
    assert_eq!(ours.len(), 1, "{after:#?}");
    assert_eq!(*ours[0].1, 3.0);
    assert!(ours[0].0.contains("lang=\"rust\"") && ours[0].0.contains("cid=\""));

    assert_eq!(get(&addr, "/metrics?connz_detailed=maybe").status, 400);
}
