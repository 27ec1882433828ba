//! The client protocol over raw TCP, byte for byte, as a telnet session would see it.
//!
//! Every test starts its own server. nats-server sends its first PING about two seconds after a
//! client connects, so tests that compare exact bytes finish their transcript well within that.

mod common;

use common::{Client, Msg, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const UNKNOWN_OP: &[u8] = b"-ERR 'Unknown Protocol Operation'\r\n";

#[test]
fn info_has_the_expected_fields() {
    let server = Server::start();
    let c = server.client();
    let info = &c.info;
    for key in ["server_id", "server_name", "version", "client_ip"] {
        assert!(
            info[key].as_str().is_some_and(|s| !s.is_empty()),
            "INFO.{key} should be a non-empty string: {info}"
        );
    }
    assert_eq!(info["proto"], 1, "{info}");
    assert_eq!(info["host"], "127.0.0.1", "{info}");
    assert_eq!(info["port"], server.port, "{info}");
    assert_eq!(info["headers"], true, "{info}");
    assert_eq!(info["max_payload"], 1024 * 1024, "{info}");
    assert!(info["client_id"].as_u64().is_some(), "{info}");
    assert_eq!(info["client_ip"], "127.0.0.1", "{info}");
}

#[test]
fn each_connection_gets_its_own_client_id() {
    let server = Server::start();
    let a = server.client();
    let b = server.client();
    assert_ne!(a.info["client_id"], b.info["client_id"]);
    assert_eq!(a.info["server_id"], b.info["server_id"]);
}

#[test]
fn ping_pong() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
    c.send(b"PING\r\nPING\r\n");
    c.expect(b"PONG\r\nPONG\r\n");
}

#[test]
fn client_pong_is_accepted_silently() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"PONG\r\npong\r\nPING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn client_is_verbose_before_connect() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"sub foo 1\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB foo 2\r\nhi\r\n");
    c.expect(b"+OK\r\nMSG foo 1 2\r\nhi\r\n");
}

#[test]
fn connect_merges_into_verbose_defaults() {
    let server = Server::start();
    let mut c = server.client();
    // No "verbose" key: still verbose, and CONNECT itself is acknowledged.
    c.send(b"CONNECT {}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"SUB foo 1\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn connect_verbose_false_is_quiet() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n");
    c.expect(b"MSG foo 1 1\r\nx\r\nPONG\r\n");
}

#[test]
fn pedantic_survives_a_connect_that_does_not_mention_it() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false}\r\nPUB a.* 1\r\nx\r\nPING\r\n");
    c.expect(b"-ERR 'Invalid Publish Subject'\r\nPONG\r\n");
}

#[test]
fn verbs_are_case_insensitive() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"connect {\"verbose\":false}\r\npInG\r\n");
    c.expect(b"PONG\r\n");
    c.send(b"sub foo 1\r\nPub foo 2\r\nhi\r\nuNsUb 1\r\npub foo 2\r\nhi\r\nping\r\n");
    c.expect(b"MSG foo 1 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn lowercase_hpub_with_headers() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"connect {\"verbose\":false,\"headers\":true}\r\n");
    c.send(b"sub foo 1\r\nhpub foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nunsub 1\r\npub foo 2\r\nhi\r\nping\r\n");
    c.expect(b"HMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPONG\r\n");
}

#[test]
fn control_lines_may_end_in_bare_newline() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false}\nPING\n");
    c.expect(b"PONG\r\n");
    c.send(b"SUB foo 1\nPUB foo 2\nhi\r\nPING\n");
    c.expect(b"MSG foo 1 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn arguments_are_separated_by_runs_of_spaces_and_tabs() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB  \t foo\t\t 1\r\n");
    c.send(b"PUB\tfoo   2\r\nhi\r\n");
    c.send(b"PUB \t foo\t reply \t 2\r\nhi\r\n");
    c.send(b"PING\r\n");
    c.expect(b"MSG foo 1 2\r\nhi\r\nMSG foo 1 reply 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn payload_must_be_followed_by_crlf() {
    for bad in [
        &b"PUB foo 2\r\nhiX\r\n"[..],
        b"PUB foo 2\r\nhi\n",
        b"PUB foo 2\r\nhi\rX",
    ] {
        let server = Server::start();
        let mut c = server.quiet_client();
        c.send(bad);
        c.expect(UNKNOWN_OP);
        c.expect_closed();
    }
}

#[test]
fn unknown_operation_is_an_error_and_closes() {
    for bad in [&b"FOO\r\n"[..], b"SUB\r\n", b"UNSUB\r\n", b"PUBX foo 1\r\n"] {
        let server = Server::start();
        let mut c = server.quiet_client();
        c.send(bad);
        c.expect(UNKNOWN_OP);
        c.expect_closed();
    }
}

#[test]
fn bad_pub_and_sub_arguments_close_the_connection() {
    // nats-server closes without an -ERR; natter may say why. Either way the connection ends.
    for bad in [
        &b"PUB foo\r\n"[..],
        b"PUB foo x\r\n",
        b"PUB foo -1\r\n",
        b"PUB foo bar baz 1\r\n",
        b"SUB foo\r\n",
        b"SUB a b c d\r\n",
        b"CONNECT {bad\r\n",
    ] {
        let server = Server::start();
        let mut c = server.quiet_client();
        c.send(bad);
        c.expect_closed();
    }
}

#[test]
fn invalid_subscription_subject_is_an_error_that_keeps_the_connection() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB a..b 1\r\n");
    c.expect(b"-ERR 'Invalid Subject'\r\n");
    c.send(b"SUB foo 2\r\nPUB foo 2\r\nok\r\nPING\r\n");
    c.expect(b"MSG foo 2 2\r\nok\r\nPONG\r\n");
}

#[test]
fn pedantic_wildcard_publish_is_an_error_then_ok() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":true,\"pedantic\":true}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB a.* 1\r\nx\r\n");
    c.expect(b"-ERR 'Invalid Publish Subject'\r\n+OK\r\n");
    c.send(b"PUB a.> 1\r\nx\r\n");
    c.expect(b"-ERR 'Invalid Publish Subject'\r\n+OK\r\n");
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn non_pedantic_wildcard_publish_is_routed_literally() {
    // nats-server does not check publish subjects unless pedantic: `a.*` matches `a.*` and `a.>`
    // as if `*` were an ordinary token, and an empty token simply matches nothing.
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB a.b 1\r\nSUB a.* 2\r\n");
    c.send(b"PUB a.* 1\r\nx\r\nPUB a..b 1\r\ny\r\n");
    let got: BTreeSet<_> = c.msgs_until_pong().into_iter().map(|m| m.sid).collect();
    assert_eq!(got, BTreeSet::from(["2".to_string()]));
}

#[test]
fn pub_sub_is_byte_exact() {
    let server = Server::start();
    let mut sub = server.quiet_client();
    let mut publisher = server.quiet_client();
    sub.send(b"SUB foo.bar 42\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    publisher.send(b"PUB foo.bar 5\r\nhello\r\nPUB foo.bar 0\r\n\r\nPUB foo.bar 4\r\n\r\n\r\n\r\n");
    publisher.send(b"PUB foo.bar.baz 1\r\nx\r\nPUB foo 1\r\nx\r\nPING\r\n");
    publisher.expect(b"PONG\r\n");
    sub.expect(
        b"MSG foo.bar 42 5\r\nhello\r\nMSG foo.bar 42 0\r\n\r\nMSG foo.bar 42 4\r\n\r\n\r\n\r\n",
    );
    sub.send(b"PING\r\n");
    sub.expect(b"PONG\r\n");
}

#[test]
fn binary_payload_passes_through_unchanged() {
    let server = Server::start();
    let mut c = server.quiet_client();
    let payload: Vec<u8> = (0..=255u8).collect();
    c.send(b"SUB bin 1\r\n");
    let mut frame = b"PUB bin 256\r\n".to_vec();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    c.send(&frame);
    let mut expected = b"MSG bin 1 256\r\n".to_vec();
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(b"\r\nPONG\r\n");
    c.expect(&expected);
}

#[test]
fn reply_subject_is_carried_in_msg() {
    let server = Server::start();
    let mut sub = server.quiet_client();
    let mut publisher = server.quiet_client();
    sub.send(b"SUB svc.echo 7\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    publisher.send(b"SUB _INBOX.abc 1\r\nPUB svc.echo _INBOX.abc 4\r\nping\r\nPING\r\n");
    publisher.expect(b"PONG\r\n");
    sub.expect(b"MSG svc.echo 7 _INBOX.abc 4\r\nping\r\n");
    sub.send(b"PUB _INBOX.abc 4\r\npong\r\n");
    publisher.expect(b"MSG _INBOX.abc 1 4\r\npong\r\n");
}

#[test]
fn wildcard_subscriptions() {
    let server = Server::start();
    let mut sub = server.quiet_client();
    let mut publisher = server.quiet_client();
    sub.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB > 3\r\nSUB *.bar 4\r\nSUB *.*.baz 5\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    for subject in ["foo.bar", "foo.bar.baz", "foo", "x.bar", "foo.x.baz.q"] {
        publisher.send(format!("PUB {subject} 2\r\nhi\r\n").as_bytes());
    }
    publisher.send(b"PING\r\n");
    publisher.expect(b"PONG\r\n");

    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in sub.msgs_until_pong() {
        assert_eq!(m.payload, b"hi");
        assert_eq!(m.reply, None);
        assert!(
            got.entry(m.subject.clone()).or_default().insert(m.sid),
            "duplicate delivery of {}",
            m.subject
        );
    }
    let set = |sids: &[&str]| sids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let expected = BTreeMap::from([
        ("foo.bar".to_string(), set(&["1", "2", "3", "4"])),
        ("foo.bar.baz".to_string(), set(&["2", "3", "5"])),
        ("foo".to_string(), set(&["3"])),
        ("x.bar".to_string(), set(&["3", "4"])),
        ("foo.x.baz.q".to_string(), set(&["2", "3"])),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn each_subscription_of_a_connection_gets_its_own_copy() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB foo 1\r\nSUB foo 2\r\nPUB foo 1\r\nx\r\n");
    let mut sids: Vec<String> = c.msgs_until_pong().into_iter().map(|m| m.sid).collect();
    sids.sort();
    assert_eq!(sids, ["1", "2"]);
}

#[test]
fn queue_group_delivers_each_message_to_exactly_one_member() {
    const N: usize = 100;
    let server = Server::start();
    let mut members: Vec<Client> = (0..3).map(|_| server.quiet_client()).collect();
    for (i, m) in members.iter_mut().enumerate() {
        m.send(format!("SUB jobs.* workers {}\r\nPING\r\n", i + 1).as_bytes());
        m.expect(b"PONG\r\n");
    }
    let mut plain = server.quiet_client();
    plain.send(b"SUB jobs.* 9\r\nPING\r\n");
    plain.expect(b"PONG\r\n");

    let mut publisher = server.quiet_client();
    let mut batch = Vec::new();
    for i in 0..N {
        let body = i.to_string();
        batch.extend_from_slice(format!("PUB jobs.{i} {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    batch.extend_from_slice(b"PING\r\n");
    publisher.send(&batch);
    publisher.expect(b"PONG\r\n");

    let mut seen = BTreeSet::new();
    for (i, m) in members.iter_mut().enumerate() {
        let got = m.msgs_until_pong();
        assert!(
            !got.is_empty(),
            "member {i} got none of {N} messages: not spread"
        );
        for msg in got {
            assert_eq!(msg.sid, (i + 1).to_string());
            assert_eq!(
                msg.subject,
                format!("jobs.{}", String::from_utf8_lossy(&msg.payload))
            );
            assert!(seen.insert(msg.payload), "a message reached two members");
        }
    }
    assert_eq!(seen.len(), N, "every message reaches one member");
    let all = plain.msgs_until_pong();
    assert_eq!(all.len(), N, "a plain subscriber still gets every message");
    for (i, m) in all.iter().enumerate() {
        assert_eq!(
            *m,
            Msg::new(&format!("jobs.{i}"), "9", i.to_string().as_bytes())
        );
    }
}

#[test]
fn queue_members_on_one_connection_share_the_work() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB q g 1\r\nSUB q g 2\r\nSUB q other 3\r\n");
    let mut batch = Vec::new();
    for _ in 0..20 {
        batch.extend_from_slice(b"PUB q 1\r\nx\r\n");
    }
    c.send(&batch);
    let got = c.msgs_until_pong();
    let count = |sid: &str| got.iter().filter(|m| m.sid == sid).count();
    assert_eq!(count("1") + count("2"), 20);
    assert_eq!(count("3"), 20);
    assert_eq!(got.len(), 40);
}

#[test]
fn echo_false_suppresses_own_messages() {
    let server = Server::start();
    let mut c = server.client();
    c.send(
        b"CONNECT {\"verbose\":false,\"echo\":false}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n",
    );
    c.expect(b"PONG\r\n");
    let mut other = server.quiet_client();
    other.send(b"PUB foo 5\r\nother\r\nPING\r\n");
    other.expect(b"PONG\r\n");
    c.expect(b"MSG foo 1 5\r\nother\r\n");
}

#[test]
fn many_ops_pipelined_in_one_write() {
    let server = Server::start();
    let mut c = server.client();
    c.send(
        b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b 2\r\nPUB a 1\r\nx\r\nPUB b 2\r\nyy\r\n\
          UNSUB 1\r\nPUB a 1\r\nz\r\nPUB b r 0\r\n\r\nPING\r\nPING\r\n",
    );
    c.expect(b"MSG a 1 1\r\nx\r\nMSG b 2 2\r\nyy\r\nMSG b 2 r 0\r\n\r\nPONG\r\nPONG\r\n");
}

#[test]
fn one_megabyte_payload() {
    let server = Server::start();
    let mut c = server.quiet_client();
    let size = 1024 * 1024;
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    c.send(b"SUB big 1\r\n");
    let mut frame = format!("PUB big {size}\r\n").into_bytes();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    c.send(&frame);
    let mut expected = format!("MSG big 1 {size}\r\n").into_bytes();
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(b"\r\nPONG\r\n");
    c.expect(&expected);
}

#[test]
fn ops_split_across_writes_at_every_byte() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB foo.bar 1\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    let input: &[u8] = b"PUB foo.bar reply 5\r\nhello\r\nPING\r\n";
    for cut in 1..input.len() {
        c.send(&input[..cut]);
        std::thread::sleep(Duration::from_millis(2));
        c.send(&input[cut..]);
        c.expect(b"MSG foo.bar 1 reply 5\r\nhello\r\nPONG\r\n");
    }
}

#[test]
fn ops_dribbled_one_byte_per_write() {
    let server = Server::start();
    let mut c = server.client();
    let input: &[u8] = b"CONNECT {\"verbose\":false}\r\nSUB x 1\r\nPUB x 3\r\nabc\r\nPING\r\n";
    for b in input {
        c.send(std::slice::from_ref(b));
    }
    c.expect(b"MSG x 1 3\r\nabc\r\nPONG\r\n");
}

#[test]
fn auto_unsubscribe_after_max_messages() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB a 1\r\nUNSUB 1 2\r\nPUB a 1\r\nx\r\nPUB a 1\r\ny\r\nPUB a 1\r\nz\r\nPING\r\n");
    c.expect(b"MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\nPONG\r\n");
    // The subscription is gone: unsubscribing again, or an unknown sid, is silently fine.
    c.send(b"UNSUB 1\r\nUNSUB 77\r\nPUB a 1\r\nw\r\nPING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn unsub_stops_delivery() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB a 1\r\nPUB a 1\r\nx\r\nUNSUB 1\r\nPUB a 1\r\ny\r\nPING\r\n");
    c.expect(b"MSG a 1 1\r\nx\r\nPONG\r\n");
}

#[test]
fn hpub_delivers_hmsg_byte_exact() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB a 1\r\n");
    c.send(b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    c.expect(b"HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    c.send(b"HPUB a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    c.expect(b"HMSG a 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    c.send(b"HPUB a 24 24\r\nNATS/1.0\r\nK: v\r\nL: w\r\n\r\n\r\nPING\r\n");
    c.expect(b"HMSG a 1 24 24\r\nNATS/1.0\r\nK: v\r\nL: w\r\n\r\n\r\nPONG\r\n");
}

#[test]
fn hmsg_reaches_a_subscriber_without_headers_as_plain_msg() {
    let server = Server::start();
    let mut plain = server.quiet_client();
    plain.send(b"SUB a 1\r\nPING\r\n");
    plain.expect(b"PONG\r\n");
    let mut h = server.client();
    h.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n");
    h.send(b"HPUB a 18 20\r\nNATS/1.0\r\nX: y\r\n\r\nhi\r\nPING\r\n");
    h.expect(b"PONG\r\n");
    plain.expect(b"MSG a 1 2\r\nhi\r\n");
}

#[test]
fn hpub_without_headers_support_closes() {
    for connect in [
        &b"CONNECT {\"verbose\":false,\"headers\":false}\r\n"[..],
        b"CONNECT {\"verbose\":false}\r\n",
    ] {
        let server = Server::start();
        let mut c = server.client();
        c.send(connect);
        c.send(b"SUB a 1\r\nHPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        c.expect_closed();
    }
}

#[test]
fn no_responders_status_for_request_without_subscribers() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\n");
    c.send(b"SUB _INBOX.x.* 9\r\nPUB nobody _INBOX.x.1 0\r\n\r\n");
    c.expect(b"HMSG _INBOX.x.1 9 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n");
    c.send(b"HPUB nobody _INBOX.x.2 12 12\r\nNATS/1.0\r\n\r\n\r\n");
    c.expect(b"HMSG _INBOX.x.2 9 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n");
    // A publish without a reply subject gets no status.
    c.send(b"PUB nobody 0\r\n\r\nPING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn no_responders_requires_headers() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"no_responders\":true}\r\n");
    c.expect(b"-ERR 'no responders requires headers support'\r\n");
    c.expect_closed();
}

#[test]
fn misbehaving_client_does_not_affect_others() {
    let server = Server::start();
    let mut sub = server.quiet_client();
    sub.send(b"SUB news 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut publisher = server.quiet_client();

    let mut bad = server.quiet_client();
    bad.send(b"SUB news 2\r\nPUB news 3\r\nab");
    bad.send(b"\x00\xff garbage\r\n");
    bad.expect(UNKNOWN_OP);
    bad.expect_closed();

    let mut half = server.client();
    half.send(b"PUB news 100\r\nonly part of it");
    half.shutdown_write();

    publisher.send(b"PUB news 2\r\nok\r\nPING\r\n");
    publisher.expect(b"PONG\r\n");
    sub.expect(b"MSG news 1 2\r\nok\r\n");
    sub.send(b"PING\r\n");
    sub.expect(b"PONG\r\n");
}

#[test]
fn verbose_acknowledges_every_operation() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":true}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"SUB a 1\r\nSUB a q 2\r\nUNSUB 1\r\nUNSUB 5\r\nPUB x 0\r\n\r\nPONG\r\nPING\r\n");
    c.expect(b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\nPONG\r\n");
}

#[test]
fn hpub_header_size_larger_than_total_closes() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB a 20 10\r\n");
    c.expect_closed();
}

#[test]
fn duplicate_sid_keeps_the_first_subscription() {
    // nats-server ignores a SUB that reuses a live sid on the same connection.
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB a 1\r\nSUB b 1\r\nPUB b 1\r\nx\r\nPUB a 1\r\ny\r\nPING\r\n");
    c.expect(b"MSG a 1 1\r\ny\r\nPONG\r\n");
}

/// One server, many random ways of cutting the same pipelined input into writes.
#[test]
fn random_write_boundaries_do_not_change_the_transcript() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n");
    let c = std::cell::RefCell::new(c);
    let input: &[u8] = b"SUB s.* 1\r\nPUB s.a r 3\r\nabc\r\nHPUB s.b 17 19\r\n\
        NATS/1.0\r\nA:b\r\n\r\nhi\r\nsub s.c q 2\r\npub s.c 0\r\n\r\nUNSUB 1\r\n\
        UNSUB 2\r\nPUB s.a 1\r\nz\r\n";
    let mut want = vec![
        Msg {
            reply: Some("r".into()),
            ..Msg::new("s.a", "1", b"abc")
        },
        Msg {
            headers: Some(b"NATS/1.0\r\nA:b\r\n\r\n".to_vec()),
            ..Msg::new("s.b", "1", b"hi")
        },
        Msg::new("s.c", "1", b""),
        Msg::new("s.c", "2", b""),
    ];
    want.sort_by(|a, b| (&a.subject, &a.sid).cmp(&(&b.subject, &b.sid)));
    let cuts = proptest::collection::vec(0..input.len(), 1..8);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&cuts, |mut cuts| {
            let mut c = c.borrow_mut();
            cuts.sort();
            let mut start = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                if cut > start {
                    c.send(&input[start..cut]);
                    std::thread::sleep(Duration::from_millis(1));
                    start = cut;
                }
            }
            // Delivery order among a connection's own subscriptions is not fixed: sort frames.
            let mut got = c.msgs_until_pong();
            got.sort_by(|a, b| (&a.subject, &a.sid).cmp(&(&b.subject, &b.sid)));
            prop_assert_eq!(&got, &want);
            Ok(())
        })
        .unwrap();
}

#[test]
fn empty_token_publish_reaches_no_one_not_even_full_wildcards() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB a.> 1\r\nSUB > 2\r\n");
    c.send(b"PUB a..b 1\r\nx\r\nPUB .a 1\r\nx\r\nPUB a. 1\r\nx\r\nPUB a.b 1\r\ny\r\n");
    let got: Vec<_> = c.msgs_until_pong().into_iter().map(|m| m.payload).collect();
    assert_eq!(got, vec![b"y".to_vec(), b"y".to_vec()]);
}

#[test]
fn auto_unsubscribe_counts_messages_already_delivered() {
    let server = Server::start();
    let mut c = server.quiet_client();
    c.send(b"SUB foo 1\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\n");
    assert_eq!(c.msgs_until_pong().len(), 3);
    // Three delivered already, so a limit of 2 ends the subscription at once.
    c.send(b"UNSUB 1 2\r\nPUB foo 1\r\nd\r\n");
    assert!(c.msgs_until_pong().is_empty());
    c.send(b"SUB bar 2\r\nPUB bar 1\r\na\r\nUNSUB 2 2\r\nPUB bar 1\r\nb\r\nPUB bar 1\r\nc\r\n");
    let got: Vec<_> = c.msgs_until_pong().into_iter().map(|m| m.payload).collect();
    assert_eq!(
        got,
        vec![b"a".to_vec(), b"b".to_vec()],
        "one more after the UNSUB"
    );
}

#[test]
fn no_responders_counts_deliveries_not_matches() {
    // The requester's own subscription matches, but echo is off: nobody answers.
    let server = Server::start();
    let mut c = server.client();
    c.send(
        b"CONNECT {\"verbose\":false,\"echo\":false,\"headers\":true,\"no_responders\":true}\r\n",
    );
    c.send(b"SUB svc 1\r\nSUB _INBOX.r.* 2\r\nPUB svc _INBOX.r.1 0\r\n\r\n");
    c.expect(b"HMSG _INBOX.r.1 2 35 35\r\nNATS/1.0 503\r\nNats-Subject: svc\r\n\r\n\r\n");
}

#[test]
fn a_closing_queue_member_gets_no_more_of_the_group_s_messages() {
    // Member B stops reading (its socket fills with 32 MB of another subject), then breaks the
    // protocol. While the server still tries to flush B, the group's messages must all go to A.
    const N: usize = 200;
    // Without the fast-producer stall the fill goes out at full speed (the stall would pace
    // it to B, which is not reading; that is what it is for, and not what is tested here).
    let server = Server::with_config("no_fast_producer_stall: true\n");
    let mut a = server.quiet_client();
    a.send(b"SUB work q 1\r\nPING\r\n");
    a.expect(b"PONG\r\n");
    let mut b = server.quiet_client();
    b.send(b"SUB work q 1\r\nSUB fill 2\r\nPING\r\n");
    b.expect(b"PONG\r\n");
    let mut publisher = server.quiet_client();
    let chunk = vec![b'x'; 64 * 1024];
    let mut fill = Vec::new();
    for _ in 0..512 {
        fill.extend_from_slice(format!("PUB fill {}\r\n", chunk.len()).as_bytes());
        fill.extend_from_slice(&chunk);
        fill.extend_from_slice(b"\r\n");
    }
    publisher.send(&fill);
    publisher.ping_pong_within(Duration::from_secs(10));
    b.send(b"BOGUS\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let mut work = Vec::new();
    for i in 0..N {
        work.extend_from_slice(format!("PUB work {}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    publisher.send(&work);
    publisher.ping_pong_within(Duration::from_secs(10));
    assert_eq!(
        a.msgs_until_pong().len(),
        N,
        "every message reached the live member"
    );
}
