//! System events, as nats-server publishes them into the system account: a client connected
//! (`$SYS.ACCOUNT.<account>.CONNECT`), disconnected (`$SYS.ACCOUNT.<account>.DISCONNECT`), or
//! failed to authenticate (`$SYS.SERVER.<server id>.CLIENT.AUTH.ERR`). Same subjects, types
//! and JSON fields, so tools that watch nats-server's audit trail watch natter's.
//!
//! Nothing is built unless someone in the system account subscribes to the subject.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::account::Account;
use crate::monitor::format::rfc3339;
use crate::outbound::{Client, CloseReason};
use crate::server::{ServerState, COMPAT_VERSION};

/// Where events go: the system account, when one is configured.
#[derive(Debug, Default)]
pub struct Events {
    system: Option<Arc<Account>>,
    seq: AtomicU64,
}

#[derive(Serialize)]
struct ServerInfo<'a> {
    name: &'a str,
    host: String,
    id: &'a str,
    ver: &'a str,
    jetstream: bool,
    flags: u64,
    seq: u64,
    time: String,
}

#[derive(Serialize)]
struct ClientInfo<'a> {
    start: String,
    host: String,
    id: u64,
    acc: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ver: Option<&'a str>,
    /// Nanoseconds, as Go encodes a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    kind: &'static str,
    client_type: &'static str,
}

#[derive(Serialize)]
struct Counts {
    msgs: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerInfo<'a>,
    client: ClientInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

const CONNECT: &str = "io.nats.server.advisory.v1.client_connect";
const DISCONNECT: &str = "io.nats.server.advisory.v1.client_disconnect";

impl Events {
    /// Events into `system`, if set.
    pub fn new(system: Option<Arc<Account>>) -> Events {
        Events {
            system,
            seq: AtomicU64::new(0),
        }
    }

    /// A client authenticated into `account`.
    pub fn connected(&self, server: &ServerState, client: &Client, account: &Account) {
        let subject = format!("$SYS.ACCOUNT.{}.CONNECT", account.name);
        self.publish(server, &subject, || {
            self.event(server, CONNECT, client, &account.name, client.user(), None)
        });
    }

    /// A client that had connected is gone.
    pub fn disconnected(
        &self,
        server: &ServerState,
        client: &Client,
        account: &Account,
        reason: CloseReason,
    ) {
        let subject = format!("$SYS.ACCOUNT.{}.DISCONNECT", account.name);
        self.publish(server, &subject, || {
            self.event(
                server,
                DISCONNECT,
                client,
                &account.name,
                client.user(),
                Some(reason.as_str()),
            )
        });
    }

    /// A client failed to authenticate (the audit trail of refused logins).
    pub fn auth_error(&self, server: &ServerState, client: &Client, user: Option<&str>) {
        let subject = format!("$SYS.SERVER.{}.CLIENT.AUTH.ERR", server.id);
        self.publish(server, &subject, || {
            self.event(
                server,
                DISCONNECT,
                client,
                crate::config::security::GLOBAL_ACCOUNT,
                user,
                Some(CloseReason::AuthenticationViolation.as_str()),
            )
        });
    }

    fn publish(&self, server: &ServerState, subject: &str, payload: impl FnOnce() -> Vec<u8>) {
        let Some(system) = &self.system else {
            return;
        };
        crate::client::publish_internal(server, system, subject.as_bytes(), payload);
    }

    fn event<'a>(
        &self,
        server: &'a ServerState,
        kind: &'static str,
        client: &'a Client,
        account: &'a str,
        user: Option<&'a str>,
        // Set for disconnects: why, with the stop time and traffic counts.
        reason: Option<&'a str>,
    ) -> Vec<u8> {
        let snapshot = client.snapshot(false);
        let now = rfc3339(SystemTime::now());
        let event = Event {
            kind,
            id: crate::account::random_token(22),
            timestamp: now.clone(),
            server: self.server_info(server, now.clone()),
            client: ClientInfo {
                start: rfc3339(snapshot.start),
                host: snapshot.ip.to_string(),
                id: snapshot.cid,
                acc: account,
                user,
                name: Some(snapshot.name.as_str()).filter(|s| !s.is_empty()),
                lang: Some(snapshot.lang.as_str()).filter(|s| !s.is_empty()),
                ver: Some(snapshot.version.as_str()).filter(|s| !s.is_empty()),
                rtt: snapshot
                    .rtt
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                stop: reason.map(|_| now.clone()),
                kind: "Client",
                client_type: "nats",
            },
            // From the client's side, as nats-server counts: what it sent us, what we sent it.
            sent: reason.map(|_| Counts {
                msgs: snapshot.in_msgs,
                bytes: snapshot.in_bytes,
            }),
            received: reason.map(|_| Counts {
                msgs: snapshot.out_msgs,
                bytes: snapshot.out_bytes,
            }),
            reason,
        };
        // Owned strings in the snapshot die here, so serialize now.
        serde_json::to_vec(&event).expect("event serializes")
    }

    fn server_info<'a>(&self, server: &'a ServerState, time: String) -> ServerInfo<'a> {
        ServerInfo {
            name: &server.name,
            host: server.config().host.clone(),
            id: &server.id,
            ver: COMPAT_VERSION,
            jetstream: server.jetstream.get().is_some(),
            flags: 0,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time,
        }
    }
}
