//! The operations a client sends, as the parser hands them to the connection.

use bytes::Bytes;
use serde::Deserialize;

/// One client operation. Byte fields are zero-copy slices of the connection's read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `CONNECT {json}`: the JSON text, parsed by the connection.
    Connect(Bytes),
    /// `PUB` or `HPUB`: a message to route.
    Pub {
        /// Subject published to.
        subject: Bytes,
        /// Reply subject, if any.
        reply: Option<Bytes>,
        /// Length of the header block at the front of `payload`; 0 for `PUB`.
        header_len: usize,
        /// Headers (for `HPUB`) followed by the body.
        payload: Bytes,
        /// Whether this was `HPUB`.
        headers: bool,
    },
    /// `SUB subject [queue] sid`.
    Sub {
        /// Subject or wildcard pattern.
        subject: Bytes,
        /// Queue group name.
        queue: Option<Bytes>,
        /// The client's subscription id.
        sid: Bytes,
    },
    /// `UNSUB sid [max]`.
    Unsub {
        /// The client's subscription id.
        sid: Bytes,
        /// Unsubscribe after this many messages in all, instead of now.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO` from a client: accepted and ignored, as nats-server does.
    Info,
    /// `+OK` from a client: ignored.
    Ok,
    /// `-ERR text` from a client: logged, then the connection closes.
    Err(Bytes),
}

/// The fields of a client's CONNECT JSON. Absent fields keep their earlier value, which is why
/// every field is an `Option`: nats-server merges CONNECT into the connection's defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// Acknowledge every operation with `+OK`.
    pub verbose: Option<bool>,
    /// Strict checks, e.g. publish subjects are validated.
    pub pedantic: Option<bool>,
    /// Whether the client receives its own publishes.
    pub echo: Option<bool>,
    /// Whether the client speaks `HPUB`/`HMSG`.
    pub headers: Option<bool>,
    /// Whether a request with no subscriber gets a `503` status message.
    pub no_responders: Option<bool>,
    /// Client-supplied connection name.
    pub name: Option<String>,
    /// Client library language.
    pub lang: Option<String>,
    /// Client library version.
    pub version: Option<String>,
    /// Protocol level: 1 means the client understands async INFO.
    pub protocol: Option<i64>,
    /// Whether the client requires TLS.
    pub tls_required: Option<bool>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub pass: Option<String>,
    /// Token.
    pub auth_token: Option<String>,
    /// User JWT.
    pub jwt: Option<String>,
    /// Public nkey.
    pub nkey: Option<String>,
    /// Signature of the server's nonce.
    pub sig: Option<String>,
}
