//! natter: a NATS-compatible subject pub/sub server.
//!
//! The core speaks the NATS client protocol: [`proto`] parses and encodes it, [`sublist`]
//! routes subjects to [`subscription`]s, [`client`] runs one connection and [`outbound`] is
//! the part of it other connections write to, [`server`] owns the listener and shared state, and
//! [`monitor`] answers nats-server's HTTP monitoring endpoints.
#![forbid(unsafe_code)]

pub mod account;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod events;
pub mod jetstream;
pub mod log;
pub mod monitor;
pub mod outbound;
pub mod proto;
pub mod reload;
pub mod server;
pub mod subject;
pub mod sublist;
pub mod subscription;
pub mod tls;
