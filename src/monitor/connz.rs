//! `/connz`: the open connections, sorted and paged as nats-server does, with their
//! subscriptions on request (`subs=1` subjects, `subs=detail` everything).

use std::cmp::Reverse;
use std::time::SystemTime;

use serde::Serialize;

use super::format::{age, rfc3339, rtt};
use super::http::{BadRequest, Query};
use crate::outbound::{ClientSnapshot, SubSnapshot};
use crate::server::ServerState;

/// nats-server's page size when `limit` is absent or not positive.
pub const DEFAULT_LIMIT: usize = 1024;

/// What to order connections by (`sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Connection id, ascending (the default).
    Cid,
    /// Start time, oldest first.
    Start,
    /// Subscription count, most first.
    Subs,
    /// Bytes queued for writing, most first.
    Pending,
    /// Messages sent to the client, most first.
    MsgsTo,
    /// Messages received from the client, most first.
    MsgsFrom,
    /// Bytes sent to the client, most first.
    BytesTo,
    /// Bytes received from the client, most first.
    BytesFrom,
    /// Last activity, most recent first.
    Last,
    /// Idle time, longest first.
    Idle,
    /// Uptime, shortest first (nats-server's order).
    Uptime,
    /// Round-trip time, longest first.
    Rtt,
}

impl SortBy {
    fn parse(s: &str, closed: bool) -> Result<SortBy, BadRequest> {
        Ok(match s {
            "cid" => SortBy::Cid,
            "start" => SortBy::Start,
            "subs" => SortBy::Subs,
            "pending" => SortBy::Pending,
            "msgs_to" => SortBy::MsgsTo,
            "msgs_from" => SortBy::MsgsFrom,
            "bytes_to" => SortBy::BytesTo,
            "bytes_from" => SortBy::BytesFrom,
            "last" => SortBy::Last,
            "idle" => SortBy::Idle,
            "uptime" => SortBy::Uptime,
            "rtt" => SortBy::Rtt,
            // Closed connections are not kept, so these sort an empty list.
            "stop" | "reason" if closed => SortBy::Cid,
            "stop" | "reason" => {
                return Err(BadRequest(format!(
                    "sort by {s} only valid on closed connections"
                )))
            }
            _ => return Err(BadRequest(format!("invalid sorting option: {s}"))),
        })
    }

    fn sort(self, conns: &mut [ClientSnapshot]) {
        conns.sort_by_key(|c| c.cid);
        // Stable sorts: equal keys stay in cid order.
        match self {
            SortBy::Cid => {}
            SortBy::Start => conns.sort_by_key(|c| c.start),
            SortBy::Subs => conns.sort_by_key(|c| Reverse(c.num_subscriptions)),
            SortBy::Pending => conns.sort_by_key(|c| Reverse(c.pending_bytes)),
            SortBy::MsgsTo => conns.sort_by_key(|c| Reverse(c.out_msgs)),
            SortBy::MsgsFrom => conns.sort_by_key(|c| Reverse(c.in_msgs)),
            SortBy::BytesTo => conns.sort_by_key(|c| Reverse(c.out_bytes)),
            SortBy::BytesFrom => conns.sort_by_key(|c| Reverse(c.in_bytes)),
            SortBy::Last => conns.sort_by_key(|c| Reverse(c.last_activity)),
            SortBy::Idle => conns.sort_by_key(|c| c.last_activity),
            SortBy::Uptime => conns.sort_by_key(|c| Reverse(c.start)),
            SortBy::Rtt => conns.sort_by_key(|c| Reverse(c.rtt)),
        }
    }
}

/// How much of each connection's subscriptions to show (`subs=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subs {
    None,
    Subjects,
    Detail,
}

/// `/connz`'s parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnzQuery {
    sort: SortBy,
    subs: Subs,
    offset: usize,
    limit: usize,
    cid: Option<u64>,
    /// `auth=true`: show the authenticated user and account.
    auth: bool,
    /// `state=closed`: natter keeps no closed connections, so the list is empty.
    closed_only: bool,
}

impl ConnzQuery {
    /// Reads the query string, refusing what nats-server refuses.
    pub fn parse(q: &Query) -> Result<ConnzQuery, BadRequest> {
        let closed_only = match q.get("state").map(str::to_ascii_lowercase).as_deref() {
            None | Some("open" | "any" | "all") => false,
            Some("closed") => true,
            Some(_) => {
                return Err(BadRequest(format!(
                    "Error decoding state for {}",
                    q.get("state").unwrap_or_default()
                )))
            }
        };
        let sort = match q.get("sort") {
            Some(s) => SortBy::parse(s, closed_only)?,
            None => SortBy::Cid,
        };
        let subs = match q.get("subs") {
            Some("detail") => Subs::Detail,
            _ if q.bool("subs")? => Subs::Subjects,
            _ => Subs::None,
        };
        let offset = q.int("offset")?.unwrap_or(0).max(0) as usize;
        let limit = match q.int("limit")? {
            Some(n) if n > 0 => n as usize,
            _ => DEFAULT_LIMIT,
        };
        let cid = q.uint("cid")?;
        let auth = q.bool("auth")?;
        // Asking for one connection is a page of one from the start.
        let (offset, limit) = if cid.is_some() {
            (0, 1)
        } else {
            (offset, limit)
        };
        Ok(ConnzQuery {
            sort,
            subs,
            offset,
            limit,
            cid,
            auth,
            closed_only,
        })
    }
}

/// The `/connz` document.
#[derive(Debug, Serialize)]
pub struct Connz {
    server_id: String,
    now: String,
    num_connections: usize,
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<ConnInfo>,
}

/// One connection in `/connz`.
#[derive(Debug, Serialize)]
struct ConnInfo {
    cid: u64,
    kind: &'static str,
    #[serde(rename = "type")]
    kind_of_client: &'static str,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    rtt: String,
    uptime: String,
    idle: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subscriptions_list: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subscriptions_list_detail: Vec<SubDetail>,
}

/// One subscription in `/connz?subs=detail` and `/subsz?subs=1`.
#[derive(Debug, Serialize)]
pub struct SubDetail {
    /// The account (only `/subsz` names it; natter has the global account only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'static str>,
    /// The account's tag, as `account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<&'static str>,
    /// Subject or pattern.
    pub subject: String,
    /// Queue group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qgroup: Option<String>,
    /// Subscription id.
    pub sid: String,
    /// Messages delivered.
    pub msgs: u64,
    /// The connection holding it.
    pub cid: u64,
}

impl SubDetail {
    /// `sub` of connection `cid`.
    pub fn new(cid: u64, sub: SubSnapshot) -> SubDetail {
        SubDetail {
            account: None,
            account_tag: None,
            subject: sub.subject,
            qgroup: sub.queue,
            sid: sub.sid,
            msgs: sub.msgs,
            cid,
        }
    }
}

impl Connz {
    /// The page `query` asks for, as of now.
    pub fn collect(state: &ServerState, query: &ConnzQuery) -> Connz {
        let now = SystemTime::now();
        let mut conns = if query.closed_only {
            Vec::new()
        } else {
            state.client_snapshots(query.subs != Subs::None)
        };
        let total = conns.len();
        if let Some(cid) = query.cid {
            conns.retain(|c| c.cid == cid);
        }
        query.sort.sort(&mut conns);
        let connections: Vec<ConnInfo> = conns
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|c| ConnInfo::new(c, query.subs, query.auth, now))
            .collect();
        Connz {
            server_id: state.id.clone(),
            now: rfc3339(now),
            num_connections: connections.len(),
            total,
            offset: query.offset,
            limit: query.limit,
            connections,
        }
    }
}

impl ConnInfo {
    fn new(c: ClientSnapshot, subs: Subs, auth: bool, now: SystemTime) -> ConnInfo {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let count = c.num_subscriptions;
        let (subscriptions_list, subscriptions_list_detail) = match subs {
            Subs::None => (Vec::new(), Vec::new()),
            Subs::Subjects => (
                c.subscriptions.into_iter().map(|s| s.subject).collect(),
                Vec::new(),
            ),
            Subs::Detail => (
                Vec::new(),
                c.subscriptions
                    .into_iter()
                    .map(|s| SubDetail::new(c.cid, s))
                    .collect(),
            ),
        };
        ConnInfo {
            cid: c.cid,
            kind: "Client",
            kind_of_client: "nats",
            ip: c.ip.to_string(),
            port: c.port,
            start: rfc3339(c.start),
            last_activity: rfc3339(c.last_activity),
            rtt: rtt(c.rtt.unwrap_or_default()),
            uptime: age(since(c.start)),
            idle: age(since(c.last_activity)),
            pending_bytes: c.pending_bytes,
            in_msgs: c.in_msgs,
            out_msgs: c.out_msgs,
            in_bytes: c.in_bytes,
            out_bytes: c.out_bytes,
            subscriptions: count,
            name: c.name,
            lang: c.lang,
            version: c.version,
            authorized_user: c.user.filter(|_| auth),
            account: c.account.filter(|_| auth),
            subscriptions_list,
            subscriptions_list_detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<ConnzQuery, BadRequest> {
        ConnzQuery::parse(&Query::parse(Some(q)))
    }

    #[test]
    fn defaults_and_clamping() {
        let q = parse("").unwrap();
        assert_eq!(
            (q.sort, q.subs, q.offset, q.limit),
            (SortBy::Cid, Subs::None, 0, 1024)
        );
        let q = parse("offset=-3&limit=0&subs=1").unwrap();
        assert_eq!((q.subs, q.offset, q.limit), (Subs::Subjects, 0, 1024));
        let q = parse("offset=5&limit=2&cid=7&subs=detail").unwrap();
        assert_eq!(
            (q.subs, q.offset, q.limit, q.cid),
            (Subs::Detail, 0, 1, Some(7))
        );
    }

    #[test]
    fn refusals_read_as_nats_server_says() {
        assert_eq!(
            parse("sort=bogus").unwrap_err().0,
            "invalid sorting option: bogus"
        );
        assert_eq!(
            parse("sort=CID").unwrap_err().0,
            "invalid sorting option: CID"
        );
        assert_eq!(
            parse("sort=stop").unwrap_err().0,
            "sort by stop only valid on closed connections"
        );
        assert!(parse("sort=stop&state=closed").is_ok());
        assert_eq!(
            parse("state=x").unwrap_err().0,
            "Error decoding state for x"
        );
        assert!(parse("subs=maybe").is_err());
    }
}
