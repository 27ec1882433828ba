//! The natter binary: reads nats-server-compatible flags, builds one [`Config`] (defaults, then the
//! `-c` file, then flags), starts logging and runs the server on a multi-threaded tokio runtime.
//! `-sl` sends a signal to a running natter instead, `-t` only checks the configuration file.
//! `natter pub|sub|req|request|reply|server ...` runs a client subcommand ([`natter::cli`]).

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use natter::config::flags::{self, Command, Options, SignalKind};
use natter::config::Config;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .and_then(|arg| arg.to_str())
        .is_some_and(natter::cli::is_subcommand)
    {
        return natter::cli::run(args);
    }
    match flags::parse(args) {
        Err(err) => {
            let _ = err.print();
            ExitCode::FAILURE
        }
        Ok(Command::Help) => {
            print!("{}", flags::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!(
                "natter: v{} (nats-server 2.15 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Signal { signal, pid }) => exit(send_signal(signal, pid.as_deref())),
        Ok(Command::TestConfig(options)) => exit(test_config(&options)),
        Ok(Command::Run(options)) => run(&options),
    }
}

/// Success, or `natter: <message>` on standard error and a failure exit code.
fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("natter: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `-t`: load the file, print its warnings and say it is valid.
fn test_config(options: &Options) -> Result<(), String> {
    let (_, warnings) = load_config(options)?;
    for warning in &warnings {
        eprintln!("natter: {warning}");
    }
    let file = options.config.as_deref().unwrap_or(Path::new("-"));
    println!("natter: configuration file {} is valid", file.display());
    Ok(())
}

/// Starts logging and runs the server until it shuts down. Errors before logging starts go to
/// standard error; later ones only to the log (as nats-server does) and exit non-zero.
fn run(options: &Options) -> ExitCode {
    let config = match start_logging(options) {
        Ok(config) => config,
        Err(message) => return exit(Err(message)),
    };
    let options = options.clone();
    let reloader: natter::server::Reloader = Box::new(move || load_config(&options));
    match serve(config, reloader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the config, starts logging, then logs the config file's warnings and reserved flags.
fn start_logging(options: &Options) -> Result<Config, String> {
    let (config, warnings) = load_config(options)?;
    natter::log::init(&config.log).map_err(|err| match &config.log.file {
        Some(file) => format!("cannot open log file {}: {err}", file.display()),
        None => format!("cannot start logging: {err}"),
    })?;
    for warning in &warnings {
        warn!("{warning}");
    }
    for flag in &options.reserved {
        warn!("Flag {flag} is not supported yet, ignoring it");
    }
    Ok(config)
}

/// Runs the server on a multi-threaded tokio runtime.
fn serve(config: Config, reloader: natter::server::Reloader) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.spawn(reopen_log_on_sigusr1());
    runtime.block_on(natter::server::run(config, reloader))
}

/// Reopens the log file on each SIGUSR1 (`-sl reopen`), logging as nats-server does.
async fn reopen_log_on_sigusr1() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        info!("Trapped \"user defined signal 1\" signal");
        match natter::log::reopen() {
            Ok(true) => info!("File log re-opened"),
            Ok(false) => {}
            Err(err) => error!("Failed to reopen the log file: {err}"),
        }
    }
}

/// Defaults, then the `-c` file if given, then the flags over both.
fn load_config(options: &Options) -> Result<(Config, Vec<String>), String> {
    let (mut config, warnings) = match &options.config {
        Some(path) => load_file(path)?,
        None => (Config::default(), Vec::new()),
    };
    options.apply(&mut config)?;
    // Certificates, JWT signatures and the account graph are checked now, so that `-t` finds
    // them and a bad one is reported before the server starts, never half-secure.
    natter::server::Security::build(&config)?;
    Ok((config, warnings))
}

/// Reads a configuration file: the config and its warnings, or the error text (with position).
fn load_file(path: &Path) -> Result<(Config, Vec<String>), String> {
    let (config, warnings) = natter::config::file::load(path).map_err(|err| err.to_string())?;
    Ok((config, warnings.iter().map(ToString::to_string).collect()))
}

/// `-sl`: signal the natter named by `pid` (a pid or a pid file), or the only natter running.
fn send_signal(signal: SignalKind, pid: Option<&str>) -> Result<(), String> {
    let pid = match pid {
        Some(arg) => resolve_pid(arg)?,
        None => only_running_natter()?,
    };
    kill(Pid::from_raw(pid), signal.signal()).map_err(|errno| {
        let reason = errno.desc();
        let reason = reason[..1].to_lowercase() + &reason[1..];
        format!("signal \"{}\" {pid}: {reason}", signal.name())
    })
}

/// A pid given as a number or as the path of a file holding one. Pids below 1 would signal
/// process groups (or everything), so they are refused.
fn resolve_pid(arg: &str) -> Result<i32, String> {
    let pid = arg.parse::<i32>().ok().or_else(|| {
        let text = std::fs::read_to_string(arg).ok()?;
        text.trim().parse().ok()
    });
    pid.filter(|&pid| pid > 0)
        .ok_or_else(|| format!("invalid pid: {arg}"))
}

/// The pid of the one other live process with this executable's name (by `/proc/<pid>/comm`).
fn only_running_natter() -> Result<i32, String> {
    let name = process_name("self").unwrap_or_else(|| "natter".to_string());
    let me = std::process::id();
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map_err(|err| format!("cannot list processes: {err}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| is_live(pid) && process_name(&pid.to_string()).as_deref() == Some(&*name))
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect();
    pids.sort_unstable();
    match pids.as_slice() {
        [] => Err(format!("no {name} processes running")),
        [pid] => Ok(*pid),
        many => Err(format!(
            "multiple {name} processes running:\n{}",
            join_lines(many)
        )),
    }
}

/// Whether a process is running, not a zombie waiting to be reaped (state in `/proc/<pid>/stat`).
fn is_live(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// A process's command name, from `/proc/<pid>/comm`.
fn process_name(pid: &str) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

fn join_lines(items: &[impl Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
