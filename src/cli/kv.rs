//! `natter kv add|put|get|del|watch`: key-value buckets from the command line, spelled as the
//! `nats` CLI's `kv` commands. A bucket is the stream `KV_<bucket>` on `$KV.<bucket>.>`, laid
//! out as the NATS clients lay it out, so buckets made here and by any client are the same.

use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::json;

use super::conn::{self, ConnectOptions, Msg};
use super::stream::Api;
use super::{parse_duration, print};

/// `natter kv ...`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Create a bucket
    #[command(alias = "create", alias = "new")]
    Add(AddArgs),
    /// Set a key's value; prints the new revision
    Put(PutArgs),
    /// Print a key's value
    Get(GetArgs),
    /// Delete a key (its history stays until purged)
    #[command(alias = "delete", alias = "rm")]
    Del(KeyArgs),
    /// Print every change to a bucket (or one key), starting with the current values
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Bucket name
    bucket: String,
    /// Values kept per key
    #[arg(long, default_value_t = 1)]
    history: i64,
    /// Values expire after this long (0: never)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    ttl: Duration,
    /// Storage: file or memory
    #[arg(long, default_value = "file", value_parser = ["file", "memory"])]
    storage: String,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Bucket name
    bucket: String,
    /// Key
    key: String,
    /// Value
    value: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Bucket name
    bucket: String,
    /// Key
    key: String,
    /// Print only the value
    #[arg(short = 'r', long)]
    raw: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Bucket name
    bucket: String,
    /// Key
    key: String,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Bucket name
    bucket: String,
    /// Only this key (wildcards allowed)
    key: Option<String>,
    /// Exit after this many entries (0: never)
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// Runs a `natter kv` subcommand.
pub fn run(opts: &ConnectOptions, command: &KvCommand) -> Result<(), String> {
    let mut api = Api::connect(opts)?;
    match command {
        KvCommand::Add(args) => {
            let name = &args.bucket;
            api.call(
                &format!("STREAM.CREATE.KV_{name}"),
                &json!({
                    "name": format!("KV_{name}"),
                    "subjects": [format!("$KV.{name}.>")],
                    "max_msgs_per_subject": args.history,
                    "max_age": args.ttl.as_nanos() as u64,
                    "storage": args.storage,
                    "discard": "new",
                    "allow_rollup_hdrs": true,
                    "deny_delete": true,
                    "allow_direct": true,
                    "num_replicas": 1,
                }),
            )?;
            print(format!("Created bucket {name}\n").as_bytes())
        }
        KvCommand::Put(args) => {
            let ack = api.request(
                &format!("$KV.{}.{}", args.bucket, args.key),
                &[],
                args.value.as_bytes(),
            )?;
            print(format!("{}\n", ack["seq"]).as_bytes())
        }
        KvCommand::Get(args) => get(&mut api, args),
        KvCommand::Del(args) => {
            let headers = [("KV-Operation".to_string(), "DEL".to_string())];
            api.request(&format!("$KV.{}.{}", args.bucket, args.key), &headers, b"")?;
            print(format!("Deleted {} > {}\n", args.bucket, args.key).as_bytes())
        }
        KvCommand::Watch(args) => watch(&mut api, args),
    }
}

fn get(api: &mut Api, args: &GetArgs) -> Result<(), String> {
    let subject = format!("$KV.{}.{}", args.bucket, args.key);
    let found = api.call(
        &format!("STREAM.MSG.GET.KV_{}", args.bucket),
        &json!({"last_by_subj": subject}),
    );
    let missing = || format!("{} > {}: key not found", args.bucket, args.key);
    let msg = match found {
        Ok(v) => v["message"].clone(),
        Err(e) if e.contains("err_code 10037") => return Err(missing()),
        Err(e) => return Err(e),
    };
    let b64 = |k: &str| {
        msg[k]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default()
    };
    let headers = conn::Headers::parse(&b64("hdrs"));
    if operation(&headers) != "PUT" {
        return Err(missing());
    }
    let value = b64("data");
    let mut out = Vec::new();
    if !args.raw {
        out.extend_from_slice(
            format!(
                "{} > {} revision: {} created @ {}\n\n",
                args.bucket,
                args.key,
                msg["seq"],
                msg["time"].as_str().unwrap_or_default()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(&value);
    out.push(b'\n');
    print(&out)
}

/// `PUT`, `DEL` or `PURGE`, from the `KV-Operation` header.
fn operation(headers: &conn::Headers) -> String {
    headers
        .entries
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("KV-Operation"))
        .map_or_else(|| "PUT".to_string(), |(_, v)| v.to_ascii_uppercase())
}

/// An ephemeral push consumer delivering the latest value of each key, then every change.
fn watch(api: &mut Api, args: &WatchArgs) -> Result<(), String> {
    let inbox = conn::new_inbox();
    api.conn.subscribe(&inbox, None, 2)?;
    let filter = format!("$KV.{}.{}", args.bucket, args.key.as_deref().unwrap_or(">"));
    api.call(
        &format!("CONSUMER.CREATE.KV_{}", args.bucket),
        &json!({
            "stream_name": format!("KV_{}", args.bucket),
            "config": {
                "deliver_subject": inbox,
                "deliver_policy": "last_per_subject",
                "ack_policy": "none",
                "filter_subject": filter,
                "replay_policy": "instant",
                "inactive_threshold": 5_000_000_000u64,
            },
        }),
    )?;
    eprintln!("Watching {filter}");
    let prefix = format!("$KV.{}.", args.bucket);
    let mut n = 0;
    while args.count == 0 || n < args.count {
        let Some(msg) = api.conn.next_msg(None)? else {
            continue;
        };
        if msg.sid != 2 || is_status(&msg) {
            continue;
        }
        n += 1;
        let key = msg.subject.strip_prefix(&prefix).unwrap_or(&msg.subject);
        let op = msg
            .headers
            .as_ref()
            .map_or_else(|| "PUT".to_string(), operation);
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let line = if op == "PUT" {
            format!(
                "[{now}] {op} {} > {key}: {}\n",
                args.bucket,
                String::from_utf8_lossy(&msg.payload)
            )
        } else {
            format!("[{now}] {op} {} > {key}\n", args.bucket)
        };
        print(line.as_bytes())?;
    }
    let _ = Instant::now();
    Ok(())
}

/// Heartbeats and flow-control requests carry a status and no body.
fn is_status(msg: &Msg) -> bool {
    msg.payload.is_empty() && msg.headers.as_ref().is_some_and(|h| h.status.is_some())
}
