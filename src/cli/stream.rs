//! `natter stream ls|info|add|rm|view`: the JetStream stream API from the command line, spelled
//! as the `nats` CLI's `stream` commands (their common options). Each is a request to
//! `$JS.API.STREAM.*` on a fresh inbox, so it works against any JetStream server.

use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::conn::{self, Conn, ConnectOptions, Headers};
use super::{parse_duration, print};

/// Views at least this long show a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 1000;

/// How long a JetStream API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// `natter stream ...`.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// List streams with their message counts and sizes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show a stream's configuration and state
    Info(InfoArgs),
    /// Create a stream
    #[command(alias = "create", alias = "new")]
    Add(AddArgs),
    /// Delete a stream and its messages
    #[command(alias = "delete", alias = "del")]
    Rm(RmArgs),
    /// Print a stream's messages, oldest first
    View(ViewArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only the names
    #[arg(short = 'n', long = "names")]
    names: bool,
    /// Print the API's JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Stream name
    stream: String,
    /// Print the API's JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Stream name
    stream: String,
    /// Subjects the stream stores (comma separated or repeated; wildcards allowed)
    #[arg(long, value_delimiter = ',', value_name = "SUBJECTS")]
    subjects: Vec<String>,
    /// Storage: file or memory
    #[arg(long, default_value = "file", value_parser = ["file", "memory"])]
    storage: String,
    /// Retention: limits, interest or work (workqueue)
    #[arg(long, default_value = "limits", value_parser = ["limits", "interest", "work", "workqueue"])]
    retention: String,
    /// Discard policy when a limit is reached: old or new
    #[arg(long, default_value = "old", value_parser = ["old", "new"])]
    discard: String,
    /// Most messages kept (-1 unlimited)
    #[arg(long = "max-msgs", default_value_t = -1, allow_negative_numbers = true)]
    max_msgs: i64,
    /// Most bytes kept (-1 unlimited)
    #[arg(long = "max-bytes", default_value_t = -1, allow_negative_numbers = true)]
    max_bytes: i64,
    /// Oldest message kept (e.g. 1h, 30m; 0 forever)
    #[arg(long = "max-age", value_parser = parse_duration, default_value = "0s")]
    max_age: Duration,
    /// Most messages kept per subject (-1 unlimited)
    #[arg(long = "max-msgs-per-subject", default_value_t = -1, allow_negative_numbers = true)]
    max_msgs_per_subject: i64,
    /// Largest message accepted (-1 unlimited)
    #[arg(long = "max-msg-size", default_value_t = -1, allow_negative_numbers = true)]
    max_msg_size: i64,
    /// Window for Nats-Msg-Id duplicate detection
    #[arg(long = "dupe-window", value_parser = parse_duration, default_value = "2m")]
    dupe_window: Duration,
    /// Replicas (1 without clustering)
    #[arg(long, default_value_t = 1)]
    replicas: i64,
    /// Serve DIRECT.GET (needed by KV)
    #[arg(long = "allow-direct")]
    allow_direct: bool,
    /// Honour Nats-Rollup headers
    #[arg(long = "allow-rollup")]
    allow_rollup: bool,
    /// Forbid deleting messages
    #[arg(long = "deny-delete")]
    deny_delete: bool,
    /// Forbid purging
    #[arg(long = "deny-purge")]
    deny_purge: bool,
    /// Accepted for the nats CLI's spelling (natter never prompts)
    #[arg(long, hide = true)]
    defaults: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stream name
    stream: String,
    /// Delete without asking (required: natter does not prompt)
    #[arg(short = 'f', long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Stream name
    stream: String,
    /// Print at most this many messages (0: all)
    #[arg(long = "count", short = 'n', default_value_t = 0)]
    count: u64,
    /// Start at this sequence
    #[arg(long = "id", alias = "seq", default_value_t = 1)]
    start: u64,
    /// Only messages on subjects matching this filter
    #[arg(long, default_value = ">")]
    subject: String,
    /// Print only the bodies
    #[arg(short = 'r', long)]
    raw: bool,
}

/// Runs a `natter stream` subcommand.
pub fn run(opts: &ConnectOptions, command: &StreamCommand) -> Result<(), String> {
    let mut api = Api::connect(opts)?;
    match command {
        StreamCommand::Ls(args) => ls(&mut api, args),
        StreamCommand::Info(args) => {
            let info = api.call(&format!("STREAM.INFO.{}", args.stream), &json!({}))?;
            if args.json {
                return print_json(&info);
            }
            print(describe(&info).as_bytes())
        }
        StreamCommand::Add(args) => add(&mut api, args),
        StreamCommand::Rm(args) => {
            if !args.force {
                return Err(format!(
                    "deleting stream {} removes all its messages: confirm with -f",
                    args.stream
                ));
            }
            api.call(&format!("STREAM.DELETE.{}", args.stream), &json!({}))?;
            print(format!("Deleted stream {}\n", args.stream).as_bytes())
        }
        StreamCommand::View(args) => view(&mut api, args),
    }
}

/// One connection making JetStream API requests (shared by the `consumer` and `kv` commands).
pub(super) struct Api {
    pub(super) conn: Conn,
    inbox: String,
}

impl Api {
    pub(super) fn connect(opts: &ConnectOptions) -> Result<Api, String> {
        let mut conn = Conn::connect(opts)?;
        let inbox = conn::new_inbox();
        conn.subscribe(&format!("{inbox}.*"), None, 1)?;
        Ok(Api { conn, inbox })
    }

    /// `$JS.API.<api>` with `body`; the reply's JSON, or its error's description.
    pub(super) fn call(&mut self, api: &str, body: &Value) -> Result<Value, String> {
        let subject = format!("$JS.API.{api}");
        self.request(&subject, &[], body.to_string().as_bytes())
    }

    /// A request on any subject (a publish to a stream, answered by its PubAck) whose reply is
    /// JetStream JSON: the JSON, or its error's description.
    pub(super) fn request(
        &mut self,
        subject: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Value, String> {
        let reply = format!("{}.{}", self.inbox, conn::new_inbox().replace('.', "_"));
        self.conn.publish(subject, Some(&reply), headers, body)?;
        let deadline = Instant::now() + API_TIMEOUT;
        let mut others = Vec::new();
        let answer = loop {
            let Some(msg) = self.conn.next_msg(Some(deadline))? else {
                break Err(format!(
                    "no JetStream reply on {subject} within {API_TIMEOUT:?}"
                ));
            };
            if msg.sid != 1 {
                // A command's own subscription: kept for it.
                others.push(msg);
                continue;
            }
            if msg.subject == reply {
                break Ok(msg);
            }
        };
        self.conn.requeue(others);
        let msg = answer?;
        if msg.payload.is_empty() && msg.headers.as_ref().is_some_and(Headers::is_no_responders) {
            return Err(if subject.starts_with("$JS.API.") {
                "JetStream is not enabled on this server (no responders)".into()
            } else {
                format!("no stream stores {subject} (no responders)")
            });
        }
        let value: Value = serde_json::from_slice(&msg.payload)
            .map_err(|e| format!("invalid JetStream reply: {e}"))?;
        if let Some(err) = value.get("error") {
            return Err(format!(
                "{} (code {}, err_code {})",
                err["description"].as_str().unwrap_or("error"),
                err["code"],
                err["err_code"]
            ));
        }
        Ok(value)
    }

    /// Every page of a paged list API (`STREAM.LIST`, `CONSUMER.LIST.<stream>`): the items
    /// under `key`.
    pub(super) fn list_all(&mut self, api: &str, key: &str) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        loop {
            let page = self.call(api, &json!({"offset": all.len()}))?;
            let got = page[key].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            if got.is_empty() {
                break;
            }
            all.extend(got);
            if all.len() >= total {
                break;
            }
        }
        Ok(all)
    }
}

fn ls(api: &mut Api, args: &LsArgs) -> Result<(), String> {
    let streams = api.list_all("STREAM.LIST", "streams")?;
    if args.json {
        return print_json(&Value::Array(streams));
    }
    let mut out = String::new();
    if args.names {
        for s in &streams {
            out.push_str(s["config"]["name"].as_str().unwrap_or_default());
            out.push('\n');
        }
        return print(out.as_bytes());
    }
    if streams.is_empty() {
        return print(b"No streams defined\n");
    }
    out.push_str(&format!(
        "{:<20} {:<30} {:>10} {:>12} {:>8}\n",
        "Name", "Subjects", "Messages", "Size", "Storage"
    ));
    for s in &streams {
        let subjects: Vec<&str> = s["config"]["subjects"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:<30} {:>10} {:>12} {:>8}\n",
            s["config"]["name"].as_str().unwrap_or_default(),
            subjects.join(", "),
            s["state"]["messages"].as_u64().unwrap_or(0),
            human_bytes(s["state"]["bytes"].as_u64().unwrap_or(0)),
            s["config"]["storage"].as_str().unwrap_or_default(),
        ));
    }
    print(out.as_bytes())
}

fn add(api: &mut Api, args: &AddArgs) -> Result<(), String> {
    let subjects = if args.subjects.is_empty() {
        vec![args.stream.clone()]
    } else {
        args.subjects.clone()
    };
    let retention = match args.retention.as_str() {
        "work" => "workqueue",
        other => other,
    };
    let config = json!({
        "name": args.stream,
        "subjects": subjects,
        "retention": retention,
        "storage": args.storage,
        "discard": args.discard,
        "max_msgs": args.max_msgs,
        "max_bytes": args.max_bytes,
        "max_age": args.max_age.as_nanos() as u64,
        "max_msgs_per_subject": args.max_msgs_per_subject,
        "max_msg_size": args.max_msg_size,
        "duplicate_window": args.dupe_window.as_nanos() as u64,
        "num_replicas": args.replicas,
        "allow_direct": args.allow_direct,
        "allow_rollup_hdrs": args.allow_rollup,
        "deny_delete": args.deny_delete,
        "deny_purge": args.deny_purge,
    });
    let _ = args.defaults;
    let info = api.call(&format!("STREAM.CREATE.{}", args.stream), &config)?;
    print(format!("Stream {} was created\n\n{}", args.stream, describe(&info)).as_bytes())
}

fn view(api: &mut Api, args: &ViewArgs) -> Result<(), String> {
    let info = api.call(&format!("STREAM.INFO.{}", args.stream), &json!({}))?;
    let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
    let mut next = args.start.max(1);
    let total = last.saturating_sub(next - 1);
    let total = if args.count > 0 {
        total.min(args.count)
    } else {
        total
    };
    // On a terminal, a bar on standard error for long views (the messages go to standard
    // output); hidden when standard error is not a terminal.
    let bar = if total >= PROGRESS_FROM {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} messages, {per_sec} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut shown = 0;
    while next <= last && (args.count == 0 || shown < args.count) {
        let reply = api.call(
            &format!("STREAM.MSG.GET.{}", args.stream),
            &json!({"seq": next, "next_by_subj": args.subject}),
        );
        let msg = match reply {
            Ok(v) => v["message"].clone(),
            // Nothing at or after `next` matches: done.
            Err(e) if e.contains("err_code 10037") => break,
            Err(e) => return Err(e),
        };
        let seq = msg["seq"].as_u64().unwrap_or(next);
        bar.suspend(|| print(&format_stored(&msg, args.raw)))?;
        shown += 1;
        bar.inc(1);
        next = seq + 1;
    }
    bar.finish_and_clear();
    if !args.raw {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "Shown {shown} message(s) of stream {} in {secs:.2}s ({:.0} msgs/s)",
            args.stream,
            shown as f64 / secs.max(1e-6)
        );
    }
    Ok(())
}

/// One stored message, as `nats stream view` shows it: a `[seq] Subject: ... Received: ...`
/// line, headers, a blank line, the body.
fn format_stored(msg: &Value, raw: bool) -> Vec<u8> {
    let b64 = |key: &str| {
        msg[key]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default()
    };
    let data = b64("data");
    let mut out = Vec::new();
    if !raw {
        out.extend_from_slice(
            format!(
                "[{}] Subject: {} Received: {}\n",
                msg["seq"],
                msg["subject"].as_str().unwrap_or_default(),
                msg["time"].as_str().unwrap_or_default()
            )
            .as_bytes(),
        );
        let headers = b64("hdrs");
        if !headers.is_empty() {
            for (k, v) in Headers::parse(&headers).entries {
                out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
            }
        }
        out.push(b'\n');
    }
    out.extend_from_slice(&data);
    if !data.ends_with(b"\n") {
        out.push(b'\n');
    }
    if !raw {
        out.push(b'\n');
    }
    out
}

/// The `stream info` text: configuration, then state.
fn describe(info: &Value) -> String {
    let c = &info["config"];
    let s = &info["state"];
    let limit = |v: &Value| match v.as_i64() {
        Some(n) if n < 0 => "unlimited".to_string(),
        Some(n) => n.to_string(),
        None => "-".to_string(),
    };
    let subjects: Vec<&str> = c["subjects"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let age = match c["max_age"].as_u64() {
        Some(0) | None => "unlimited".to_string(),
        Some(ns) => format!("{:?}", Duration::from_nanos(ns)),
    };
    let mut out = format!(
        "Information for Stream {} created {}\n\nConfiguration:\n\n",
        c["name"].as_str().unwrap_or_default(),
        info["created"].as_str().unwrap_or_default()
    );
    let rows = [
        ("Subjects", subjects.join(", ")),
        ("Replicas", c["num_replicas"].to_string()),
        (
            "Storage",
            c["storage"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "Retention",
            c["retention"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "Discard Policy",
            c["discard"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "Duplicate Window",
            format!(
                "{:?}",
                Duration::from_nanos(c["duplicate_window"].as_u64().unwrap_or(0))
            ),
        ),
        ("Maximum Messages", limit(&c["max_msgs"])),
        ("Maximum Per Subject", limit(&c["max_msgs_per_subject"])),
        ("Maximum Bytes", limit(&c["max_bytes"])),
        ("Maximum Age", age),
        ("Maximum Message Size", limit(&c["max_msg_size"])),
        ("Allow Direct", c["allow_direct"].to_string()),
        ("Allow Rollups", c["allow_rollup_hdrs"].to_string()),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:>22}: {v}\n"));
    }
    out.push_str("\nState:\n\n");
    let rows = [
        ("Messages", s["messages"].to_string()),
        ("Bytes", human_bytes(s["bytes"].as_u64().unwrap_or(0))),
        ("First Sequence", s["first_seq"].to_string()),
        ("Last Sequence", s["last_seq"].to_string()),
        (
            "Deleted Messages",
            s["num_deleted"].as_u64().unwrap_or(0).to_string(),
        ),
        ("Active Consumers", s["consumer_count"].to_string()),
        (
            "Number of Subjects",
            s["num_subjects"].as_u64().unwrap_or(0).to_string(),
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:>22}: {v}\n"));
    }
    out
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub(super) fn print_json(v: &Value) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    text.push('\n');
    print(text.as_bytes())
}
