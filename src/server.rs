//! The server: the listener, the registry of connections and the routing table (one owner,
//! [`ServerState`], shared by `Arc`), INFO, signals, shutdown and lame-duck mode.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::account::{Account, Accounts};
use crate::auth::Authenticator;
use crate::client;
use crate::config::Config;
use crate::outbound::{Client, ClientSnapshot, CloseReason};
use crate::proto::encode;
use crate::sublist::SublistStats;
use crate::subscription::Subscription;

/// The nats-server release whose behaviour natter follows; sent as INFO's `version` because
/// clients gate features (JetStream API forms, headers) on it.
pub const COMPAT_VERSION: &str = "2.15.0";
/// natter's own version, sent as INFO's `natter_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// What the server is asked to do by a signal or its embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, flush and close every connection, exit.
    Shutdown,
    /// Stop accepting, tell clients (INFO `ldm`), close them gradually, exit.
    LameDuck,
}

/// State every connection shares. Each part has one job: the routing table routes, the
/// registry lists connections, the counters count.
pub struct ServerState {
    /// The validated configuration the server runs with.
    config: RwLock<Arc<Config>>,
    /// The server id (an nkey-shaped random name, as nats-server makes).
    pub id: String,
    /// The server name: configured, else the id.
    pub name: String,
    /// The port actually bound (differs from the configured one for `-p -1`).
    pub port: u16,
    /// Every account, each with its own routing table.
    pub accounts: Accounts,
    /// Checks credentials.
    auth: RwLock<Arc<Authenticator>>,
    /// TLS, when configured.
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// System events (connects, disconnects, authentication failures).
    pub events: crate::events::Events,
    /// JetStream, when enabled (set once, as the server binds).
    pub jetstream: std::sync::OnceLock<Vec<Arc<crate::jetstream::Bridge>>>,
    /// Open connections by id.
    pub clients: DashMap<u64, Arc<Client>>,
    /// When the server started.
    pub started: Instant,
    /// When the server started, as wall-clock time (for monitoring).
    pub started_at: SystemTime,
    next_cid: AtomicU64,
    total_connections: AtomicU64,
    stale_connections: AtomicU64,
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    closed_out_msgs: AtomicU64,
    closed_out_bytes: AtomicU64,
    slow_consumers: AtomicU64,
    lame_duck: AtomicBool,
}

/// Message and byte totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Payload bytes received from clients.
    pub in_bytes: u64,
    /// Messages queued to clients.
    pub out_msgs: u64,
    /// Payload bytes queued to clients.
    pub out_bytes: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Connections closed for not answering PINGs.
    pub stale_connections: u64,
}

#[derive(Serialize)]
struct Info<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'a str,
    proto: u8,
    host: &'a str,
    port: u16,
    headers: bool,
    max_payload: u32,
    client_id: u64,
    client_ip: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    jetstream: bool,
    natter_version: &'a str,
}

/// The security pieces built from the configuration: accounts with their imports wired,
/// the credential checks, and TLS.
pub struct Security {
    /// Every account.
    pub accounts: Accounts,
    /// The credential checks.
    pub auth: Authenticator,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Security {
    /// Builds and checks everything `config.security` asks for; an error names what is wrong,
    /// and the server must not start with it.
    pub fn build(config: &Config) -> Result<Security, String> {
        let sec = &config.security;
        let accounts = match &sec.operator {
            Some(op) => {
                crate::auth::operator::accounts(op).map_err(|e| format!("{}: {e}", op.pos))?
            }
            None => Accounts::from_config(&sec.accounts).map_err(|e| e.0)?,
        };
        let (mut auth, tls) = Security::auth_and_tls(config, &accounts)?;
        if sec.auth_timeout.is_none() {
            auth.timeout = config.auth_timeout;
        }
        Ok(Security {
            accounts,
            auth,
            tls,
        })
    }
}

impl Security {
    /// The credential checks and TLS `config` asks for, over existing `accounts` (also what a
    /// configuration reload rebuilds).
    pub fn auth_and_tls(
        config: &Config,
        accounts: &Accounts,
    ) -> Result<(Authenticator, Option<Arc<rustls::ServerConfig>>), String> {
        let sec = &config.security;
        let auth = Authenticator::new(sec, accounts)?;
        let tls = match &sec.tls {
            Some(t) => Some(crate::tls::server_config(t).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok((auth, tls))
    }
}

impl ServerState {
    fn new(config: Config, port: u16, security: Security) -> Self {
        let id = server_id();
        let system = config
            .security
            .system_account
            .as_deref()
            .and_then(|name| security.accounts.get(name).cloned());
        ServerState {
            events: crate::events::Events::new(system),
            accounts: security.accounts,
            auth: RwLock::new(Arc::new(security.auth)),
            tls: RwLock::new(security.tls),
            name: config.server_name.clone().unwrap_or_else(|| id.clone()),
            id,
            port,
            config: RwLock::new(Arc::new(config)),
            jetstream: std::sync::OnceLock::new(),
            clients: DashMap::new(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            next_cid: AtomicU64::new(1),
            total_connections: AtomicU64::new(0),
            stale_connections: AtomicU64::new(0),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            closed_out_msgs: AtomicU64::new(0),
            closed_out_bytes: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            lame_duck: AtomicBool::new(false),
        }
    }

    /// The configuration in force (a reload replaces it; see [`crate::reload`]).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The credential checks in force.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// TLS in force, when configured.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a reloaded configuration, credential checks and TLS in force for what happens next
    /// (connections already authenticated are brought in line by [`crate::reload`]).
    pub(crate) fn replace(
        &self,
        config: Config,
        auth: Authenticator,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = tls;
    }

    /// The INFO JSON for connection `client_id` from `ip`.
    pub fn info_json(&self, client_id: u64, ip: IpAddr) -> Vec<u8> {
        self.info_json_with_nonce(client_id, ip, None)
    }

    /// The INFO JSON for connection `client_id` from `ip`, carrying `nonce` for the client to
    /// sign.
    pub fn info_json_with_nonce(&self, client_id: u64, ip: IpAddr, nonce: Option<&str>) -> Vec<u8> {
        let config = self.config();
        let tls = config.security.tls.as_ref();
        let info = Info {
            server_id: &self.id,
            server_name: &self.name,
            version: COMPAT_VERSION,
            proto: 1,
            host: &config.host,
            port: self.port,
            headers: true,
            max_payload: config.max_payload,
            client_id,
            client_ip: ip.to_string(),
            auth_required: self.auth().required(),
            tls_required: tls.is_some(),
            tls_verify: tls.is_some_and(|t| t.verify || t.verify_and_map),
            nonce,
            ldm: self.lame_duck.load(Ordering::Relaxed),
            jetstream: config.jetstream.is_some(),
            natter_version: VERSION,
        };
        serde_json::to_vec(&info).expect("INFO serializes")
    }

    /// Adds a read batch's inbound counts.
    pub fn count_in(&self, msgs: u64, bytes: u64) {
        self.in_msgs.fetch_add(msgs, Ordering::Relaxed);
        self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts and logs a connection that just became a slow consumer.
    pub fn note_slow_consumer(&self, client: &Client) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        info!(
            "cid:{} - Slow Consumer Detected: MaxPending of {} Exceeded",
            client.id,
            self.config().max_pending
        );
    }

    /// The account `client` routes in (the global one until it authenticated).
    pub fn account_of<'a>(&'a self, client: &'a Client) -> &'a Arc<Account> {
        client.account().unwrap_or(self.accounts.global())
    }

    /// Removes a subscription from the routing table and from its connection.
    pub fn remove_subscription(&self, sub: &Arc<Subscription>) {
        self.account_of(&sub.client).remove(sub);
    }

    /// Takes every subscription of `client` out of the routing table.
    pub fn remove_subscriptions(&self, client: &Client) {
        // Take the map itself, not its entries, so its allocation goes too.
        let subs = std::mem::take(&mut *client.subs());
        let account = self.account_of(client);
        for sub in subs.values() {
            account
                .sublist
                .remove(&sub.subject, sub.queue.as_deref(), sub);
        }
    }

    /// Subscriptions across all accounts.
    pub fn subscription_count(&self) -> usize {
        self.accounts.subscription_count()
    }

    /// Routing-table statistics across all accounts.
    pub fn sublist_stats(&self) -> SublistStats {
        self.accounts.sublist_stats()
    }

    /// Forgets a closed connection, keeping its counters in the totals.
    pub fn unregister(&self, client: &Client) {
        if self.clients.remove(&client.id).is_some() {
            let out = client.outbound();
            self.closed_out_msgs
                .fetch_add(out.out_msgs, Ordering::Relaxed);
            self.closed_out_bytes
                .fetch_add(out.out_bytes, Ordering::Relaxed);
        }
    }

    /// Message and byte totals since the server started.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            in_msgs: self.in_msgs.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_msgs: self.closed_out_msgs.load(Ordering::Relaxed),
            out_bytes: self.closed_out_bytes.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            total_connections: self.total_connections.load(Ordering::Relaxed),
            stale_connections: self.stale_connections.load(Ordering::Relaxed),
        };
        for c in self.clients.iter() {
            let out = c.outbound();
            t.out_msgs += out.out_msgs;
            t.out_bytes += out.out_bytes;
        }
        t
    }

    /// Counts a connection closed as stale.
    pub fn note_stale_connection(&self) {
        self.stale_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Every open connection as monitoring shows it, by connection id; subscriptions listed
    /// only `with_subs`.
    pub fn client_snapshots(&self, with_subs: bool) -> Vec<ClientSnapshot> {
        let mut all: Vec<ClientSnapshot> = self
            .clients_snapshot()
            .iter()
            .map(|c| c.snapshot(with_subs))
            .collect();
        all.sort_by_key(|c| c.cid);
        all
    }

    pub(crate) fn clients_snapshot(&self) -> Vec<Arc<Client>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }
}

/// A bound, not yet serving, server.
pub struct Server {
    state: Arc<ServerState>,
    listener: TcpListener,
    ports_file: Option<PathBuf>,
    monitor: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds the client port and writes the pid and ports files; the server is reachable (the
    /// kernel queues connections) but serves nobody until [`Server::serve`].
    pub async fn bind(config: Config) -> io::Result<Server> {
        let security =
            Security::build(&config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState::new(config, addr.port(), security));
        let config = state.config();
        info!("Starting natter");
        info!("  Version:  {VERSION} (nats-server {COMPAT_VERSION} compatible)");
        info!("  Name:     {}", state.name);
        info!("  ID:       {}", state.id);
        if let Some(file) = &config.config_file {
            info!("Using configuration file: {}", file.display());
        }
        if let Some(js) = &config.jetstream {
            let bridges = crate::jetstream::start(&state, js)?;
            let _ = state.jetstream.set(bridges);
        }
        if let Some(pid_file) = &config.pid_file {
            std::fs::write(pid_file, std::process::id().to_string())?;
        }
        let (monitoring, monitor) = match config.http_port {
            Some(port) => {
                let host = config.monitor_host();
                let http = TcpListener::bind((host, port)).await?;
                let port = http.local_addr()?.port();
                info!("Starting http monitor on {}", display_addr(host, port));
                let task = tokio::spawn(crate::monitor::serve(http, state.clone()));
                (Some((host, port)), Some(task))
            }
            None => (None, None),
        };
        let ports_file = match &config.ports_file_dir {
            Some(dir) => Some(write_ports_file(
                dir,
                (&config.host, addr.port()),
                monitoring,
            )?),
            None => None,
        };
        info!(
            "Listening for client connections on {}",
            display_addr(&config.host, addr.port())
        );
        info!("Server is ready");
        Ok(Server {
            state,
            listener,
            ports_file,
            monitor,
        })
    }

    /// The address the client listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The state shared with every connection.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Serves clients until a [`Stop`] arrives on `stops` (or every sender is gone).
    pub async fn serve(self, mut stops: mpsc::Receiver<Stop>) -> io::Result<()> {
        let sweeper = tokio::spawn(sweep_responses(self.state.clone()));
        let stop = loop {
            tokio::select! {
                stop = stops.recv() => break stop.unwrap_or(Stop::Shutdown),
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, addr)) => self.accept(stream, addr),
                    Err(e) => {
                        // Usually out of file descriptors: back off rather than spin.
                        error!("Error accepting client connection: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        };
        let Server {
            state,
            listener,
            ports_file,
            monitor,
        } = self;
        drop(listener);
        if stop == Stop::LameDuck {
            lame_duck(&state, &mut stops).await;
        }
        info!("Initiating Shutdown...");
        for client in state.clients_snapshot() {
            client.close(CloseReason::ServerShutdown);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !state.clients.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(path) = ports_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &state.config().pid_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(task) = monitor {
            task.abort();
        }
        sweeper.abort();
        for js in state.jetstream.get().into_iter().flatten() {
            js.close();
        }
        info!("Server Exiting..");
        Ok(())
    }

    fn accept(&self, stream: TcpStream, addr: SocketAddr) {
        // Small frames must not wait for Nagle: latency is the point.
        let _ = stream.set_nodelay(true);
        let state = self.state.clone();
        let id = state.next_cid.fetch_add(1, Ordering::Relaxed);
        let config = state.config();
        if state.clients.len() >= config.max_connections {
            error!("{addr} - cid:{id} - maximum connections exceeded");
            tokio::spawn(refuse(
                stream,
                state.info_json(id, addr.ip()),
                config.write_deadline,
            ));
            return;
        }
        let config = state.config();
        state.total_connections.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client::new(
            id,
            addr,
            config.max_pending as usize,
            config.fast_producer_stall,
        ));
        state.clients.insert(id, client.clone());
        tokio::spawn(client::serve(state, stream, addr, client));
    }
}

/// Closes expired service-import reply paths, once a second.
async fn sweep_responses(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        for account in state.accounts.iter() {
            account.sweep_responses(now);
        }
    }
}

/// Sends INFO and the nats-server error to a connection over the limit, then hangs up.
async fn refuse(mut stream: TcpStream, info: Vec<u8>, deadline: Duration) {
    let mut frame = bytes::BytesMut::new();
    encode::info(&mut frame, &info);
    encode::err(&mut frame, "maximum connections exceeded");
    let _ = tokio::time::timeout(deadline, stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}

/// Lame-duck mode: clients learn (INFO `ldm`) that they should move, then are closed
/// gradually over the configured duration, so they do not all reconnect elsewhere at once.
async fn lame_duck(state: &Arc<ServerState>, stops: &mut mpsc::Receiver<Stop>) {
    info!("Entering lame duck mode, stop accepting new clients");
    state.lame_duck.store(true, Ordering::Relaxed);
    let clients = state.clients_snapshot();
    for c in clients.iter().filter(|c| c.async_info()) {
        let json = state.info_json(c.id, IpAddr::from([0, 0, 0, 0]));
        if c.enqueue(json.len() + 8, |b| encode::info(b, &json)).wake() {
            c.wake();
        }
    }
    let config = state.config();
    let spread = config
        .lame_duck_duration
        .saturating_sub(config.lame_duck_grace_period);
    let closing = async {
        tokio::time::sleep(config.lame_duck_grace_period).await;
        let step = spread / (clients.len().max(1) as u32);
        for (i, c) in clients.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(step).await;
            }
            c.close(CloseReason::ServerShutdown);
        }
    };
    tokio::pin!(closing);
    loop {
        tokio::select! {
            _ = &mut closing => return,
            stop = stops.recv() => match stop {
                Some(Stop::Shutdown) => {
                    debug!("Shutdown requested during lame duck mode");
                    return;
                }
                // Another lame-duck request, or nobody left to ask: carry on draining.
                Some(Stop::LameDuck) => {}
                None => {
                    closing.as_mut().await;
                    return;
                }
            },
        }
    }
}

/// Builds the configuration again for a reload: the config and the file's warnings, or why not.
pub type Reloader = Box<dyn Fn() -> Result<(Config, Vec<String>), String> + Send + Sync>;

/// Binds and serves with `config`, stopping on SIGINT/SIGTERM (shutdown) or SIGUSR2 (lame
/// duck) and reloading on SIGHUP with `reloader`, as nats-server does.
pub async fn run(config: Config, reloader: Reloader) -> io::Result<()> {
    let server = Server::bind(config).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(forward_signals(tx, server.state().clone(), reloader));
    server.serve(rx).await
}

/// A SIGHUP: read the configuration again and put it in force, or say why not.
fn reload(state: &ServerState, reloader: &Reloader) {
    let result = reloader().and_then(|(config, warnings)| {
        for w in &warnings {
            warn!("{w}");
        }
        crate::reload::reload(state, config)
    });
    match result {
        Ok(changes) => {
            for change in changes {
                info!("Reloaded: {change}");
            }
            info!(audit = "config.reload", "Reloaded server configuration");
        }
        Err(e) => error!(
            audit = "config.reload_failed",
            "Failed to reload server configuration: {e}"
        ),
    }
}

async fn forward_signals(
    tx: mpsc::Sender<Stop>,
    state: Arc<ServerState>,
    reloader: Reloader,
) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let stop = tokio::select! {
            _ = int.recv() => { info!("Trapped \"interrupt\" signal"); Stop::Shutdown }
            _ = term.recv() => { info!("Trapped \"terminated\" signal"); Stop::Shutdown }
            _ = usr2.recv() => Stop::LameDuck,
            _ = hup.recv() => {
                info!("Trapped \"hangup\" signal");
                reload(&state, &reloader);
                continue;
            }
        };
        if tx.send(stop).await.is_err() {
            return Ok(());
        }
    }
}

/// `<dir>/<executable>_<pid>.ports` holding `{"nats":["nats://host:port"]}` (and
/// `"monitoring":["http://host:port"]` when monitoring is on), as nats-server writes it for
/// test harnesses that start it on random ports.
fn write_ports_file(
    dir: &std::path::Path,
    (host, port): (&str, u16),
    monitoring: Option<(&str, u16)>,
) -> io::Result<PathBuf> {
    let exe = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "natter".into());
    let path = dir.join(format!("{exe}_{}.ports", std::process::id()));
    let reachable = |host: &str, port: u16| {
        let host = match host {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" => "[::1]",
            h => h,
        };
        display_addr(host, port)
    };
    let mut json = serde_json::json!({ "nats": [format!("nats://{}", reachable(host, port))] });
    if let Some((host, port)) = monitoring {
        json["monitoring"] = serde_json::json!([format!("http://{}", reachable(host, port))]);
    }
    std::fs::write(&path, json.to_string())?;
    Ok(path)
}

fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A random 56-character server id in the nkey alphabet, starting with `N` like nats-server's.
fn server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    std::iter::once('N')
        .chain((0..55).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char))
        .collect()
}
