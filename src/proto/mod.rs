//! The NATS client wire protocol, with no sockets and no server state: [`Parser`] turns bytes
//! into [`Op`]s, [`encode`] writes the frames the server sends.

pub mod encode;
mod ops;
mod parser;

pub use ops::{ConnectOptions, Op};
pub use parser::{ParseError, Parser};
