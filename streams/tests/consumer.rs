//! The consumer engine through its public seam: a recording outbox, a bare store as the
//! stream, the `$JS.API.CONSUMER.*` handlers, acks and timers (tokio's paused clock). Expected
//! statuses and JSON observed from nats-server 2.15.1.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_streams::config::{Retention, StorageType};
use natter_streams::consumer::{Consumers, MsgSource, Outbox, StoreSource};
use natter_streams::{ApiReply, StreamConfig};
use serde_json::{json, Value};
use tokio::time::sleep;

#[derive(Debug, Clone)]
struct Msg {
    to: String,
    subject: String,
    reply: Option<String>,
    headers: String,
    payload: String,
}

#[derive(Default)]
struct Rec {
    msgs: Mutex<Vec<Msg>>,
    deaf: Mutex<HashSet<String>>,
}

impl Outbox for Rec {
    fn send(&self, subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) {
        self.deliver(subject, subject, reply.unwrap_or(""), headers, payload);
    }
    fn has_interest(&self, subject: &str) -> bool {
        !self.deaf.lock().unwrap().contains(subject)
    }
    fn deliver(
        &self,
        to: &str,
        subject: &str,
        reply: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        self.msgs.lock().unwrap().push(Msg {
            to: to.into(),
            subject: subject.into(),
            reply: (!reply.is_empty()).then(|| reply.to_string()),
            headers: String::from_utf8_lossy(headers.unwrap_or_default()).into(),
            payload: String::from_utf8_lossy(payload).into(),
        });
    }
}

impl Rec {
    /// Takes what was sent to `to`.
    fn take(&self, to: &str) -> Vec<Msg> {
        let mut all = self.msgs.lock().unwrap();
        let (mine, rest): (Vec<Msg>, Vec<Msg>) = all.drain(..).partition(|m| m.to == to);
        *all = rest;
        mine
    }
    fn deaf(&self, subject: &str, deaf: bool) {
        let mut d = self.deaf.lock().unwrap();
        if deaf {
            d.insert(subject.into());
        } else {
            d.remove(subject);
        }
    }
}

struct Env {
    cons: Consumers,
    src: Arc<StoreSource>,
    rec: Arc<Rec>,
    _dir: Option<tempfile::TempDir>,
}

fn stream_cfg(storage: StorageType, retention: Retention) -> StreamConfig {
    let mut c = StreamConfig::new("S", &["foo.>"]);
    c.storage = storage;
    c.retention = retention;
    c
}

fn env_with(cfg: StreamConfig, dir: std::path::PathBuf) -> Env {
    let rec = Arc::new(Rec::default());
    let src = Arc::new(StoreSource::open(cfg, dir).unwrap());
    let cons = Consumers::new(rec.clone(), tokio::runtime::Handle::current());
    cons.load(src.clone());
    Env {
        cons,
        src,
        rec,
        _dir: None,
    }
}

fn mem_env(retention: Retention) -> Env {
    env_with(
        stream_cfg(StorageType::Memory, retention),
        "/nonexistent".into(),
    )
}

impl Env {
    async fn publish(&self, subject: &str, payload: &str) -> u64 {
        let seq = self
            .src
            .append(subject, b"", payload.as_bytes())
            .await
            .unwrap();
        if let Some(d) = self.cons.stored("S", seq) {
            d.await.unwrap();
        }
        seq
    }
    fn api(&self, subject: &str, body: Value) -> Value {
        let payload = if body.is_null() {
            vec![]
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        let s: Arc<dyn MsgSource> = self.src.clone();
        match self
            .cons
            .api(subject, Some("_INBOX.api"), &payload, Some(s))
        {
            Some(ApiReply::Json(b)) => serde_json::from_slice(&b).unwrap(),
            other => panic!("not json: {other:?}"),
        }
    }
    fn create(&self, name: &str, config: Value) -> Value {
        let mut config = config;
        config["durable_name"] = name.into();
        let r = self.api(
            &format!("$JS.API.CONSUMER.CREATE.S.{name}"),
            json!({"stream_name":"S","config":config}),
        );
        assert!(r.get("error").is_none(), "{r}");
        r
    }
    fn pull(&self, consumer: &str, inbox: &str, body: Value) {
        let payload = serde_json::to_vec(&body).unwrap();
        let s: Arc<dyn MsgSource> = self.src.clone();
        let r = self.cons.api(
            &format!("$JS.API.CONSUMER.MSG.NEXT.S.{consumer}"),
            Some(inbox),
            &payload,
            Some(s),
        );
        assert!(r.is_none());
    }
    fn info(&self, consumer: &str) -> Value {
        self.api(&format!("$JS.API.CONSUMER.INFO.S.{consumer}"), Value::Null)
    }
}

/// Stream sequences of the deliveries in `msgs` (from the ack reply subject).
fn seqs(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| m.reply.as_ref())
        .filter(|r| r.starts_with("$JS.ACK."))
        .map(|r| r.split('.').nth(5).unwrap().parse().unwrap())
        .collect()
}

fn ack(env: &Env, m: &Msg, body: &str, reply: Option<&str>) {
    env.cons
        .ack(m.reply.as_deref().unwrap(), reply, body.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn create_info_list_delete() {
    let env = mem_env(Retention::Limits);
    for i in 0..3 {
        env.publish(&format!("foo.{i}"), "x").await;
    }
    let r = env.create("D", json!({"ack_policy":"explicit"}));
    assert_eq!(
        r["type"],
        "io.nats.jetstream.api.v1.consumer_create_response"
    );
    assert_eq!(r["name"], "D");
    assert_eq!(r["num_pending"], 3);
    assert_eq!(r["config"]["ack_wait"], 30_000_000_000i64);
    assert_eq!(r["config"]["max_ack_pending"], 1000);
    assert_eq!(r["config"]["max_waiting"], 512);
    assert!(r.get("cluster").is_none());
    // Idempotent create; different config with action create fails; update works.
    let again = env.api("$JS.API.CONSUMER.CREATE.S.D", json!({"stream_name":"S","config":{"durable_name":"D","ack_policy":"explicit"},"action":"create"}));
    assert!(again.get("error").is_none(), "{again}");
    let e = env.api("$JS.API.CONSUMER.CREATE.S.D", json!({"stream_name":"S","config":{"durable_name":"D","ack_policy":"explicit","description":"x"},"action":"create"}));
    assert_eq!(e["error"]["err_code"], 10148);
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.Z",
        json!({"stream_name":"S","config":{"name":"Z"},"action":"update"}),
    );
    assert_eq!(e["error"]["err_code"], 10149);
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.D",
        json!({"stream_name":"S","config":{"durable_name":"D","ack_policy":"all"}}),
    );
    assert_eq!(e["error"]["description"], "ack policy can not be updated");
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.D",
        json!({"stream_name":"S","config":{"durable_name":"X"}}),
    );
    assert_eq!(e["error"]["err_code"], 10017);
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name":"S","config":{"durable_name":"X"}}),
    );
    assert_eq!(e["error"]["err_code"], 10020);
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.F.foo.b",
        json!({"stream_name":"S","config":{"name":"F","filter_subject":"foo.a"}}),
    );
    assert_eq!(e["error"]["err_code"], 10131);
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.D",
        json!({"stream_name":"X","config":{}}),
    );
    assert_eq!(e["error"]["err_code"], 10056);
    let u = env.api("$JS.API.CONSUMER.CREATE.S.D", json!({"stream_name":"S","config":{"durable_name":"D","ack_policy":"explicit","max_deliver":5},"action":"update"}));
    assert_eq!(u["config"]["max_deliver"], 5);
    // An ephemeral gets a generated name and the 5s inactive threshold.
    let eph = env.api(
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name":"S","config":{}}),
    );
    let eph_name = eph["name"].as_str().unwrap().to_string();
    assert_eq!(eph_name.len(), 8);
    assert_eq!(eph["config"]["inactive_threshold"], 5_000_000_000i64);
    assert_eq!(env.cons.count("S"), 2);
    let names = env.api("$JS.API.CONSUMER.NAMES.S", json!({}));
    assert_eq!(
        names["type"],
        "io.nats.jetstream.api.v1.consumer_names_response"
    );
    assert_eq!(names["total"], 2);
    assert_eq!(names["limit"], 1024);
    let list = env.api("$JS.API.CONSUMER.LIST.S", json!({"offset":1}));
    assert_eq!(list["limit"], 256);
    assert_eq!(list["consumers"].as_array().unwrap().len(), 1);
    let info = env.info("D");
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.consumer_info_response"
    );
    assert_eq!(info["num_pending"], 3);
    let d = env.api("$JS.API.CONSUMER.DELETE.S.D", Value::Null);
    assert_eq!(
        d,
        json!({"type":"io.nats.jetstream.api.v1.consumer_delete_response","success":true})
    );
    let d = env.api("$JS.API.CONSUMER.DELETE.S.D", Value::Null);
    assert_eq!(
        d["error"],
        json!({"code":404,"err_code":10014,"description":"consumer not found"})
    );
    assert_eq!(env.info("D")["error"]["err_code"], 10014);
    // Unknown stream.
    let r = env
        .cons
        .api("$JS.API.CONSUMER.INFO.X.D", None, b"", None)
        .unwrap();
    let v: Value = serde_json::from_slice(r.json().unwrap()).unwrap();
    assert_eq!(v["error"]["err_code"], 10059);
    // MSG.NEXT to an unknown consumer: no responders.
    let s: Arc<dyn MsgSource> = env.src.clone();
    assert_eq!(
        env.cons
            .api("$JS.API.CONSUMER.MSG.NEXT.S.NOPE", Some("i"), b"", Some(s)),
        Some(ApiReply::NoResponse)
    );
    // The ephemeral goes away after 5s without pull requests.
    sleep(Duration::from_secs(6)).await;
    assert_eq!(env.cons.count("S"), 0);
}

#[tokio::test(start_paused = true)]
async fn deliver_policies() {
    let env = mem_env(Retention::Limits);
    for i in 1..=6 {
        env.publish(if i % 2 == 0 { "foo.b" } else { "foo.a" }, &format!("m{i}"))
            .await;
    }
    let run = |name: &str, cfg: Value| {
        env.create(name, cfg);
        env.pull(name, "in", json!({"batch": 10, "no_wait": true}));
        let got = env.rec.take("in");
        assert_eq!(
            got.last().unwrap().headers,
            "NATS/1.0 404 No Messages\r\n\r\n"
        );
        seqs(&got)
    };
    assert_eq!(run("all", json!({})), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(run("last", json!({"deliver_policy":"last"})), vec![6]);
    assert_eq!(
        run(
            "lasta",
            json!({"deliver_policy":"last","filter_subject":"foo.a"})
        ),
        vec![5]
    );
    assert_eq!(
        run("new", json!({"deliver_policy":"new"})),
        Vec::<u64>::new()
    );
    assert_eq!(
        run(
            "seq",
            json!({"deliver_policy":"by_start_sequence","opt_start_seq":4})
        ),
        vec![4, 5, 6]
    );
    assert_eq!(
        run(
            "time",
            json!({"deliver_policy":"by_start_time","opt_start_time":"2000-01-01T00:00:00Z"})
        ),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        run(
            "future",
            json!({"deliver_policy":"by_start_time","opt_start_time":"2100-01-01T00:00:00Z"})
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        run(
            "lps",
            json!({"deliver_policy":"last_per_subject","filter_subject":"foo.>"})
        ),
        vec![5, 6]
    );
    assert_eq!(
        run("multi", json!({"filter_subjects":["foo.b"]})),
        vec![2, 4, 6]
    );
    // New messages reach them all; pending counts follow.
    env.publish("foo.a", "m7").await;
    env.pull("new", "in", json!({"batch": 1, "no_wait": true}));
    let got = env.rec.take("in");
    assert_eq!(seqs(&got), vec![7]);
    assert_eq!(got[0].subject, "foo.a");
    assert_eq!(got[0].payload, "m7");
    assert_eq!(env.info("lps")["num_pending"], 1);
    assert_eq!(env.info("multi")["num_pending"], 0);
}

#[tokio::test(start_paused = true)]
async fn pull_statuses() {
    let env = mem_env(Retention::Limits);
    env.publish("foo.1", "abc").await;
    env.create("D", json!({"ack_policy":"explicit","max_waiting":2}));
    // A batch of 3 with one message: it waits, then times out with what it had left.
    env.pull("D", "in", json!({"batch":3,"expires":500_000_000}));
    let got = env.rec.take("in");
    assert_eq!(seqs(&got), vec![1]);
    let reply = got[0].reply.clone().unwrap();
    let toks: Vec<&str> = reply.split('.').collect();
    assert_eq!(&toks[..7], &["$JS", "ACK", "S", "D", "1", "1", "1"]);
    assert_eq!(toks[8], "0", "pending after this delivery");
    sleep(Duration::from_millis(600)).await;
    assert_eq!(
        env.rec.take("in")[0].headers,
        "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 2\r\nNats-Pending-Bytes: 0\r\n\r\n"
    );
    // no_wait with nothing: 404.
    env.pull("D", "in", json!({"batch":2,"no_wait":true}));
    assert_eq!(
        env.rec.take("in")[0].headers,
        "NATS/1.0 404 No Messages\r\n\r\n"
    );
    // max_bytes: the size counts subject, reply, headers and payload.
    env.publish("foo.2", "d").await;
    env.pull(
        "D",
        "in",
        json!({"batch":3,"max_bytes":10,"expires":1_000_000_000}),
    );
    assert_eq!(
        env.rec.take("in")[0].headers,
        "NATS/1.0 409 Message Size Exceeds MaxBytes\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 10\r\n\r\n"
    );
    // Heartbeats while waiting, then a delivery when a message arrives.
    env.pull(
        "D",
        "hb",
        json!({"batch":5,"expires":2_000_000_000,"idle_heartbeat":500_000_000}),
    );
    assert_eq!(seqs(&env.rec.take("hb")), vec![2]);
    sleep(Duration::from_millis(550)).await;
    let hb = env.rec.take("hb");
    assert_eq!(
        hb[0].headers,
        "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 2\r\nNats-Last-Stream: 2\r\n\r\n"
    );
    env.pull("D", "in", json!({"batch":1,"expires":5_000_000_000i64}));
    env.pull("D", "in2", json!({"batch":1}));
    assert_eq!(
        env.rec.take("in2")[0].headers,
        "NATS/1.0 409 Exceeded MaxWaiting\r\n\r\n"
    );
    env.pull(
        "D",
        "bad",
        json!({"batch":1,"expires":1_000_000_000,"idle_heartbeat":900_000_000}),
    );
    assert_eq!(
        env.rec.take("bad")[0].headers,
        "NATS/1.0 400 Bad Request - heartbeat value too large\r\n\r\n"
    );
    // Deleting the consumer answers the waiting requests.
    env.api("$JS.API.CONSUMER.DELETE.S.D", Value::Null);
    assert_eq!(
        env.rec.take("in")[0].headers,
        "NATS/1.0 409 Consumer Deleted\r\n\r\n"
    );
    // Request limits and push consumers.
    env.create(
        "L",
        json!({"max_batch":2,"max_expires":1_000_000_000,"max_bytes":100}),
    );
    for (body, want) in [
        (json!({"batch":3}), "409 Exceeded MaxRequestBatch of 2"),
        (
            json!({"expires":2_000_000_000}),
            "409 Exceeded MaxRequestExpires of 1s",
        ),
        (
            json!({"max_bytes":200}),
            "409 Exceeded MaxRequestMaxBytes of 100",
        ),
    ] {
        env.pull("L", "lim", body);
        assert_eq!(
            env.rec.take("lim")[0].headers,
            format!("NATS/1.0 {want}\r\n\r\n")
        );
    }
    env.create("P", json!({"deliver_subject":"dl.p"}));
    env.pull("P", "pp", json!({}));
    assert_eq!(
        env.rec.take("pp")[0].headers,
        "NATS/1.0 409 Consumer is push based\r\n\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn acks_naks_progress_term_and_double_ack() {
    let env = mem_env(Retention::Limits);
    for i in 1..=4 {
        env.publish("foo.x", &format!("m{i}")).await;
    }
    env.create(
        "D",
        json!({"ack_policy":"explicit","ack_wait":1_000_000_000}),
    );
    env.pull("D", "in", json!({"batch":4}));
    let got = env.rec.take("in");
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
    // Double ack: the reply comes after the ack is recorded, also for a repeated ack.
    ack(&env, &got[0], "+ACK", Some("ackr"));
    assert_eq!(env.rec.take("ackr").len(), 1);
    ack(&env, &got[0], "+ACK", Some("ackr"));
    assert_eq!(env.rec.take("ackr").len(), 1);
    ack(&env, &got[1], "-NAK {\"delay\": 500000000}", None);
    ack(&env, &got[2], "+TERM bad", None);
    let term = env
        .rec
        .take("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.S.D");
    assert_eq!(term.len(), 1);
    let info = env.info("D");
    assert_eq!(info["num_ack_pending"], 2);
    assert_eq!(info["ack_floor"]["stream_seq"], 1);
    // Progress on 4 keeps it from the redelivery at 1s; the NAKed 2 comes back after 0.5s.
    env.pull("D", "in", json!({"batch":2,"expires":3_000_000_000i64}));
    sleep(Duration::from_millis(600)).await;
    ack(&env, &got[3], "+WPI", None);
    let r = env.rec.take("in");
    assert_eq!(seqs(&r), vec![2]);
    assert!(r[0]
        .reply
        .as_ref()
        .unwrap()
        .starts_with("$JS.ACK.S.D.2.2.5."));
    ack(&env, &r[0], "+ACK", None);
    sleep(Duration::from_millis(600)).await;
    assert!(seqs(&env.rec.take("in")).is_empty(), "progress delayed 4");
    sleep(Duration::from_millis(500)).await;
    let r = env.rec.take("in");
    assert_eq!(seqs(&r), vec![4]);
    assert_eq!(env.info("D")["num_redelivered"], 1);
    // +NXT acks and asks for more on its reply subject.
    ack(&env, &r[0], "+NXT", Some("nxt"));
    env.publish("foo.x", "m5").await;
    assert_eq!(seqs(&env.rec.take("nxt")), vec![5]);

    // Ack policy all: one ack covers everything before it.
    env.create("A", json!({"ack_policy":"all"}));
    env.pull("A", "a", json!({"batch":5}));
    let got = env.rec.take("a");
    assert_eq!(env.info("A")["num_ack_pending"], 5);
    ack(&env, &got[3], "", None);
    let info = env.info("A");
    assert_eq!(info["num_ack_pending"], 1);
    assert_eq!(info["ack_floor"]["stream_seq"], 4);
}

#[tokio::test(start_paused = true)]
async fn redelivery_backoff_and_max_deliver() {
    let env = mem_env(Retention::Limits);
    env.publish("foo.x", "m1").await;
    env.create(
        "B",
        json!({"ack_policy":"explicit","backoff":[100_000_000, 300_000_000],"max_deliver":3}),
    );
    env.pull("B", "in", json!({"batch":10,"expires":5_000_000_000i64}));
    assert_eq!(seqs(&env.rec.take("in")), vec![1]);
    sleep(Duration::from_millis(120)).await;
    let r = env.rec.take("in");
    assert_eq!(seqs(&r), vec![1]);
    assert!(r[0]
        .reply
        .as_ref()
        .unwrap()
        .starts_with("$JS.ACK.S.B.2.1.2."));
    sleep(Duration::from_millis(200)).await;
    assert!(
        env.rec.take("in").is_empty(),
        "second backoff step is 300ms"
    );
    sleep(Duration::from_millis(120)).await;
    assert_eq!(seqs(&env.rec.take("in")), vec![1]);
    sleep(Duration::from_millis(400)).await;
    assert!(env.rec.take("in").is_empty());
    let adv = env
        .rec
        .take("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.B");
    assert_eq!(adv.len(), 1);
    let v: Value = serde_json::from_str(&adv[0].payload).unwrap();
    assert_eq!(v["type"], "io.nats.jetstream.advisory.v1.max_deliver");
    assert_eq!(
        (v["stream"].clone(), v["consumer"].clone()),
        (json!("S"), json!("B"))
    );
    assert_eq!(
        (v["stream_seq"].clone(), v["deliveries"].clone()),
        (json!(1), json!(3))
    );
    assert_eq!(env.info("B")["num_ack_pending"], 0);
}

#[tokio::test(start_paused = true)]
async fn max_ack_pending_stops_delivery() {
    let env = mem_env(Retention::Limits);
    for i in 0..5 {
        env.publish("foo.x", &i.to_string()).await;
    }
    env.create("M", json!({"ack_policy":"explicit","max_ack_pending":2}));
    env.pull("M", "in", json!({"batch":5,"expires":10_000_000_000i64}));
    let got = env.rec.take("in");
    assert_eq!(seqs(&got), vec![1, 2]);
    ack(&env, &got[0], "+ACK", None);
    assert_eq!(seqs(&env.rec.take("in")), vec![3]);
}

#[tokio::test(start_paused = true)]
async fn push_interest_heartbeats_flow_control() {
    let env = mem_env(Retention::Limits);
    env.rec.deaf("dl", true);
    for i in 0..3 {
        env.publish("foo.x", &i.to_string()).await;
    }
    env.create(
        "P",
        json!({"deliver_subject":"dl","flow_control":true,"idle_heartbeat":500_000_000}),
    );
    sleep(Duration::from_millis(100)).await;
    assert!(env.rec.take("dl").is_empty(), "no interest, no delivery");
    assert_eq!(env.info("P")["push_bound"], Value::Null);
    env.rec.deaf("dl", false);
    env.cons.interest_changed();
    let got = env.rec.take("dl");
    assert_eq!(seqs(&got), vec![1, 2, 3]);
    assert_eq!(got[0].subject, "foo.x", "deliveries keep their subject");
    sleep(Duration::from_millis(550)).await;
    let hb = env.rec.take("dl");
    assert_eq!(hb.len(), 1);
    assert_eq!(
        hb[0].headers,
        "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 3\r\nNats-Last-Stream: 3\r\n\r\n"
    );
    // Flow control: a request once enough bytes are out, a stall until it is answered.
    let big = "x".repeat(200 * 1024);
    for _ in 0..8 {
        env.publish("foo.big", &big).await;
    }
    let got = env.rec.take("dl");
    let fc: Vec<&Msg> = got
        .iter()
        .filter(|m| m.headers.contains("FlowControl"))
        .collect();
    assert_eq!(fc.len(), 1);
    assert_eq!(fc[0].headers, "NATS/1.0 100 FlowControl Request\r\n\r\n");
    let fc_subject = fc[0].reply.clone().unwrap();
    assert!(fc_subject.starts_with("$JS.FC.S.P."));
    let delivered = seqs(&got).len();
    assert!(delivered < 8, "stalled after {delivered}");
    sleep(Duration::from_millis(600)).await;
    let hb = env.rec.take("dl");
    assert!(hb[0]
        .headers
        .contains(&format!("Nats-Consumer-Stalled: {fc_subject}")));
    env.cons.flow_control(&fc_subject);
    let rest = seqs(&env.rec.take("dl")).len();
    assert!(rest > 0 && delivered + rest <= 8);
}

#[tokio::test(start_paused = true)]
async fn workqueue_and_interest_retention_remove_acked() {
    let env = mem_env(Retention::WorkQueue);
    env.publish("foo.x", "a").await;
    env.publish("foo.x", "b").await;
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.W",
        json!({"stream_name":"S","config":{"durable_name":"W"}}),
    );
    assert_eq!(e["error"]["err_code"], 10084);
    env.create("W", json!({"ack_policy":"explicit"}));
    let e = env.api(
        "$JS.API.CONSUMER.CREATE.S.W2",
        json!({"stream_name":"S","config":{"durable_name":"W2","ack_policy":"explicit"}}),
    );
    assert_eq!(e["error"]["err_code"], 10099);
    env.pull("W", "in", json!({"batch":2}));
    let got = env.rec.take("in");
    ack(&env, &got[0], "+ACK", None);
    let st = env.src.state();
    assert_eq!((st.msgs, st.first_seq), (1, 2));

    let env = mem_env(Retention::Interest);
    env.publish("foo.x", "nobody wants this").await;
    assert_eq!(env.src.state().msgs, 0);
    env.create("A", json!({"ack_policy":"explicit"}));
    env.create(
        "B",
        json!({"ack_policy":"explicit","filter_subject":"foo.b"}),
    );
    env.publish("foo.x", "for A").await;
    env.publish("foo.b", "for A and B").await;
    assert_eq!(env.src.state().msgs, 2);
    env.pull("A", "a", json!({"batch":2}));
    for m in env.rec.take("a") {
        ack(&env, &m, "+ACK", None);
    }
    assert_eq!(env.src.state().msgs, 1, "B still needs foo.b");
    env.pull("B", "b", json!({"batch":1}));
    let m = env.rec.take("b");
    ack(&env, &m[0], "+ACK", None);
    assert_eq!(env.src.state().msgs, 0);
    // Deleting a consumer frees what only it kept.
    env.publish("foo.b", "again").await;
    env.pull("A", "a", json!({"batch":1}));
    ack(&env, &env.rec.take("a")[0], "+ACK", None);
    assert_eq!(env.src.state().msgs, 1);
    env.api("$JS.API.CONSUMER.DELETE.S.B", Value::Null);
    assert_eq!(env.src.state().msgs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acks_and_redelivers_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stream_cfg(StorageType::File, Retention::Limits);
    let sdir = dir.path().join("S");
    {
        let env = env_with(cfg.clone(), sdir.clone());
        for i in 1..=4 {
            env.publish("foo.x", &format!("m{i}")).await;
        }
        env.create("D", json!({"ack_policy":"explicit","ack_wait":100_000_000}));
        env.create("N", json!({"ack_policy":"none"}));
        env.pull("D", "in", json!({"batch":3}));
        let got = env.rec.take("in");
        assert_eq!(seqs(&got), vec![1, 2, 3]);
        ack(&env, &got[0], "+ACK", None);
        ack(&env, &got[2], "+ACK", None);
        env.pull("N", "n", json!({"batch":2}));
        assert_eq!(seqs(&env.rec.take("n")), vec![1, 2]);
        // "kill -9": nothing is closed or flushed beyond what each call wrote.
        env.cons.close();
        let src = env.src.clone();
        tokio::task::spawn_blocking(move || src.close().unwrap())
            .await
            .unwrap();
    }
    let env = env_with(cfg, sdir);
    assert_eq!(env.cons.count("S"), 2);
    let info = env.info("D");
    assert_eq!(info["config"]["ack_wait"], 100_000_000);
    assert_eq!(info["delivered"]["stream_seq"], 3);
    assert_eq!(info["num_ack_pending"], 1);
    assert_eq!(info["ack_floor"]["stream_seq"], 1);
    env.pull("D", "in", json!({"batch":3,"expires":2_000_000_000i64}));
    let mut got = seqs(&env.rec.take("in"));
    for _ in 0..50 {
        if got.len() >= 2 {
            break;
        }
        sleep(Duration::from_millis(20)).await;
        got.extend(seqs(&env.rec.take("in")));
    }
    got.sort();
    got.dedup();
    assert_eq!(got, vec![2, 4], "2 was unacked, 1 and 3 acked, 4 new");
    env.pull("N", "n", json!({"batch":5,"no_wait":true}));
    assert_eq!(seqs(&env.rec.take("n")), vec![3, 4]);
}

#[tokio::test(start_paused = true)]
async fn double_ack_on_workqueue_is_confirmed_after_the_removal() {
    let env = mem_env(Retention::WorkQueue);
    env.publish("foo.x", "a").await;
    env.publish("foo.x", "b").await;
    env.create("W", json!({"ack_policy":"explicit"}));
    env.pull("W", "in", json!({"batch":2}));
    let got = env.rec.take("in");
    ack(&env, &got[0], "+ACK", Some("confirm"));
    sleep(Duration::from_millis(1)).await;
    let c = env.rec.take("confirm");
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].headers.as_str(), c[0].payload.as_str()), ("", ""));
    assert_eq!(env.src.state().msgs, 1);
    // A NAK does not remove anything and is confirmed at once.
    ack(&env, &got[1], "-NAK", Some("confirm"));
    assert_eq!(env.rec.take("confirm").len(), 1);
    assert_eq!(env.src.state().msgs, 1);
}

#[tokio::test(start_paused = true)]
async fn api_and_pull_details_observed_from_nats_server() {
    let env = mem_env(Retention::Limits);
    env.publish("foo.a", "1").await;
    // last_per_subject needs a filter, whatever the stream's subjects.
    let r = env.api(
        "$JS.API.CONSUMER.CREATE.S",
        json!({"stream_name":"S","config":{"deliver_policy":"last_per_subject"}}),
    );
    assert_eq!(r["error"]["err_code"], 10094, "{r}");
    // The subject's name wins over a different `name` in the config.
    let r = env.api(
        "$JS.API.CONSUMER.CREATE.S.subj",
        json!({"stream_name":"S","config":{"name":"cfg"}}),
    );
    assert_eq!(r["name"], "subj", "{r}");
    // The filtered form cannot carry filter_subjects.
    let r = env.api(
        "$JS.API.CONSUMER.CREATE.S.f.foo.a",
        json!({"stream_name":"S","config":{"durable_name":"f","filter_subjects":["foo.a"]}}),
    );
    assert_eq!(r["error"]["err_code"], 10137, "{r}");
    let r = env.api(
        "$JS.API.CONSUMER.DURABLE.CREATE.S.d",
        json!({"stream_name":"S","config":{"name":"d"}}),
    );
    assert_eq!(r["error"]["err_code"], 10018, "{r}");
    let r = env.api("$JS.API.CONSUMER.PAUSE.S.nope", json!({}));
    assert_eq!(
        (&r["error"]["err_code"], &r["paused"]),
        (&json!(10014), &json!(false))
    );
    let s: Arc<dyn MsgSource> = env.src.clone();
    match env
        .cons
        .api("$JS.API.CONSUMER.INFO.S.subj", Some("r"), b"null", Some(s))
    {
        Some(ApiReply::Json(b)) => {
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["error"]["err_code"], 10038, "{v}");
        }
        other => panic!("{other:?}"),
    }
    // A negative expires: 408 at once.
    env.create("P", json!({"ack_policy":"explicit"}));
    env.pull("P", "x", json!({"batch":2,"expires":-1}));
    let got = env.rec.take("x");
    assert_eq!(
        got[0].headers,
        "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 2\r\nNats-Pending-Bytes: 0\r\n\r\n"
    );
    // no_wait with expires: waits while there is nothing, ends (404) once it had something.
    env.pull("P", "y", json!({"batch":1}));
    assert_eq!(seqs(&env.rec.take("y")), vec![1]);
    env.pull(
        "P",
        "z",
        json!({"batch":3,"no_wait":true,"expires":1_000_000_000}),
    );
    assert!(env.rec.take("z").is_empty());
    env.publish("foo.b", "2").await;
    let got = env.rec.take("z");
    assert_eq!(seqs(&got), vec![2]);
    assert_eq!(got[1].headers, "NATS/1.0 404 No Messages\r\n\r\n");
}

/// Appends are reported durable out of order when publishers settle their own (the one that
/// wrote a batch may report its last message before the others report theirs): the pending
/// count still comes out right, counting each message once.
#[tokio::test(start_paused = true)]
async fn out_of_order_reports_count_each_message_once() {
    let env = mem_env(Retention::Limits);
    env.create("all", json!({"ack_policy": "explicit"}));
    env.create(
        "one",
        json!({"ack_policy": "explicit", "filter_subject": "foo.1"}),
    );
    let mut seqs = Vec::new();
    for i in 0..6 {
        let subject = format!("foo.{}", i % 2);
        seqs.push(env.src.append(&subject, b"", b"x").await.unwrap());
    }
    for &seq in [6, 2, 1, 5, 3, 4].iter() {
        assert!(env.cons.stored("S", seqs[seq - 1]).is_none());
    }
    assert_eq!(env.info("all")["num_pending"], 6);
    assert_eq!(env.info("one")["num_pending"], 3);
}
