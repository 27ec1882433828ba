//! The JetStream boundary: API JSON, publish acks, dedupe, expected-* headers, limits, purge,
//! get/delete, list/names, direct get, restart reload. Expected JSON observed from nats-server
//! 2.15.1.

use natter_streams::{ApiReply, JetStream, JsConfig};
use serde_json::{json, Value};

fn open(dir: &std::path::Path) -> JetStream {
    JetStream::open(JsConfig {
        store_dir: dir.to_path_buf(),
        ..JsConfig::default()
    })
    .unwrap()
}

async fn api(js: &JetStream, subject: &str, body: Value) -> Value {
    let payload = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    match js.api(subject, &payload).await {
        ApiReply::Json(b) => serde_json::from_slice(&b).unwrap(),
        other => panic!("not json: {other:?}"),
    }
}

async fn publish(js: &JetStream, subject: &str, headers: &[(&str, &str)], payload: &str) -> Value {
    let h = if headers.is_empty() {
        None
    } else {
        let mut h = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        Some(h.into_bytes())
    };
    let ack = js.publish(subject, h.as_deref(), payload.as_bytes()).await;
    serde_json::from_slice(&ack).unwrap()
}

fn err_code(v: &Value) -> u64 {
    v["error"]["err_code"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn create_info_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["foo.>"]}),
    )
    .await;
    assert_eq!(r["type"], "io.nats.jetstream.api.v1.stream_create_response");
    assert_eq!(r["did_create"], true);
    let c = &r["config"];
    assert_eq!(c["retention"], "limits");
    assert_eq!(c["storage"], "file");
    assert_eq!(c["discard"], "old");
    assert_eq!(c["max_msgs"], -1);
    assert_eq!(c["max_age"], 0);
    assert_eq!(c["num_replicas"], 1);
    assert_eq!(c["duplicate_window"], 120_000_000_000i64);
    assert_eq!(r["state"]["first_seq"], 0);
    assert_eq!(r["state"]["first_ts"], "0001-01-01T00:00:00Z");
    assert!(r["created"].as_str().unwrap().ends_with('Z'));

    // Same config again: fine; a different one: name in use.
    let again = api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["foo.>"]}),
    )
    .await;
    assert!(again.get("error").is_none(), "{again}");
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["bar"]}),
    )
    .await;
    assert_eq!(
        r["error"],
        json!({"code":400,"err_code":10058,"description":"stream name already in use with a different configuration"})
    );
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.T",
        json!({"name":"T","subjects":["foo.a"]}),
    )
    .await;
    assert_eq!(err_code(&r), 10065);
    let r = api(&js, "$JS.API.STREAM.CREATE.U", json!({"name":"X"})).await;
    assert_eq!(err_code(&r), 10056);
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.R",
        json!({"name":"R","num_replicas":3}),
    )
    .await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10074,"description":"replicas > 1 not supported in non-clustered mode"})
    );
    let r = match js.api("$JS.API.STREAM.CREATE.B", b"garbage").await {
        ApiReply::Json(b) => serde_json::from_slice::<Value>(&b).unwrap(),
        _ => panic!(),
    };
    assert_eq!(err_code(&r), 10025);
    assert_eq!(r["error"]["code"], 400);

    let r = api(&js, "$JS.API.STREAM.INFO.NOPE", Value::Null).await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0})
    );
    let r = api(&js, "$JS.API.STREAM.INFO.S", Value::Null).await;
    assert_eq!(r["config"]["name"], "S");
    assert_eq!(r["total"], 0);
    assert_eq!(js.stream_for_subject("foo.x").as_deref(), Some("S"));
    assert_eq!(js.stream_for_subject("bar"), None);
    assert_eq!(js.subjects(), vec!["foo.>".to_string()]);
    assert_eq!(js.api("$JS.API.BOGUS", b"").await, ApiReply::NoResponse);
}

#[tokio::test]
async fn publish_ack_dedupe_and_expected_headers() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["foo.>"]}),
    )
    .await;
    assert_eq!(
        publish(&js, "foo.a", &[], "hello").await,
        json!({"stream":"S","seq":1})
    );
    assert_eq!(
        publish(&js, "foo.b", &[("Nats-Msg-Id", "x1")], "world").await,
        json!({"stream":"S","seq":2})
    );
    let raw = js
        .publish(
            "foo.b",
            Some(b"NATS/1.0\r\nNats-Msg-Id: x1\r\n\r\n"),
            b"world",
        )
        .await;
    assert_eq!(raw, br#"{"stream":"S","seq":2,"duplicate": true}"#);

    let r = publish(&js, "foo.b", &[("Nats-Expected-Stream", "Z")], "w").await;
    assert_eq!(
        r,
        json!({"error":{"code":400,"err_code":10060,"description":"expected stream does not match"},"stream":"S","seq":0})
    );
    let r = publish(&js, "foo.b", &[("Nats-Expected-Last-Sequence", "1")], "w").await;
    assert_eq!(r["error"]["description"], "wrong last sequence: 2");
    assert_eq!(err_code(&r), 10071);
    let r = publish(
        &js,
        "foo.b",
        &[("Nats-Expected-Last-Subject-Sequence", "1")],
        "w",
    )
    .await;
    assert_eq!(r["error"]["description"], "wrong last sequence: 2");
    let r = publish(&js, "foo.b", &[("Nats-Expected-Last-Msg-Id", "zz")], "w").await;
    assert_eq!(
        r["error"],
        json!({"code":400,"err_code":10070,"description":"wrong last msg ID: x1"})
    );
    let r = publish(&js, "foo.b", &[("Nats-Rollup", "sub")], "w").await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10111,"description":"rollup not permitted"})
    );

    // The right expectations pass.
    let r = publish(&js, "foo.b", &[("Nats-Expected-Last-Sequence", "2")], "w").await;
    assert_eq!(r["seq"], 3);
    let r = publish(
        &js,
        "foo.c",
        &[("Nats-Expected-Last-Subject-Sequence", "0")],
        "w",
    )
    .await;
    assert_eq!(r["seq"], 4);
    let r = publish(
        &js,
        "foo.c",
        &[("Nats-Expected-Last-Subject-Sequence", "4")],
        "w",
    )
    .await;
    assert_eq!(r["seq"], 5);
    let r = publish(&js, "foo.c", &[("Nats-Expected-Last-Msg-Id", "")], "w").await;
    assert_eq!(r["seq"], 6);
    let r = publish(&js, "foo.c", &[("Nats-Expected-Stream", "S")], "w").await;
    assert_eq!(r["seq"], 7);

    let info = api(&js, "$JS.API.STREAM.INFO.S", json!({"subjects_filter":">"})).await;
    assert_eq!(info["total"], 3);
    assert_eq!(info["limit"], 100000);
    assert_eq!(
        info["state"]["subjects"],
        json!({"foo.a":1,"foo.b":2,"foo.c":4})
    );
    assert_eq!(info["state"]["messages"], 7);
    assert_eq!(info["state"]["last_seq"], 7);
    assert_eq!(info["state"]["num_subjects"], 3);
    let info = api(
        &js,
        "$JS.API.STREAM.INFO.S",
        json!({"subjects_filter":"foo.a"}),
    )
    .await;
    assert_eq!(info["state"]["subjects"], json!({"foo.a":1}));
}

#[tokio::test]
async fn rollups() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.K",
        json!({"name":"K","subjects":["k.>"],"allow_rollup_hdrs":true}),
    )
    .await;
    for s in ["k.a", "k.a", "k.b", "k.b"] {
        publish(&js, s, &[], "x").await;
    }
    let r = publish(&js, "k.a", &[("Nats-Rollup", "sub")], "roll").await;
    assert_eq!(r["seq"], 5);
    let info = api(&js, "$JS.API.STREAM.INFO.K", json!({"subjects_filter":">"})).await;
    assert_eq!(info["state"]["subjects"], json!({"k.a":1,"k.b":2}));
    let r = publish(&js, "k.c", &[("Nats-Rollup", "all")], "roll").await;
    assert_eq!(r["seq"], 6);
    let info = api(&js, "$JS.API.STREAM.INFO.K", Value::Null).await;
    assert_eq!(info["state"]["messages"], 1);
    assert_eq!(info["state"]["first_seq"], 6);
    let r = publish(&js, "k.c", &[("Nats-Rollup", "bogus")], "x").await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10111,"description":"rollup value invalid: \"bogus\""})
    );
}

#[tokio::test]
async fn limits_discard_new_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.D",
        json!({"name":"D","subjects":["d.>"],"max_msg_size":10,"max_msgs_per_subject":2,"discard":"new","discard_new_per_subject":true}),
    )
    .await;
    assert_eq!(publish(&js, "d.a", &[], "1").await["seq"], 1);
    let r = publish(&js, "d.a", &[("Foo", "bar")], "2").await;
    assert_eq!(
        r,
        json!({"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"},"stream":"D","seq":0})
    );
    assert_eq!(publish(&js, "d.a", &[], "3").await["seq"], 2);
    let r = publish(&js, "d.a", &[], "4").await;
    assert_eq!(
        r["error"],
        json!({"code":503,"err_code":10077,"description":"maximum messages per subject exceeded"})
    );
    assert_eq!(publish(&js, "d.b", &[], "0123456789").await["seq"], 3);

    api(
        &js,
        "$JS.API.STREAM.CREATE.M",
        json!({"name":"M","subjects":["m"],"max_msgs":2,"discard":"new"}),
    )
    .await;
    publish(&js, "m", &[], "1").await;
    publish(&js, "m", &[], "2").await;
    let r = publish(&js, "m", &[], "3").await;
    assert_eq!(
        r["error"],
        json!({"code":503,"err_code":10077,"description":"maximum messages exceeded"})
    );
    api(
        &js,
        "$JS.API.STREAM.CREATE.N",
        json!({"name":"N","subjects":["n"],"max_bytes":80,"discard":"new"}),
    )
    .await;
    publish(&js, "n", &[], "1").await;
    publish(&js, "n", &[], "2").await;
    let r = publish(&js, "n", &[], "3").await;
    assert_eq!(r["error"]["description"], "maximum bytes exceeded");

    // Discard old: the store drops the oldest.
    api(
        &js,
        "$JS.API.STREAM.CREATE.O",
        json!({"name":"O","subjects":["o"],"max_msgs":2}),
    )
    .await;
    for i in 0..5 {
        publish(&js, "o", &[], &i.to_string()).await;
    }
    let info = api(&js, "$JS.API.STREAM.INFO.O", Value::Null).await;
    assert_eq!(info["state"]["messages"], 2);
    assert_eq!(info["state"]["first_seq"], 4);
}

#[tokio::test]
async fn account_storage_limit_is_insufficient_resources() {
    let dir = tempfile::tempdir().unwrap();
    let js = JetStream::open(JsConfig {
        store_dir: dir.path().to_path_buf(),
        max_file: 200,
        ..JsConfig::default()
    })
    .unwrap();
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.BIG",
        json!({"name":"BIG","max_bytes":1000}),
    )
    .await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10047,"description":"insufficient storage resources available"})
    );
    api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["s"]}),
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..10 {
        last = publish(&js, "s", &[], "0123456789012345678901234567890123456789").await;
    }
    assert_eq!(
        last["error"],
        json!({"code":503,"err_code":10023,"description":"insufficient resources"})
    );
    let info = api(&js, "$JS.API.STREAM.INFO.S", Value::Null).await;
    assert!(info["state"]["bytes"].as_u64().unwrap() <= 200);
    // Space freed: publishing resumes.
    api(&js, "$JS.API.STREAM.PURGE.S", Value::Null).await;
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(publish(&js, "s", &[], "ok").await["stream"], "S");
}

#[tokio::test]
async fn purge_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.M",
        json!({"name":"M","subjects":["m.*"]}),
    )
    .await;
    for s in ["m.a", "m.b", "m.a", "m.b", "m.a"] {
        publish(&js, s, &[("Hdr", "v")], "data").await;
    }
    let r = api(&js, "$JS.API.STREAM.MSG.GET.M", json!({"seq":1})).await;
    assert_eq!(
        r["type"],
        "io.nats.jetstream.api.v1.stream_msg_get_response"
    );
    assert_eq!(r["message"]["subject"], "m.a");
    assert_eq!(r["message"]["seq"], 1);
    assert_eq!(r["message"]["data"], "ZGF0YQ==");
    assert_eq!(r["message"]["hdrs"], "TkFUUy8xLjANCkhkcjogdg0KDQo=");
    let r = api(
        &js,
        "$JS.API.STREAM.MSG.GET.M",
        json!({"last_by_subj":"m.b"}),
    )
    .await;
    assert_eq!(r["message"]["seq"], 4);
    let r = api(
        &js,
        "$JS.API.STREAM.MSG.GET.M",
        json!({"next_by_subj":"m.b","seq":2}),
    )
    .await;
    assert_eq!(r["message"]["seq"], 2);
    let r = api(&js, "$JS.API.STREAM.MSG.GET.M", json!({"seq":99})).await;
    assert_eq!(
        r["error"],
        json!({"code":404,"err_code":10037,"description":"no message found"})
    );
    let r = api(&js, "$JS.API.STREAM.MSG.GET.M", json!({})).await;
    assert_eq!(err_code(&r), 10003);

    let r = api(&js, "$JS.API.STREAM.MSG.DELETE.M", json!({"seq":1})).await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_msg_delete_response","success":true})
    );
    let r = api(&js, "$JS.API.STREAM.MSG.DELETE.M", json!({"seq":1})).await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10057,"description":"no message found"})
    );
    let info = api(&js, "$JS.API.STREAM.INFO.M", Value::Null).await;
    assert_eq!(info["state"]["messages"], 4);
    assert_eq!(info["state"]["first_seq"], 2);

    let r = api(
        &js,
        "$JS.API.STREAM.PURGE.M",
        json!({"filter":"m.a","keep":1}),
    )
    .await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":1})
    );
    let r = api(&js, "$JS.API.STREAM.PURGE.M", json!({"seq":10,"keep":1})).await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_purge_response","error":{"code":400,"err_code":10003,"description":"bad request"},"purged":0})
    );
    let r = api(&js, "$JS.API.STREAM.PURGE.M", json!({"seq":10})).await;
    assert_eq!(r["purged"], 3);
    let info = api(&js, "$JS.API.STREAM.INFO.M", Value::Null).await;
    assert_eq!(info["state"]["messages"], 0);
    assert_eq!(info["state"]["first_seq"], 10);
    assert_eq!(publish(&js, "m.a", &[], "x").await["seq"], 10);
    let r = api(&js, "$JS.API.STREAM.PURGE.M", Value::Null).await;
    assert_eq!(r["purged"], 1);

    api(
        &js,
        "$JS.API.STREAM.CREATE.F",
        json!({"name":"F","subjects":["f"],"retention":"workqueue","deny_delete":true,"deny_purge":true}),
    )
    .await;
    let r = api(&js, "$JS.API.STREAM.PURGE.F", Value::Null).await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10110,"description":"stream purge not permitted"})
    );
    let r = api(&js, "$JS.API.STREAM.MSG.DELETE.F", json!({"seq":1})).await;
    assert_eq!(r["error"]["description"], "message delete not permitted");
}

#[tokio::test]
async fn direct_get() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.D",
        json!({"name":"D","subjects":["d.>"],"allow_direct":true}),
    )
    .await;
    api(
        &js,
        "$JS.API.STREAM.CREATE.N",
        json!({"name":"N","subjects":["n"]}),
    )
    .await;
    publish(&js, "d.a", &[], "1").await;
    publish(&js, "d.a", &[("Foo", "bar")], "2").await;
    let ApiReply::Msg { headers, payload } = js.api("$JS.API.DIRECT.GET.D", br#"{"seq":1}"#).await
    else {
        panic!()
    };
    let h = String::from_utf8(headers).unwrap();
    assert!(
        h.starts_with("NATS/1.0\r\nNats-Stream: D\r\nNats-Subject: d.a\r\nNats-Sequence: 1\r\nNats-Time-Stamp: "),
        "{h}"
    );
    assert!(h.ends_with("Z\r\n\r\n"));
    assert_eq!(&payload[..], b"1");
    let ApiReply::Msg { headers, payload } = js.api("$JS.API.DIRECT.GET.D.d.a", b"").await else {
        panic!()
    };
    let h = String::from_utf8(headers).unwrap();
    assert!(
        h.starts_with("NATS/1.0\r\nFoo: bar\r\nNats-Stream: D\r\n"),
        "{h}"
    );
    assert!(h.contains("Nats-Sequence: 2\r\n"));
    assert_eq!(&payload[..], b"2");
    let miss = js.api("$JS.API.DIRECT.GET.D.d.zz", b"").await;
    assert_eq!(
        miss,
        ApiReply::Msg {
            headers: b"NATS/1.0 404 Message Not Found\r\n\r\n".to_vec(),
            payload: Default::default()
        }
    );
    let ApiReply::Msg { headers, .. } = js.api("$JS.API.DIRECT.GET.D", b"").await else {
        panic!()
    };
    assert_eq!(headers, b"NATS/1.0 408 Empty Request\r\n\r\n");
    let ApiReply::Msg { headers, .. } = js.api("$JS.API.DIRECT.GET.D", b"garbage").await else {
        panic!()
    };
    assert_eq!(headers, b"NATS/1.0 408 Malformed Request\r\n\r\n");
    assert_eq!(
        js.api("$JS.API.DIRECT.GET.N", br#"{"seq":1}"#).await,
        ApiReply::NoResponse
    );
}

#[tokio::test]
async fn names_list_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    for n in ["A", "B", "C"] {
        api(
            &js,
            &format!("$JS.API.STREAM.CREATE.{n}"),
            json!({"name":n,"subjects":[format!("{}.>", n.to_lowercase())]}),
        )
        .await;
    }
    let r = api(&js, "$JS.API.STREAM.NAMES", Value::Null).await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_names_response","total":3,"offset":0,"limit":1024,"streams":["A","B","C"]})
    );
    let r = api(&js, "$JS.API.STREAM.NAMES", json!({"offset":1})).await;
    assert_eq!(r["streams"], json!(["B", "C"]));
    let r = api(&js, "$JS.API.STREAM.NAMES", json!({"subject":"b.x"})).await;
    assert_eq!(r["streams"], json!(["B"]));
    assert_eq!(r["total"], 1);
    let r = api(&js, "$JS.API.STREAM.LIST", json!({"offset":2})).await;
    assert_eq!(r["type"], "io.nats.jetstream.api.v1.stream_list_response");
    assert_eq!(r["total"], 3);
    assert_eq!(r["limit"], 256);
    assert_eq!(r["streams"].as_array().unwrap().len(), 1);
    assert_eq!(r["streams"][0]["config"]["name"], "C");
    let r = api(&js, "$JS.API.STREAM.LIST", json!({"offset":5})).await;
    assert_eq!(r["streams"], json!([]));

    // Update: subjects and limits change; storage may not; overlap rejected.
    let r = api(
        &js,
        "$JS.API.STREAM.UPDATE.A",
        json!({"name":"A","subjects":["a.>","x"],"max_msgs":1}),
    )
    .await;
    assert_eq!(r["type"], "io.nats.jetstream.api.v1.stream_update_response");
    assert_eq!(r["config"]["max_msgs"], 1);
    assert!(r.get("did_create").is_none());
    assert_eq!(js.stream_for_subject("x").as_deref(), Some("A"));
    let r = api(
        &js,
        "$JS.API.STREAM.UPDATE.A",
        json!({"name":"A","subjects":["a.>"],"storage":"memory"}),
    )
    .await;
    assert_eq!(
        r["error"],
        json!({"code":500,"err_code":10052,"description":"stream configuration update can not change storage type"})
    );
    let r = api(
        &js,
        "$JS.API.STREAM.UPDATE.A",
        json!({"name":"A","subjects":["b.c"]}),
    )
    .await;
    assert_eq!(err_code(&r), 10065);
    let r = api(&js, "$JS.API.STREAM.UPDATE.Q", json!({"name":"Q"})).await;
    assert_eq!(err_code(&r), 10059);

    let r = match js.api("$JS.API.STREAM.DELETE.B", b"junk").await {
        ApiReply::Json(b) => serde_json::from_slice::<Value>(&b).unwrap(),
        _ => panic!(),
    };
    assert_eq!(err_code(&r), 10038);
    let r = api(&js, "$JS.API.STREAM.DELETE.B", Value::Null).await;
    assert_eq!(
        r,
        json!({"type":"io.nats.jetstream.api.v1.stream_delete_response","success":true})
    );
    let r = api(&js, "$JS.API.STREAM.DELETE.B", Value::Null).await;
    assert_eq!(err_code(&r), 10059);
    assert!(!dir.path().join("$G/streams/B").exists());
    assert_eq!(js.stream_for_subject("b.x"), None);

    let info = api(&js, "$JS.API.INFO", Value::Null).await;
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
    assert_eq!(info["streams"], 2);
    assert_eq!(info["limits"]["max_memory"], -1);
    assert!(info["api"]["total"].as_u64().unwrap() >= 10);
    assert!(info["api"]["errors"].as_u64().unwrap() >= 4);
}

#[tokio::test]
async fn restart_reloads_streams_and_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    {
        let js = open(dir.path());
        api(
            &js,
            "$JS.API.STREAM.CREATE.P",
            json!({"name":"P","subjects":["p.>"],"max_msgs_per_subject":5,"description":"d"}),
        )
        .await;
        api(
            &js,
            "$JS.API.STREAM.CREATE.MEM",
            json!({"name":"MEM","subjects":["mem"],"storage":"memory"}),
        )
        .await;
        publish(&js, "p.a", &[("Nats-Msg-Id", "one")], "1").await;
        publish(&js, "p.b", &[("Nats-Msg-Id", "two")], "2").await;
        publish(&js, "mem", &[], "m").await;
    }
    let js = open(dir.path());
    assert_eq!(
        api(&js, "$JS.API.STREAM.NAMES", Value::Null).await["streams"],
        json!(["MEM", "P"])
    );
    let info = api(&js, "$JS.API.STREAM.INFO.P", Value::Null).await;
    assert_eq!(info["config"]["max_msgs_per_subject"], 5);
    assert_eq!(info["config"]["description"], "d");
    assert_eq!(info["state"]["messages"], 2);
    // Memory streams keep their definition, not their messages.
    let info = api(&js, "$JS.API.STREAM.INFO.MEM", Value::Null).await;
    assert_eq!(info["state"]["messages"], 0);
    // Dedupe and last msg id survive.
    let raw = js
        .publish("p.a", Some(b"NATS/1.0\r\nNats-Msg-Id: one\r\n\r\n"), b"1")
        .await;
    assert_eq!(raw, br#"{"stream":"P","seq":1,"duplicate": true}"#);
    let r = publish(&js, "p.c", &[("Nats-Expected-Last-Msg-Id", "two")], "3").await;
    assert_eq!(r["seq"], 3);
    assert!(dir.path().join("$G/streams/P/meta.json").exists());
}

#[tokio::test]
async fn concurrent_publishes_get_distinct_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    api(
        &js,
        "$JS.API.STREAM.CREATE.C",
        json!({"name":"C","subjects":["c"]}),
    )
    .await;
    let futs: Vec<_> = (0..200)
        .map(|i| js.publish("c", None, format!("{i}").as_bytes()))
        .collect();
    let mut seqs = Vec::new();
    for f in futs {
        let v: Value = serde_json::from_slice(&f.await).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let info = api(&js, "$JS.API.STREAM.INFO.C", Value::Null).await;
    assert_eq!(info["state"]["messages"], 200);
}

#[tokio::test]
async fn empty_names_seal_first_seq_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    let r = api(&js, "$JS.API.STREAM.NAMES", Value::Null).await;
    assert_eq!(r["streams"], Value::Null);
    assert_eq!(r["total"], 0);
    let r = api(&js, "$JS.API.STREAM.LIST", Value::Null).await;
    assert_eq!(r["streams"], json!([]));

    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.E",
        json!({"name":"E","subjects":["e"],"first_seq":100,"mirror":null,"allow_msg_ttl":false}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(publish(&js, "e", &[], "x").await["seq"], 100);
    let r = api(
        &js,
        "$JS.API.STREAM.INFO.E",
        json!({"subjects_filter":"zz"}),
    )
    .await;
    assert_eq!(
        (r["total"].clone(), r["limit"].clone()),
        (json!(0), json!(0))
    );
    assert!(r["state"].get("subjects").is_none());

    let r = api(
        &js,
        "$JS.API.STREAM.UPDATE.E",
        json!({"name":"E","subjects":["e"],"sealed":true}),
    )
    .await;
    assert_eq!(r["config"]["sealed"], true);
    assert_eq!(r["config"]["discard"], "new");
    assert_eq!(r["config"]["deny_delete"], true);
    assert_eq!(r["config"]["deny_purge"], true);
    let r = publish(&js, "e", &[], "x").await;
    assert_eq!(
        r,
        json!({"error":{"code":400,"err_code":10109,"description":"invalid operation on sealed stream"},"stream":"E","seq":0})
    );
    let r = api(&js, "$JS.API.STREAM.PURGE.E", Value::Null).await;
    assert_eq!(err_code(&r), 10109);
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.S",
        json!({"name":"S","subjects":["s"],"sealed":true}),
    )
    .await;
    assert_eq!(
        r["error"]["description"],
        "stream configuration for create can not be sealed"
    );
    let r = api(
        &js,
        "$JS.API.STREAM.CREATE.U",
        json!({"name":"U","mirror":{"name":"E"}}),
    )
    .await;
    assert_eq!(err_code(&r), 10052);
}

/// Details observed from nats-server 2.15.1 that the first API layer got wrong.
#[tokio::test]
async fn nats_server_details() {
    let dir = tempfile::tempdir().unwrap();
    let js = open(dir.path());
    let create = |name: &str, body: Value| {
        let subject = format!("$JS.API.STREAM.CREATE.{name}");
        let js = js.clone();
        async move { api(&js, &subject, body).await }
    };
    let desc = |v: &Value| v["error"]["description"].as_str().unwrap_or("").to_string();

    // Validation wording and order.
    let r = create("R", json!({"name":"R","num_replicas":6})).await;
    assert_eq!(
        (err_code(&r), desc(&r)),
        (10052, "maximum replicas is 5".into())
    );
    let r = create("R", json!({"name":"R","num_replicas":-1})).await;
    assert_eq!(
        (err_code(&r), r["error"]["code"].clone(), desc(&r)),
        (
            10133,
            json!(400),
            "replicas count cannot be negative".into()
        )
    );
    let r = create("a*b", json!({"name":"a*b"})).await;
    assert_eq!(
        desc(&r),
        "stream name is required and can not contain '.', '*', '>', '\\', '/'"
    );
    let r = create("a/b", json!({"name":"a/b"})).await;
    assert_eq!(
        (err_code(&r), desc(&r)),
        (10128, "Stream name can not contain path separators".into())
    );
    let r = create("D", json!({"name":"D","subjects":["a","a"]})).await;
    assert_eq!(desc(&r), "subject \"a\" overlaps with \"a\"");
    let r = create("D", json!({"name":"D","discard_new_per_subject":true})).await;
    assert_eq!(
        desc(&r),
        "discard new per subject requires discard new policy to be set"
    );
    let r = create(
        "D",
        json!({"name":"D","discard_new_per_subject":true,"discard":"new"}),
    )
    .await;
    assert_eq!(
        desc(&r),
        "discard new per subject requires max msgs per subject > 0"
    );
    let r = create(
        "D",
        json!({"name":"D","deny_purge":true,"allow_rollup_hdrs":true}),
    )
    .await;
    assert_eq!(desc(&r), "roll-ups require the purge permission");
    // Limits below -1 are unlimited, not an error.
    let r = create("L", json!({"name":"L","max_msgs":-5,"max_consumers":-2})).await;
    assert_eq!(r["config"]["max_msgs"], -1, "{r}");
    assert_eq!(r["config"]["max_consumers"], -1);
    // max_consumers may change; the update reply has no cluster section.
    let r = api(
        &js,
        "$JS.API.STREAM.UPDATE.L",
        json!({"name":"L","max_consumers":5}),
    )
    .await;
    assert_eq!(r["config"]["max_consumers"], 5, "{r}");
    assert!(r.get("cluster").is_none());
    let r = api(&js, "$JS.API.STREAM.UPDATE.L", Value::Null).await;
    assert_eq!(err_code(&r), 10052, "{r}");

    // Lenient parsing: junk bodies are empty requests for INFO, NAMES, LIST and PURGE.
    for subject in [
        "$JS.API.STREAM.INFO.L",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.PURGE.L",
    ] {
        let ApiReply::Json(b) = js.api(subject, b"junk").await else {
            panic!("{subject}")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(v.get("error").is_none(), "{subject}: {v}");
    }
    let r = api(&js, "$JS.API.STREAM.NAMES", json!({"offset":100})).await;
    assert_eq!(
        (r["offset"].clone(), r["total"].clone()),
        (json!(1), json!(1))
    );

    // Headers: empty values are absent; TTL is refused before dedupe; rollup values ignore case.
    create(
        "E",
        json!({"name":"E","subjects":["e.*"],"allow_rollup_hdrs":true}),
    )
    .await;
    let a = publish(&js, "e.a", &[("Nats-Msg-Id", "m1")], "x").await;
    assert_eq!(a["seq"], 1);
    let a = publish(&js, "e.a", &[("Nats-Expected-Last-Sequence", "")], "x").await;
    assert_eq!(a["seq"], 2, "{a}");
    let a = publish(
        &js,
        "e.a",
        &[("Nats-Msg-Id", "m1"), ("Nats-TTL", "1s")],
        "x",
    )
    .await;
    assert_eq!(err_code(&a), 10166, "{a}");
    let a = publish(
        &js,
        "e.a",
        &[("Nats-Msg-Id", "m1"), ("Nats-Expected-Last-Sequence", "7")],
        "x",
    )
    .await;
    assert_eq!(desc(&a), "wrong last sequence: 2");
    let a = publish(
        &js,
        "e.a",
        &[("Nats-Msg-Id", "m1"), ("Nats-Expected-Last-Msg-Id", "zz")],
        "x",
    )
    .await;
    assert_eq!(a["duplicate"], true, "{a}");
    let a = publish(&js, "e.b", &[("Nats-Rollup", "ALL")], "x").await;
    assert_eq!(a["seq"], 3, "{a}");
    let r = api(&js, "$JS.API.STREAM.INFO.E", Value::Null).await;
    assert_eq!(r["state"]["messages"], 1);

    // MSG.DELETE errors, file stream.
    create("F", json!({"name":"F","subjects":["f"]})).await;
    for _ in 0..4 {
        publish(&js, "f", &[], "x").await;
    }
    api(&js, "$JS.API.STREAM.PURGE.F", json!({"seq":2})).await;
    api(&js, "$JS.API.STREAM.MSG.DELETE.F", json!({"seq":3})).await;
    let del = |body: Value| api(&js, "$JS.API.STREAM.MSG.DELETE.F", body);
    let r = del(json!({"seq":3})).await;
    assert_eq!(
        (err_code(&r), desc(&r)),
        (10043, "sequence 3 not found".into())
    );
    let r = del(json!({"seq":9})).await;
    assert_eq!((err_code(&r), desc(&r)), (10057, "stream store EOF".into()));
    let r = del(json!({"seq":1})).await;
    assert_eq!((err_code(&r), desc(&r)), (10057, "no message found".into()));
    let r = del(json!({"seq":0})).await;
    assert_eq!((err_code(&r), desc(&r)), (10057, "no message found".into()));
    assert_eq!(err_code(&del(json!({})).await), 10003);
    let r = api(
        &js,
        "$JS.API.STREAM.INFO.F",
        json!({"deleted_details":true}),
    )
    .await;
    assert_eq!(r["state"]["deleted"], json!([3]), "{r}");

    // INFO paging: an empty filter is no filter; a page past the end has no subjects.
    let r = api(&js, "$JS.API.STREAM.INFO.E", json!({"subjects_filter":""})).await;
    assert!(r["state"].get("subjects").is_none(), "{r}");
    let r = api(
        &js,
        "$JS.API.STREAM.INFO.E",
        json!({"subjects_filter":">","offset":5}),
    )
    .await;
    assert!(r["state"].get("subjects").is_none(), "{r}");
    assert_eq!(
        (r["total"].clone(), r["offset"].clone()),
        (json!(1), json!(5))
    );

    // PURGE: zero seq/keep are absent; an invalid filter purges nothing.
    let r = api(&js, "$JS.API.STREAM.PURGE.E", json!({"seq":0,"keep":0})).await;
    assert_eq!(r["purged"], 1, "{r}");
    let r = api(&js, "$JS.API.STREAM.PURGE.F", json!({"filter":"a.>.b"})).await;
    assert_eq!(
        (r["success"].clone(), r["purged"].clone()),
        (json!(true), json!(0))
    );

    // STREAM.DELETE takes `{}` (what async-nats sends) but not `null`; `null` elsewhere is an
    // empty request.
    create("Z", json!({"name":"Z","subjects":["z"]})).await;
    let ApiReply::Json(b) = js.api("$JS.API.STREAM.DELETE.Z", b"null").await else {
        panic!()
    };
    assert_eq!(err_code(&serde_json::from_slice(&b).unwrap()), 10038);
    let r = api(&js, "$JS.API.STREAM.DELETE.Z", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
    let ApiReply::Json(b) = js.api("$JS.API.STREAM.MSG.GET.F", b"null").await else {
        panic!()
    };
    assert_eq!(err_code(&serde_json::from_slice(&b).unwrap()), 10003);

    // DIRECT.GET without a sequence or subject is an empty request.
    create(
        "G",
        json!({"name":"G","subjects":["g"],"allow_direct":true}),
    )
    .await;
    let ApiReply::Msg { headers, .. } = js.api("$JS.API.DIRECT.GET.G", b"{\"seq\":0}").await else {
        panic!()
    };
    assert_eq!(headers, b"NATS/1.0 408 Empty Request\r\n\r\n");
}
