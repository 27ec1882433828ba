//! Configuration reload (`SIGHUP`, `--signal reload`), as nats-server does it: the file is read
//! again (with the command-line flags over it), checked in full, and put in force without
//! dropping connections. What a reload may change: log levels and timestamps, users, passwords,
//! tokens, nkeys and permissions, TLS certificates (new handshakes use the new ones), and the
//! limits (new connections get them). Connected clients are brought in line: a client whose
//! user is gone (or moved to another account) is closed with `Authorization Violation`; one
//! whose permissions changed gets them at once, and loses any subscription they now deny,
//! with the `-ERR` a refused SUB gets. Anything else (listen address, accounts, JetStream, ...)
//! needs a restart: the reload is refused, names the setting, and the server runs on unchanged.

use std::sync::Arc;

use tracing::{error, info};

use crate::config::Config;
use crate::outbound::{Client, CloseReason};
use crate::proto::encode;
use crate::server::{Security, ServerState};

/// Puts `new` in force. The lines to log on success (what changed); on error, why nothing did.
pub fn reload(state: &ServerState, mut new: Config) -> Result<Vec<String>, String> {
    let old = state.config();
    restart_only(&old, &new)?;
    let (mut auth, tls) = Security::auth_and_tls(&new, &state.accounts)?;
    if new.security.auth_timeout.is_none() {
        auth.timeout = new.auth_timeout;
    }
    let mut changes = Vec::new();
    if (old.log.debug, old.log.trace, old.log.time, old.log.time_utc)
        != (new.log.debug, new.log.trace, new.log.time, new.log.time_utc)
    {
        crate::log::set_levels(&new.log).map_err(|e| format!("cannot change log levels: {e}"))?;
        changes.push("logging".to_string());
    }
    let sec_changed = old.security != new.security;
    if old.security.tls != new.security.tls || new.security.tls.is_some() {
        // Certificate files may have changed on disk under the same settings: always reload.
        changes.push("tls".to_string());
    }
    if sec_changed {
        changes.push("authorization".to_string());
    }
    let limits = |c: &Config| {
        (
            c.max_payload,
            c.max_pending,
            c.max_control_line,
            c.max_connections,
            c.max_subscriptions,
            c.ping_interval,
            c.ping_max,
            c.write_deadline,
            c.auth_timeout,
            c.lame_duck_duration,
            c.lame_duck_grace_period,
        )
    };
    if limits(&old) != limits(&new) {
        changes.push("limits".to_string());
    }
    // Kept from the running server: what only a restart changes is equal anyway, and the
    // file's path as started.
    new.config_file = old.config_file.clone();
    let operator_mode = auth.operator_mode();
    state.replace(new, auth, tls);
    if sec_changed && !operator_mode {
        realign_clients(state);
    }
    Ok(changes)
}

/// Refuses changes a running server cannot take.
fn restart_only(old: &Config, new: &Config) -> Result<(), String> {
    let refuse = |what: &str| Err(format!("config reload not supported for {what}"));
    if old.host != new.host || old.port != new.port {
        return refuse("listen address (host, port)");
    }
    if old.http_port != new.http_port || old.http_host != new.http_host {
        return refuse("monitoring address (http, http_port)");
    }
    if old.server_name != new.server_name {
        return refuse("server_name");
    }
    if old.jetstream != new.jetstream {
        return refuse("jetstream");
    }
    if old.pid_file != new.pid_file || old.ports_file_dir != new.ports_file_dir {
        return refuse("pid_file or ports_file_dir");
    }
    if old.log.file != new.log.file
        || old.log.format != new.log.format
        || old.log.size_limit != new.log.size_limit
        || old.log.max_num != new.log.max_num
    {
        return refuse("log file settings (log_file, log_format, logfile_size_limit)");
    }
    let (o, n) = (&old.security, &new.security);
    if o.operator != n.operator || o.system_account != n.system_account {
        return refuse("operator or system_account");
    }
    // Accounts hold the routing tables: their set, imports and exports are fixed for the
    // server's life (their users are not). Positions in the file may move.
    let nowhere = crate::config::parse::Pos {
        file: Arc::from(std::path::Path::new("")),
        line: 0,
        col: 0,
    };
    let shape = |s: &crate::config::security::Security| {
        s.accounts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.pos = nowhere.clone();
                a.exports.iter_mut().for_each(|e| e.pos = nowhere.clone());
                a.imports.iter_mut().for_each(|i| i.pos = nowhere.clone());
                a
            })
            .collect::<Vec<_>>()
    };
    if shape(o) != shape(n) {
        return refuse("accounts (their names, imports, exports and jetstream)");
    }
    Ok(())
}

/// Applies the reloaded users to connected clients (see the module docs).
fn realign_clients(state: &ServerState) {
    let auth = state.auth();
    for client in state.clients_snapshot() {
        let Some(user) = client.user().map(str::to_string) else {
            continue;
        };
        let current = client.account().map(|a| a.name.clone());
        match auth.user_grant(&user) {
            Some((account, permissions)) if current.as_deref() == Some(account) => {
                client.set_permissions(permissions.clone());
                if let Some(perms) = permissions {
                    drop_denied_subscriptions(state, &client, &perms);
                }
            }
            _ => {
                error!(
                    "cid:{} - user {user:?} removed or moved by a configuration reload: closing",
                    client.id
                );
                send_err(&client, "Authorization Violation");
                client.close(CloseReason::AuthenticationViolation);
            }
        }
    }
}

fn drop_denied_subscriptions(
    state: &ServerState,
    client: &Arc<Client>,
    perms: &crate::auth::permissions::Permissions,
) {
    let denied: Vec<_> = client
        .subs()
        .values()
        .filter(|s| !perms.may_subscribe(&s.subject, s.queue.as_deref()))
        .cloned()
        .collect();
    for sub in denied {
        state.remove_subscription(&sub);
        // nats-server's wording for a subscription a reload took away.
        let text = format!(
            "Permissions Violation for Subscription to \"{}\" (sid \"{}\")",
            String::from_utf8_lossy(&sub.subject),
            String::from_utf8_lossy(&sub.sid)
        );
        info!("cid:{} - {text} after a configuration reload", client.id);
        send_err(client, &text);
    }
}

fn send_err(client: &Client, text: &str) {
    if client
        .enqueue(text.len() + 9, |b| encode::err(b, text))
        .wake()
    {
        client.wake();
    }
}
