//! `natter consumer ls|info|add|next|rm`: JetStream consumers from the command line, spelled
//! as the `nats` CLI's `consumer` commands (their common options).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::conn::{self, ConnectOptions};
use super::stream::{print_json, Api};
use super::{format_msg, parse_duration, print};

/// `natter consumer ...`.
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// List a stream's consumers with their lag and pending acks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show a consumer's configuration and state
    Info(InfoArgs),
    /// Create a durable consumer (pull unless --target is given)
    #[command(alias = "create", alias = "new")]
    Add(AddArgs),
    /// Fetch messages from a pull consumer, print them and acknowledge them
    Next(NextArgs),
    /// Delete a consumer
    #[command(alias = "delete", alias = "del")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Stream name
    stream: String,
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
    /// Consumer name
    consumer: String,
    /// Print the API's JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Stream name
    stream: String,
    /// Consumer (durable) name
    consumer: String,
    /// Only messages on subjects matching this filter
    #[arg(long, value_name = "SUBJECT")]
    filter: Option<String>,
    /// Acknowledgement policy: explicit, all or none
    #[arg(long, default_value = "explicit", value_parser = ["explicit", "all", "none"])]
    ack: String,
    /// Where to start: all, last, new, last_per_subject, or a sequence number
    #[arg(long = "deliver", default_value = "all")]
    deliver: String,
    /// Push consumer: deliver to this subject (a pull consumer without it)
    #[arg(long = "target", value_name = "SUBJECT")]
    target: Option<String>,
    /// Push consumer: deliver to this queue group
    #[arg(long = "deliver-group", value_name = "GROUP")]
    deliver_group: Option<String>,
    /// How long a delivered message may stay unacknowledged before redelivery
    #[arg(long = "wait", value_parser = parse_duration, default_value = "30s")]
    ack_wait: Duration,
    /// Most deliveries of one message (-1 unlimited)
    #[arg(long = "max-deliver", default_value_t = -1, allow_negative_numbers = true)]
    max_deliver: i64,
    /// Most unacknowledged messages at once
    #[arg(long = "max-pending", default_value_t = 1000)]
    max_ack_pending: i64,
    /// Accepted for the nats CLI's spelling (natter never prompts)
    #[arg(long, hide = true)]
    defaults: bool,
    /// Accepted for the nats CLI's spelling (pull is the default)
    #[arg(long, hide = true)]
    pull: bool,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// Stream name
    stream: String,
    /// Consumer name
    consumer: String,
    /// How many messages to fetch
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Do not acknowledge what was fetched
    #[arg(long = "no-ack")]
    no_ack: bool,
    /// How long to wait for messages
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Print only the bodies
    #[arg(short = 'r', long)]
    raw: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stream name
    stream: String,
    /// Consumer name
    consumer: String,
    /// Delete without asking (required: natter does not prompt)
    #[arg(short = 'f', long)]
    force: bool,
}

/// Runs a `natter consumer` subcommand.
pub fn run(opts: &ConnectOptions, command: &ConsumerCommand) -> Result<(), String> {
    let mut api = Api::connect(opts)?;
    match command {
        ConsumerCommand::Ls(args) => ls(&mut api, args),
        ConsumerCommand::Info(args) => {
            let info = api.call(
                &format!("CONSUMER.INFO.{}.{}", args.stream, args.consumer),
                &json!({}),
            )?;
            if args.json {
                return print_json(&info);
            }
            print(describe(&info).as_bytes())
        }
        ConsumerCommand::Add(args) => add(&mut api, args),
        ConsumerCommand::Next(args) => next(&mut api, args),
        ConsumerCommand::Rm(args) => {
            if !args.force {
                return Err(format!(
                    "deleting consumer {} loses its position and pending acks: confirm with -f",
                    args.consumer
                ));
            }
            api.call(
                &format!("CONSUMER.DELETE.{}.{}", args.stream, args.consumer),
                &json!({}),
            )?;
            print(format!("Deleted consumer {} > {}\n", args.stream, args.consumer).as_bytes())
        }
    }
}

fn ls(api: &mut Api, args: &LsArgs) -> Result<(), String> {
    let all = api.list_all(&format!("CONSUMER.LIST.{}", args.stream), "consumers")?;
    if args.json {
        return print_json(&Value::Array(all));
    }
    let mut out = String::new();
    if args.names {
        for c in &all {
            out.push_str(c["name"].as_str().unwrap_or_default());
            out.push('\n');
        }
        return print(out.as_bytes());
    }
    if all.is_empty() {
        return print(format!("No consumers on stream {}\n", args.stream).as_bytes());
    }
    out.push_str(&format!(
        "{:<20} {:<6} {:>10} {:>12} {:>12}\n",
        "Name", "Kind", "Lag", "Ack pending", "Redelivered"
    ));
    for c in &all {
        let kind = if c["config"]["deliver_subject"].is_string() {
            "push"
        } else {
            "pull"
        };
        out.push_str(&format!(
            "{:<20} {:<6} {:>10} {:>12} {:>12}\n",
            c["name"].as_str().unwrap_or_default(),
            kind,
            c["num_pending"].as_u64().unwrap_or(0),
            c["num_ack_pending"].as_u64().unwrap_or(0),
            c["num_redelivered"].as_u64().unwrap_or(0),
        ));
    }
    print(out.as_bytes())
}

fn add(api: &mut Api, args: &AddArgs) -> Result<(), String> {
    let mut config = json!({
        "durable_name": args.consumer,
        "ack_policy": args.ack,
        "ack_wait": args.ack_wait.as_nanos() as u64,
        "max_deliver": args.max_deliver,
        "replay_policy": "instant",
    });
    if args.ack != "none" {
        config["max_ack_pending"] = json!(args.max_ack_pending);
    }
    match args.deliver.parse::<u64>() {
        Ok(seq) => {
            config["deliver_policy"] = json!("by_start_sequence");
            config["opt_start_seq"] = json!(seq);
        }
        Err(_) => config["deliver_policy"] = json!(args.deliver),
    }
    if let Some(f) = &args.filter {
        config["filter_subject"] = json!(f);
    }
    if let Some(t) = &args.target {
        config["deliver_subject"] = json!(t);
    }
    if let Some(g) = &args.deliver_group {
        config["deliver_group"] = json!(g);
    }
    let _ = (args.defaults, args.pull);
    let info = api.call(
        &format!("CONSUMER.CREATE.{}.{}", args.stream, args.consumer),
        &json!({"stream_name": args.stream, "config": config, "action": "create"}),
    )?;
    print(
        format!(
            "Consumer {} > {} was created\n\n{}",
            args.stream,
            args.consumer,
            describe(&info)
        )
        .as_bytes(),
    )
}

/// Fetches up to `count` messages with one pull request, printing and (unless `--no-ack`)
/// acknowledging each with a confirmed ack.
fn next(api: &mut Api, args: &NextArgs) -> Result<(), String> {
    let inbox = conn::new_inbox();
    api.conn.subscribe(&inbox, None, 2)?;
    let expires = args.timeout.saturating_sub(Duration::from_millis(100));
    let request = json!({"batch": args.count, "expires": expires.as_nanos() as u64});
    api.conn.publish(
        &format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            args.stream, args.consumer
        ),
        Some(&inbox),
        &[],
        request.to_string().as_bytes(),
    )?;
    let deadline = Instant::now() + args.timeout;
    let mut got = 0;
    while got < args.count {
        let Some(msg) = api.conn.next_msg(Some(deadline))? else {
            break;
        };
        if msg.sid != 2 {
            continue;
        }
        if let Some(status) = msg.headers.as_ref().and_then(|h| h.status) {
            if msg.payload.is_empty() {
                match status {
                    404 | 408 => break,
                    100 => continue,
                    503 => {
                        return Err(format!(
                            "no consumer {} on stream {}",
                            args.consumer, args.stream
                        ))
                    }
                    _ => {
                        let why = msg
                            .headers
                            .as_ref()
                            .map(|h| h.description.clone())
                            .unwrap_or_default();
                        return Err(format!("server said: {status} {why}"));
                    }
                }
            }
        }
        got += 1;
        print(&format_msg(got, &msg, args.raw))?;
        if let (false, Some(reply)) = (args.no_ack, msg.reply.as_deref()) {
            // A confirmed ack: the server answers once it recorded it.
            let confirm = conn::new_inbox();
            api.conn.subscribe(&confirm, None, 3)?;
            api.conn.publish(reply, Some(&confirm), &[], b"+ACK")?;
            let until = Instant::now() + Duration::from_secs(2);
            loop {
                match api.conn.next_msg(Some(until))? {
                    Some(m) if m.sid == 3 => break,
                    Some(_) => continue,
                    None => return Err("the acknowledgement was not confirmed".into()),
                }
            }
            api.conn.unsubscribe(3, None)?;
        }
    }
    if !args.raw {
        let acked = if args.no_ack { "" } else { " and acknowledged" };
        eprintln!(
            "Received{acked} {got} message(s) from {} > {}",
            args.stream, args.consumer
        );
    }
    if got == 0 {
        return Err(format!(
            "no messages from {} > {} within {:?}",
            args.stream, args.consumer, args.timeout
        ));
    }
    Ok(())
}

/// The `consumer info` text.
fn describe(info: &Value) -> String {
    let c = &info["config"];
    let kind = if c["deliver_subject"].is_string() {
        "push"
    } else {
        "pull"
    };
    let mut out = format!(
        "Information for Consumer {} > {} created {}\n\nConfiguration:\n\n",
        info["stream_name"].as_str().unwrap_or_default(),
        info["name"].as_str().unwrap_or_default(),
        info["created"].as_str().unwrap_or_default()
    );
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let rows = [
        ("Kind", kind.to_string()),
        ("Deliver Policy", text(&c["deliver_policy"])),
        ("Ack Policy", text(&c["ack_policy"])),
        (
            "Ack Wait",
            format!(
                "{:?}",
                Duration::from_nanos(c["ack_wait"].as_u64().unwrap_or(0))
            ),
        ),
        ("Max Deliver", c["max_deliver"].to_string()),
        ("Max Ack Pending", c["max_ack_pending"].to_string()),
        ("Filter Subject", text(&c["filter_subject"])),
        ("Deliver Subject", text(&c["deliver_subject"])),
    ];
    for (k, v) in rows {
        if v != "null" {
            out.push_str(&format!("{k:>22}: {v}\n"));
        }
    }
    out.push_str("\nState:\n\n");
    let rows = [
        (
            "Last Delivered",
            format!(
                "consumer sequence {} stream sequence {}",
                info["delivered"]["consumer_seq"], info["delivered"]["stream_seq"]
            ),
        ),
        (
            "Acknowledgment Floor",
            format!(
                "consumer sequence {} stream sequence {}",
                info["ack_floor"]["consumer_seq"], info["ack_floor"]["stream_seq"]
            ),
        ),
        ("Outstanding Acks", info["num_ack_pending"].to_string()),
        ("Redelivered Messages", info["num_redelivered"].to_string()),
        ("Waiting Pulls", info["num_waiting"].to_string()),
        ("Unprocessed Messages", info["num_pending"].to_string()),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:>22}: {v}\n"));
    }
    out
}
