//! HTTP monitoring on its own port, answering nats-server's endpoints with its JSON field
//! names so that existing tools read natter unchanged: `/varz` (server and counters),
//! `/connz` (connections), `/subsz` (routing table), `/routez` (no routes), `/healthz`, and
//! `/metrics`, the same counters for Prometheus under prometheus-nats-exporter's names.
//!
//! It is HTTP/1.1 over hyper, one task per monitoring connection; every answer is a snapshot
//! taken when the request arrives, so monitoring never holds a lock the message path needs for
//! longer than a copy of its counters.

mod connz;
pub(crate) mod format;
mod http;
mod jsz;
mod metrics;
mod process;
mod subsz;
mod varz;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, error};

use crate::server::ServerState;
use http::{BadRequest, Query, Reply};

/// Monitoring connections served at once; more wait in the listen backlog. Bounds the memory
/// and file descriptors monitoring can take from the message path.
const MAX_CONNECTIONS: usize = 64;
/// Longest a monitoring connection lives, however slowly its client reads.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The endpoints, as listed on `/` and counted in `/varz`'s `http_req_stats`.
const ENDPOINTS: [&str; 7] = [
    "/varz", "/connz", "/subsz", "/routez", "/healthz", "/jsz", "/metrics",
];

/// What the monitor keeps between requests.
#[derive(Debug)]
pub struct Monitor {
    /// The monitoring port actually bound.
    port: u16,
    /// CPU share between `/varz` readings.
    cpu: process::CpuMeter,
    /// Requests served, by endpoint.
    requests: Mutex<BTreeMap<String, u64>>,
}

impl Monitor {
    fn count_request(&self, path: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry(path.to_string()).or_default() += 1;
    }

    fn request_counts(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves monitoring requests on `listener` for as long as the runtime runs.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let monitor = Arc::new(Monitor {
        port,
        cpu: process::CpuMeter::new(),
        requests: Mutex::new(BTreeMap::new()),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                error!("Error accepting monitoring connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Waits for a free slot: the kernel's backlog holds further connections meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        let monitor = monitor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let reply = handle(&state, &monitor, &req);
                async move { Ok::<_, Infallible>(reply) }
            });
            // The timer bounds how long a client may take to send its headers (hyper's default
            // of 30 s), so idle or trickling monitoring connections do not pile up.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            // hyper's timer covers reading a request, not a reader who never takes the answer:
            // this bounds how long any one connection (and the body it holds) can live.
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!("{peer} - monitoring connection ended: {e}"),
                Err(_) => debug!("{peer} - monitoring connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Answers one request.
fn handle(state: &ServerState, monitor: &Monitor, req: &Request<Incoming>) -> Reply {
    let path = req.uri().path();
    if path != "/" && !ENDPOINTS.contains(&path) {
        return http::not_found();
    }
    monitor.count_request(path);
    let query = Query::parse(req.uri().query());
    let answer =
        match path {
            "/varz" => Ok(http::json(&varz::Varz::collect(state, monitor))),
            "/connz" => connz::ConnzQuery::parse(&query)
                .map(|q| http::json(&connz::Connz::collect(state, &q))),
            "/subsz" => subsz::SubszQuery::parse(&query)
                .map(|q| http::json(&subsz::Subsz::collect(state, &q))),
            "/routez" => Ok(http::json(&Routez::collect(state))),
            "/healthz" => healthz(state, &query),
            "/jsz" => jsz::JszQuery::parse(&query).map(|q| http::json(&jsz::collect(state, &q))),
            "/metrics" => {
                metrics::MetricsQuery::parse(&query).map(|q| metrics::reply(state, monitor, &q))
            }
            _ => Ok(index()),
        };
    answer.unwrap_or_else(Reply::from)
}

/// `/healthz`: 200 `{"status":"ok"}` when the server answers and, with JetStream on, every
/// stream store still accepts writes (JetStream is up before the monitoring port, since the
/// server does not start if a store cannot be opened). A store that stopped after a failed
/// fsync makes it 503 with nats-server's `unavailable` shape, naming the stream. Without
/// JetStream, `js-enabled-only` and `js-server-only` change nothing (as with nats-server).
fn healthz(state: &ServerState, query: &Query) -> Result<Reply, BadRequest> {
    query.bool("js-enabled-only")?;
    query.bool("js-server-only")?;
    let failed: Vec<String> = state
        .jetstream
        .get()
        .into_iter()
        .flatten()
        .flat_map(|b| {
            let account = b.account().name.clone();
            b.streams()
                .failures()
                .into_iter()
                .map(move |(stream, why)| {
                    format!("JetStream stream '{account} > {stream}' is not writable: {why}")
                })
        })
        .collect();
    if failed.is_empty() {
        #[derive(Serialize)]
        struct Health {
            status: &'static str,
        }
        return Ok(http::json_compact(&Health { status: "ok" }));
    }
    let body = serde_json::json!({
        "status": "unavailable",
        "status_code": 503,
        "error": failed.join("; "),
    });
    let mut reply = http::json_compact(&body);
    *reply.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    Ok(reply)
}

/// `/routez`: natter does not cluster, so there are never routes.
#[derive(Debug, Serialize)]
struct Routez {
    server_id: String,
    server_name: String,
    now: String,
    num_routes: usize,
    routes: Vec<serde_json::Value>,
}

impl Routez {
    fn collect(state: &ServerState) -> Routez {
        Routez {
            server_id: state.id.clone(),
            server_name: state.name.clone(),
            now: format::rfc3339(SystemTime::now()),
            num_routes: 0,
            routes: Vec::new(),
        }
    }
}

/// `/`: links to the endpoints, for a browser.
/// The dashboard: one self-contained page (no CDN, nothing to install) that polls `/varz`,
/// `/connz` and `/jsz` and shows live rates, connections, top subjects, streams and consumer lag.
fn index() -> Reply {
    http::html(DASHBOARD.to_string())
}

const DASHBOARD: &str = include_str!("dashboard.html");
