//! The operations a client sends, as the parser hands them to the connection.

use serde::Deserialize;

/// One client operation, borrowing from the connection's read buffer: nothing is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `CONNECT {json}`: the JSON text, parsed by the connection.
    Connect(&'a [u8]),
    /// `PUB` or `HPUB`: a message to route.
    Pub {
        /// Subject published to.
        subject: &'a [u8],
        /// Reply subject, if any.
        reply: Option<&'a [u8]>,
        /// Length of the header block at the front of `payload`; 0 for `PUB`.
        header_len: usize,
        /// Headers (for `HPUB`) followed by the body.
        payload: &'a [u8],
        /// Whether this was `HPUB`.
        headers: bool,
    },
    /// `SUB subject [queue] sid`.
    Sub {
        /// Subject or wildcard pattern.
        subject: &'a [u8],
        /// Queue group name.
        queue: Option<&'a [u8]>,
        /// The client's subscription id.
        sid: &'a [u8],
    },
    /// `UNSUB sid [max]`.
    Unsub {
        /// The client's subscription id.
        sid: &'a [u8],
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
    Err(&'a [u8]),
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
