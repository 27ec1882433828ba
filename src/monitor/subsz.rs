//! `/subsz`: the routing table's counters and, with `subs=1`, its subscriptions (optionally
//! only those a `test` subject would reach), paged.

use std::time::SystemTime;

use serde::Serialize;

use super::connz::{SubDetail, DEFAULT_LIMIT};
use super::format::rfc3339;
use super::http::{BadRequest, Query};
use crate::server::ServerState;
use crate::subject;

/// The account every natter subscription lives in (nats-server's global account).
const GLOBAL_ACCOUNT: &str = "$G";

/// `/subsz`'s parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubszQuery {
    subs: bool,
    offset: usize,
    limit: usize,
    test: Option<String>,
}

impl SubszQuery {
    /// Reads the query string, refusing what nats-server refuses.
    pub fn parse(q: &Query) -> Result<SubszQuery, BadRequest> {
        let test = q.get("test").map(str::to_string);
        if let Some(t) = &test {
            if !subject::is_valid_publish(t.as_bytes()) {
                return Err(BadRequest(format!(
                    "invalid test subject, must be valid publish subject: {t}"
                )));
            }
        }
        Ok(SubszQuery {
            subs: q.bool("subs")?,
            offset: q.int("offset")?.unwrap_or(0).max(0) as usize,
            limit: match q.int("limit")? {
                Some(n) if n > 0 => n as usize,
                _ => DEFAULT_LIMIT,
            },
            test,
        })
    }
}

/// The `/subsz` document.
#[derive(Debug, Serialize)]
pub struct Subsz {
    server_id: String,
    now: String,
    num_subscriptions: usize,
    num_cache: usize,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: usize,
    avg_fanout: f64,
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subscriptions_list: Vec<SubDetail>,
}

impl Subsz {
    /// The counters, and the page of subscriptions `query` asks for, as of now.
    pub fn collect(state: &ServerState, query: &SubszQuery) -> Subsz {
        let stats = state.sublist_stats();
        let mut subs = Vec::new();
        if query.subs {
            for client in state.client_snapshots(true) {
                let cid = client.cid;
                subs.extend(
                    client
                        .subscriptions
                        .into_iter()
                        .filter(|s| match &query.test {
                            Some(t) => subject::matches(s.subject.as_bytes(), t.as_bytes()),
                            None => true,
                        })
                        .map(|s| SubDetail {
                            account: Some(GLOBAL_ACCOUNT),
                            account_tag: Some(GLOBAL_ACCOUNT),
                            ..SubDetail::new(cid, s)
                        }),
                );
            }
            subs.sort_by(|a, b| (a.cid, &a.sid).cmp(&(b.cid, &b.sid)));
        }
        let total = subs.len();
        Subsz {
            server_id: state.id.clone(),
            now: rfc3339(SystemTime::now()),
            num_subscriptions: stats.count,
            num_cache: stats.cache_entries,
            num_inserts: stats.inserts,
            num_removes: stats.removes,
            num_matches: stats.matches,
            cache_hit_rate: if stats.matches == 0 {
                0.0
            } else {
                stats.cache_hits as f64 / stats.matches as f64
            },
            max_fanout: stats.max_fanout,
            avg_fanout: stats.avg_fanout,
            total,
            offset: query.offset,
            limit: query.limit,
            subscriptions_list: subs
                .into_iter()
                .skip(query.offset)
                .take(query.limit)
                .collect(),
        }
    }
}
