//! `/varz`: the server's configuration, resource use and message counters, under
//! nats-server's field names. Subsystems natter does not have (clustering, gateways, leaf
//! nodes, MQTT, WebSocket, JetStream) appear as the empty objects nats-server shows when they
//! are off.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::format::{age, rfc3339};
use super::Monitor;
use crate::server::{ServerState, COMPAT_VERSION, VERSION};

/// The `/varz` document.
#[derive(Debug, Serialize)]
pub struct Varz {
    server_id: String,
    server_name: String,
    version: &'static str,
    natter_version: &'static str,
    proto: u8,
    host: String,
    port: u16,
    max_connections: usize,
    /// Nanoseconds, as Go encodes a `time.Duration`.
    ping_interval: u128,
    ping_max: u32,
    http_host: String,
    http_port: u16,
    http_base_path: &'static str,
    https_port: u16,
    /// Seconds.
    auth_timeout: f64,
    max_control_line: usize,
    max_payload: u32,
    max_pending: u64,
    cluster: Empty,
    gateway: Empty,
    leaf: Empty,
    mqtt: Empty,
    websocket: Empty,
    jetstream: Empty,
    /// Seconds.
    tls_timeout: f64,
    /// Nanoseconds.
    write_deadline: u128,
    start: String,
    now: String,
    uptime: String,
    mem: u64,
    cores: usize,
    gomaxprocs: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    routes: u32,
    remotes: u32,
    leafnodes: u32,
    in_msgs: u64,
    in_bytes: u64,
    in_client_msgs: u64,
    in_client_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    out_client_msgs: u64,
    out_client_bytes: u64,
    slow_consumers: u64,
    stale_connections: u64,
    stalled_clients: u64,
    subscriptions: usize,
    http_req_stats: BTreeMap<String, u64>,
    config_load_time: String,
    config_digest: &'static str,
    slow_consumer_stats: KindCounts,
    stale_connection_stats: KindCounts,
}

/// A subsystem that is off.
#[derive(Debug, Serialize)]
struct Empty {}

/// A counter split by connection kind; natter has only clients.
#[derive(Debug, Serialize)]
struct KindCounts {
    clients: u64,
    routes: u64,
    gateways: u64,
    leafs: u64,
}

impl KindCounts {
    fn clients(clients: u64) -> KindCounts {
        KindCounts {
            clients,
            routes: 0,
            gateways: 0,
            leafs: 0,
        }
    }
}

impl Varz {
    /// The document as of now.
    pub fn collect(state: &ServerState, monitor: &Monitor) -> Varz {
        let config = state.config();
        let totals = state.totals();
        let now = SystemTime::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Varz {
            server_id: state.id.clone(),
            server_name: state.name.clone(),
            version: COMPAT_VERSION,
            natter_version: VERSION,
            proto: 1,
            host: config.host.clone(),
            port: state.port,
            max_connections: config.max_connections,
            ping_interval: config.ping_interval.as_nanos(),
            ping_max: config.ping_max,
            http_host: config.monitor_host().to_string(),
            http_port: monitor.port,
            http_base_path: "",
            https_port: 0,
            auth_timeout: config.auth_timeout.as_secs_f64(),
            max_control_line: config.max_control_line,
            max_payload: config.max_payload,
            max_pending: config.max_pending,
            cluster: Empty {},
            gateway: Empty {},
            leaf: Empty {},
            mqtt: Empty {},
            websocket: Empty {},
            jetstream: Empty {},
            tls_timeout: 2.0,
            write_deadline: config.write_deadline.as_nanos(),
            start: rfc3339(state.started_at),
            now: rfc3339(now),
            uptime: age(now.duration_since(state.started_at).unwrap_or_default()),
            mem: super::process::resident_bytes(),
            cores,
            gomaxprocs: cores,
            cpu: monitor.cpu.percent(),
            connections: state.clients.len(),
            total_connections: totals.total_connections,
            routes: 0,
            remotes: 0,
            leafnodes: 0,
            in_msgs: totals.in_msgs,
            in_bytes: totals.in_bytes,
            in_client_msgs: totals.in_msgs,
            in_client_bytes: totals.in_bytes,
            out_msgs: totals.out_msgs,
            out_bytes: totals.out_bytes,
            out_client_msgs: totals.out_msgs,
            out_client_bytes: totals.out_bytes,
            slow_consumers: totals.slow_consumers,
            stale_connections: totals.stale_connections,
            stalled_clients: 0,
            subscriptions: state.subscription_count(),
            http_req_stats: monitor.request_counts(),
            config_load_time: rfc3339(state.started_at),
            config_digest: "",
            slow_consumer_stats: KindCounts::clients(totals.slow_consumers),
            stale_connection_stats: KindCounts::clients(totals.stale_connections),
        }
    }
}
