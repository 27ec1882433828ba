//! `/jsz`: JetStream totals, and with `accounts=true` / `streams=true` / `config=true` the
//! per-account and per-stream detail, under nats-server's field names.
//!
//! The numbers come through the streams crate's public API (`$JS.API.INFO` and
//! `STREAM.LIST`), the same answers clients get, so monitoring never disagrees with them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::format;
use super::http::{BadRequest, Query};
use crate::config::jetstream::Sync;
use crate::jetstream::Bridge;
use crate::server::ServerState;

/// What `/jsz` was asked for.
#[derive(Debug, Default)]
pub struct JszQuery {
    accounts: bool,
    streams: bool,
    consumers: bool,
    config: bool,
    account: Option<String>,
}

impl JszQuery {
    /// Everything: accounts, their streams and consumers (what `/metrics` exports).
    pub fn everything() -> JszQuery {
        JszQuery {
            accounts: true,
            streams: true,
            consumers: true,
            config: false,
            account: None,
        }
    }

    /// Reads `accounts`, `streams`, `config` and `acc` (one account's detail only).
    pub fn parse(query: &Query) -> Result<JszQuery, BadRequest> {
        let streams = query.bool("streams")?;
        let consumers = query.bool("consumers")?;
        let config = query.bool("config")?;
        let account = query
            .get("acc")
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        Ok(JszQuery {
            // As in nats-server, asking for stream (or consumer) detail or one account implies
            // the account detail.
            accounts: query.bool("accounts")? || streams || consumers || account.is_some(),
            streams: streams || consumers,
            consumers,
            config,
            account,
        })
    }
}

/// The `/jsz` document.
pub fn collect(state: &ServerState, q: &JszQuery) -> Value {
    let now = format::rfc3339(SystemTime::now());
    let Some(config) = &state.config().jetstream else {
        return json!({
            "memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0,
            "accounts": 0, "ha_assets": 0,
            "api": {"level": 0, "total": 0, "errors": 0},
            "server_id": state.id, "now": now, "disabled": true,
            "config": {"max_memory": 0, "max_storage": 0},
            "streams": 0, "consumers": 0, "messages": 0, "bytes": 0, "total": 0,
        });
    };
    let bridges = state.jetstream.get().map_or(&[][..], Vec::as_slice);
    let mut totals = Totals::default();
    let mut details = Vec::new();
    for bridge in bridges {
        let account = Account::read(bridge, q.consumers);
        totals.add(&account);
        let name = &bridge.account().name;
        if q.accounts && q.account.as_ref().is_none_or(|a| a == name) {
            details.push(account.detail(name, q));
        }
    }
    // nats-server's field, in nanoseconds; natter's default (sync before every ack) has no
    // interval, which `sync_always` says.
    let sync_interval = match config.sync {
        Sync::Always => 0,
        Sync::Interval(every) => every.as_nanos() as u64,
    };
    let mut doc = json!({
        "memory": totals.memory,
        "storage": totals.storage,
        "reserved_memory": totals.reserved_memory,
        "reserved_storage": totals.reserved_storage,
        "accounts": bridges.len(),
        "ha_assets": 0,
        "api": {"level": totals.api_level, "total": totals.api_total, "errors": totals.api_errors},
        "server_id": state.id,
        "now": now,
        "config": {
            "max_memory": config.max_memory.unwrap_or(-1),
            "max_storage": config.max_file.unwrap_or(-1),
            "store_dir": config.store_dir.join("jetstream").display().to_string(),
            "sync_interval": sync_interval,
            "sync_always": config.sync == Sync::Always,
            "strict": config.strict,
        },
        "streams": totals.streams,
        "consumers": totals.consumers,
        "messages": totals.messages,
        "bytes": totals.bytes,
    });
    if q.accounts {
        doc["account_details"] = Value::Array(details);
    }
    doc["total"] = json!(bridges.len());
    doc
}

#[derive(Default)]
struct Totals {
    memory: u64,
    storage: u64,
    reserved_memory: u64,
    reserved_storage: u64,
    api_level: u64,
    api_total: u64,
    api_errors: u64,
    streams: u64,
    consumers: u64,
    messages: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, a: &Account) {
        let n = |k: &str| a.info[k].as_u64().unwrap_or(0);
        self.memory += n("memory");
        self.storage += n("storage");
        self.reserved_memory += n("reserved_memory");
        self.reserved_storage += n("reserved_storage");
        self.api_level = self
            .api_level
            .max(a.info["api"]["level"].as_u64().unwrap_or(0));
        self.api_total += a.info["api"]["total"].as_u64().unwrap_or(0);
        self.api_errors += a.info["api"]["errors"].as_u64().unwrap_or(0);
        self.streams += a.streams.len() as u64;
        for s in &a.streams {
            let n = |k: &str| s["state"][k].as_u64().unwrap_or(0);
            self.consumers += n("consumer_count");
            self.messages += n("messages");
            self.bytes += n("bytes");
        }
    }
}

/// One account's `$JS.API.INFO` answer and its streams' infos.
struct Account {
    info: Value,
    streams: Vec<Value>,
    /// Consumer infos per stream, in stream order (read only when asked for).
    consumers: Vec<Vec<Value>>,
}

impl Account {
    fn read(bridge: &Bridge, with_consumers: bool) -> Account {
        let js = bridge.streams();
        let info = ask(js.api("$JS.API.INFO", b"")).unwrap_or(Value::Null);
        let streams = list_all(js, "$JS.API.STREAM.LIST", "streams");
        let consumers = if with_consumers {
            streams
                .iter()
                .map(|s| {
                    let name = s["config"]["name"].as_str().unwrap_or_default();
                    list_all(js, &format!("$JS.API.CONSUMER.LIST.{name}"), "consumers")
                })
                .collect()
        } else {
            Vec::new()
        };
        Account {
            info,
            streams,
            consumers,
        }
    }

    fn detail(&self, name: &str, q: &JszQuery) -> Value {
        let n = |k: &str| self.info[k].as_u64().unwrap_or(0);
        let mut d = json!({
            "name": name,
            "id": name,
            "memory": n("memory"),
            "storage": n("storage"),
            "reserved_memory": n("reserved_memory"),
            "reserved_storage": n("reserved_storage"),
            "accounts": 0,
            "ha_assets": 0,
            "api": self.info["api"],
        });
        if q.streams {
            let detail: Vec<Value> = self
                .streams
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut e = json!({
                        "name": s["config"]["name"],
                        "created": s["created"],
                        "cluster": s["cluster"],
                        "state": s["state"],
                    });
                    if q.config {
                        e["config"] = s["config"].clone();
                    }
                    if q.consumers {
                        let detail: Vec<Value> = self
                            .consumers
                            .get(i)
                            .into_iter()
                            .flatten()
                            .map(|c| {
                                let mut c = c.clone();
                                if !q.config {
                                    if let Some(o) = c.as_object_mut() {
                                        o.remove("config");
                                    }
                                }
                                c
                            })
                            .collect();
                        e["consumer_detail"] = Value::Array(detail);
                    }
                    e
                })
                .collect();
            d["stream_detail"] = Value::Array(detail);
        }
        d
    }
}

/// Every page of a paged list API (`STREAM.LIST`, `CONSUMER.LIST.<stream>`): the items under
/// `key`.
fn list_all(js: &natter_streams::JetStream, subject: &str, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let page = format!("{{\"offset\":{}}}", all.len());
        let Some(list) = ask(js.api(subject, page.as_bytes())) else {
            break;
        };
        let got = match list[key].as_array() {
            Some(page) if !page.is_empty() => page.clone(),
            _ => break,
        };
        all.extend(got);
        if all.len() as u64 >= list["total"].as_u64().unwrap_or(0) {
            break;
        }
    }
    all
}

/// The JSON of an API answer that is ready at once (info and list never wait on the disk);
/// `None` for anything else.
fn ask(
    mut answer: Pin<Box<dyn Future<Output = natter_streams::ApiReply> + Send>>,
) -> Option<Value> {
    let mut cx = Context::from_waker(Waker::noop());
    match answer.as_mut().poll(&mut cx) {
        Poll::Ready(reply) => serde_json::from_slice(reply.json()?).ok(),
        Poll::Pending => None,
    }
}
