//! One running consumer: what it has delivered, what is pending, waiting pull requests, and
//! the delivery loop shared by pull and push.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ack::{self, AckKind, AckSubject};
use super::config::{
    go_duration, AckPolicy, ConsumerConfig, ConsumerInfo, ReplayPolicy, SequenceInfo,
};
use super::persist::{Saved, SavedPending, StateLog};
use super::pull::{status, with_pending, PullRequest};
use super::source::MsgSource;
use super::Outbox;
use crate::config::Retention;
use crate::util::{now_nanos, rfc3339};
use crate::StoredMsg;

/// Push flow control: a `100 FlowControl Request` goes out once this many bytes are
/// unconfirmed, and delivery stops at twice as many until the client answers.
pub(crate) const FC_BYTES: u64 = 512 * 1024;
/// Most messages one delivery pass hands out before yielding to the connection (see `pump`).
const PUMP_MSGS: u32 = 256;
/// Most bytes one delivery pass hands out before yielding.
const PUMP_BYTES: u64 = 1 << 20;
/// How often a push consumer re-checks its deliver subject's interest without being told.
const INTEREST_POLL: Duration = Duration::from_millis(250);
/// Right after a push consumer is created, clients subscribe to its deliver subject (async-nats
/// ordered consumers, KV watchers, history, keys): until [`FAST_POLL_FOR`] has passed, interest
/// is looked for this often, so the first deliveries do not wait for [`INTEREST_POLL`].
const FAST_POLL: Duration = Duration::from_millis(5);
const FAST_POLL_FOR: Duration = Duration::from_secs(2);

struct Pend {
    cseq: u64,
    dc: u64,
    /// Wall-clock time of the last delivery (ns).
    ts: i64,
    /// When it is redelivered without an ack (None: queued for redelivery or given up).
    deadline: Option<Instant>,
}

struct Waiting {
    reply: Arc<str>,
    batch: u64,
    /// Bytes left (0: no limit).
    max_bytes: u64,
    limited: bool,
    expires: Option<Instant>,
    hb: Option<Duration>,
    next_hb: Option<Instant>,
    /// `no_wait` with `expires` and nothing to deliver at first: it waits, but ends
    /// (`404 No Messages`) as soon as it has had something, as nats-server does.
    one_shot: bool,
    /// Messages delivered to it so far.
    delivered: u64,
}

/// A message to publish once the state that produced it is written.
pub(crate) struct Out {
    /// Shared, as a pass sends many messages to one place.
    to: Arc<str>,
    /// The subject subscribers see (deliveries keep their original subject).
    subject: Option<String>,
    reply: Option<String>,
    headers: Option<bytes::Bytes>,
    payload: bytes::Bytes,
}

pub(crate) struct Inner {
    pub config: ConsumerConfig,
    /// The stream's retention when the consumer was created or loaded.
    pub retention: Retention,
    /// Next stream sequence to look at for new messages.
    next_seq: u64,
    /// Last-per-subject sequences still to deliver first.
    lps: BTreeSet<u64>,
    delivered_s: u64,
    delivered_c: u64,
    floor_s: u64,
    floor_c: u64,
    last_delivery: i64,
    last_ack: i64,
    pending: BTreeMap<u64, Pend>,
    deadlines: BTreeSet<(Instant, u64)>,
    redeliver: BTreeSet<u64>,
    num_pending: u64,
    /// Highest sequence the stream reported durable.
    pub last_stored: u64,
    waiting: VecDeque<Waiting>,
    interest: bool,
    last_push: Instant,
    fc: Option<(String, u64)>,
    fc_bytes: u64,
    replay: Option<(Instant, i64)>,
    replay_at: Option<Instant>,
    inactive_since: Option<Instant>,
    /// Until when a push consumer without interest polls for it at [`FAST_POLL`].
    fast_poll_until: Instant,
    log: StateLog,
    /// The log holds acks that no commit has written yet; the task is woken to write them.
    write_due: bool,
    pub deleted: bool,
}

/// What the timer should do next.
pub(crate) enum Tick {
    At(Instant),
    Delete,
    Stop,
}

pub(crate) struct Consumer {
    pub stream: Arc<dyn MsgSource>,
    pub name: String,
    pub created: i64,
    outbox: Arc<dyn Outbox>,
    inner: Mutex<Inner>,
    pub wake: Notify,
}

/// Where delivery starts for a new consumer.
pub(crate) struct Start {
    pub next_seq: u64,
    pub lps: BTreeSet<u64>,
}

fn count_from(src: &dyn MsgSource, filters: &[String], start: u64) -> u64 {
    let st = src.state();
    if st.msgs == 0 || start > st.last_seq {
        return 0;
    }
    if start <= st.first_seq {
        return if filters.is_empty() {
            st.msgs
        } else {
            filters
                .iter()
                .map(|f| src.subject_counts(Some(f)).values().sum::<u64>())
                .sum()
        };
    }
    let mut n = 0;
    let fs: Vec<Option<&str>> = if filters.is_empty() {
        vec![None]
    } else {
        filters.iter().map(|f| Some(f.as_str())).collect()
    };
    for f in fs {
        let mut at = start;
        while let Ok(Some(m)) = src.get_next(at, f) {
            n += 1;
            at = m.seq + 1;
        }
    }
    n
}

impl Consumer {
    pub fn new(
        stream: Arc<dyn MsgSource>,
        outbox: Arc<dyn Outbox>,
        config: ConsumerConfig,
        created: i64,
        start: Start,
        saved: Option<Saved>,
        log: StateLog,
    ) -> Consumer {
        let now = Instant::now();
        let wall = now_nanos();
        let st = stream.state();
        let retention = stream.config().retention;
        let filters = config.filters();
        let mut m = Inner {
            retention,
            next_seq: start.next_seq.max(1),
            lps: start.lps,
            delivered_s: start.next_seq.saturating_sub(1),
            delivered_c: 0,
            floor_s: 0,
            floor_c: 0,
            last_delivery: 0,
            last_ack: 0,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            redeliver: BTreeSet::new(),
            num_pending: 0,
            last_stored: st.last_seq,
            waiting: VecDeque::new(),
            interest: false,
            last_push: now,
            fc: None,
            fc_bytes: 0,
            replay: None,
            replay_at: None,
            inactive_since: None,
            fast_poll_until: now + FAST_POLL_FOR,
            log,
            write_due: false,
            deleted: false,
            config,
        };
        if let Some(first) = m.lps.first() {
            m.delivered_s = first - 1;
        }
        if let Some(s) = saved {
            m.delivered_s = s.delivered_s;
            m.delivered_c = s.delivered_c;
            m.next_seq = s.delivered_s + 1;
            m.lps.retain(|q| *q > s.delivered_s);
            for (seq, p) in s.pending {
                // Redeliver after what is left of the ack wait, measured in wall-clock time
                // since the delivery before the restart.
                let wait = m.config.redelivery_delay(p.dc).as_nanos() as i64;
                let left = (p.ts + wait - wall).max(0) as u64;
                let deadline = now + Duration::from_nanos(left);
                m.deadlines.insert((deadline, seq));
                m.pending.insert(
                    seq,
                    Pend {
                        cseq: p.cseq,
                        dc: p.dc,
                        ts: p.ts,
                        deadline: Some(deadline),
                    },
                );
            }
        } else {
            m.log.position(m.delivered_s, 0);
            let _ = m.log.flush();
        }
        m.floor_s = m.delivered_s;
        m.update_floor();
        if m.floor_c == 0 && m.pending.is_empty() {
            m.floor_c = m.delivered_c;
        }
        m.num_pending = count_from(&*stream, &filters, m.next_seq) + m.lps.len() as u64;
        Consumer {
            name: m.config.name.clone(),
            stream,
            created,
            outbox,
            inner: Mutex::new(m),
            wake: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, outs: Vec<Out>) {
        if outs.is_empty() {
            return;
        }
        let batch: Vec<super::Delivery<'_>> = outs
            .iter()
            .map(|o| super::Delivery {
                to: &o.to,
                subject: o.subject.as_deref(),
                reply: o.reply.as_deref(),
                headers: o.headers.as_deref(),
                payload: &o.payload,
            })
            .collect();
        self.outbox.deliver_all(&batch);
    }

    /// Writes the log, then publishes: nothing goes out before the state recording it is
    /// written. Publishing happens under the consumer lock so deliveries stay in order.
    fn commit(&self, m: &mut Inner, outs: Vec<Out>) {
        m.write_due = false;
        if let Err(e) = m.log.flush() {
            tracing::error!(stream = %self.stream.name(), consumer = %self.name, error = %e, "consumer state write failed");
        }
        if m.log.wants_compaction(m.pending.len()) {
            let snap = m.snapshot();
            if let Err(e) = m.log.compact(&snap) {
                tracing::error!(consumer = %self.name, error = %e, "consumer state compaction failed");
            }
        }
        self.send(outs);
    }

    /// The info JSON.
    pub fn info(&self) -> ConsumerInfo {
        let mut m = self.lock();
        // Requests whose inbox lost its subscriber no longer count as waiting.
        m.waiting.retain(|w| self.outbox.has_interest(&w.reply));
        // Messages the stream's limits removed from its head are no longer pending.
        let first = self.stream.state().first_seq;
        if self.trim_head(&mut m, first) {
            self.commit(&mut m, Vec::new());
        }
        let wall = now_nanos();
        let pause = m.config.pause_until_nanos();
        let paused = pause > wall;
        let seqinfo = |c, s, at: i64| SequenceInfo {
            consumer_seq: c,
            stream_seq: s,
            last_active: (at != 0).then(|| rfc3339(at)),
        };
        ConsumerInfo {
            stream_name: self.stream.name().to_string(),
            name: self.name.clone(),
            created: rfc3339(self.created),
            config: m.config.clone(),
            delivered: seqinfo(m.delivered_c, m.delivered_s, m.last_delivery),
            ack_floor: seqinfo(m.floor_c, m.floor_s, m.last_ack),
            num_ack_pending: m.pending.len() as u64,
            num_redelivered: m.pending.values().filter(|p| p.dc > 1).count() as u64,
            num_waiting: m.waiting.len() as u64,
            num_pending: m.num_pending,
            push_bound: m.config.is_push() && m.interest,
            paused,
            pause_remaining: paused.then_some(pause - wall),
            ts: rfc3339(wall),
        }
    }

    /// Replaces the configuration (an allowed update).
    pub fn set_config(&self, config: ConsumerConfig) {
        let mut m = self.lock();
        let refilter = config.filters() != m.config.filters();
        m.config = config;
        if refilter {
            let filters = m.config.filters();
            m.num_pending = count_from(&*self.stream, &filters, m.next_seq) + m.lps.len() as u64;
        }
        drop(m);
        self.kick();
    }

    /// Delivers what can be delivered now and re-arms the timer.
    pub fn kick(&self) {
        let mut m = self.lock();
        if m.deleted {
            return;
        }
        let outs = self.pump(&mut m, Instant::now());
        self.commit(&mut m, outs);
        drop(m);
        self.wake.notify_one();
    }

    /// A new durable message `seq` on `subject` (None: unknown).
    pub fn stored(&self, seq: u64, subject: Option<&str>) -> bool {
        let mut m = self.lock();
        let matches = subject.is_none_or(|s| m.config.matches(s));
        if seq > m.last_stored {
            // A store completes appends in sequence order, but their reports can arrive out of
            // order (publishers settle their own): once `seq` is durable, everything below it
            // is, so the messages between are counted now and their late reports ignored.
            let from = (m.last_stored + 1).max(m.next_seq);
            if from < seq {
                let between = self.count_stored(&m.config, from, seq - 1);
                m.num_pending += between;
            }
            m.last_stored = seq;
            if matches && seq >= m.next_seq {
                m.num_pending += 1;
            }
        }
        drop(m);
        self.kick();
        matches
    }

    /// Stored messages in `from..=to` that `config` selects (a short range: reports that
    /// overtook others).
    fn count_stored(&self, config: &ConsumerConfig, from: u64, to: u64) -> u64 {
        let mut n = 0;
        let mut at = from;
        while at <= to {
            let run = self
                .stream
                .get_run(at, None, (to - at + 1) as usize)
                .unwrap_or_default();
            let Some(last) = run.last().map(|m| m.seq) else {
                break;
            };
            n += run
                .iter()
                .filter(|m| m.seq <= to && config.matches(&m.subject))
                .count() as u64;
            at = last + 1;
        }
        n
    }

    /// True if the message `seq` on `subject` is still needed by this consumer (interest
    /// retention): it matches and is not yet delivered or still pending.
    pub fn needs(&self, seq: u64, subject: &str) -> bool {
        let m = self.lock();
        m.config.matches(subject)
            && (seq > m.delivered_s || m.pending.contains_key(&seq) || m.lps.contains(&seq))
    }

    /// The lowest sequence this consumer may still need.
    pub fn floor(&self) -> u64 {
        self.lock().floor_s
    }

    /// After a purge: drop pending messages that are gone, recount.
    pub fn purged(&self) {
        self.resync(true)
    }

    /// After messages were deleted from the stream (`STREAM.MSG.DELETE`): drop pending acks
    /// of the deleted ones, recount.
    pub fn removed(&self) {
        self.resync(false)
    }

    /// Drops what the stream no longer has and recounts; after a purge, what was purged
    /// ahead of the consumer counts as delivered (as nats-server reports it).
    fn resync(&self, purge: bool) {
        let mut m = self.lock();
        let st = self.stream.state();
        let gone: Vec<u64> = m
            .pending
            .keys()
            .copied()
            .filter(|q| *q < st.first_seq || matches!(self.stream.get(*q), Ok(None)))
            .collect();
        for q in gone {
            m.forget(q);
        }
        m.lps.retain(|q| *q >= st.first_seq);
        if m.next_seq < st.first_seq {
            m.next_seq = st.first_seq;
            if purge {
                m.delivered_s = m.delivered_s.max(st.first_seq - 1);
            }
        }
        m.update_floor();
        let filters = m.config.filters();
        m.num_pending = count_from(&*self.stream, &filters, m.next_seq) + m.lps.len() as u64;
        let snap = m.snapshot();
        if let Err(e) = m.log.compact(&snap) {
            tracing::error!(consumer = %self.name, error = %e, "consumer state write failed");
        }
        drop(m);
        self.kick();
    }

    /// Forgets what lies below the stream's first sequence `first` (removed by limits):
    /// pending acks, last-per-subject starts, undelivered messages (recounted). True if the
    /// log has something to write.
    fn trim_head(&self, m: &mut Inner, first: u64) -> bool {
        let gone: Vec<u64> = m.pending.range(..first).map(|(k, _)| *k).collect();
        for q in &gone {
            m.log.acked(*q);
            m.forget(*q);
        }
        let before = m.lps.len();
        m.lps.retain(|q| *q >= first);
        let lps_gone = (before - m.lps.len()) as u64;
        if m.next_seq < first {
            m.next_seq = first;
            let filters = m.config.filters();
            m.num_pending = count_from(&*self.stream, &filters, first) + m.lps.len() as u64;
        } else {
            m.num_pending = m.num_pending.saturating_sub(lps_gone);
        }
        if !gone.is_empty() {
            m.update_floor();
        }
        !gone.is_empty()
    }

    /// Server shutdown: writes what the log holds and stops the consumer (its state stays).
    pub fn shut_down(&self) {
        let mut m = self.lock();
        if let Err(e) = m.log.flush() {
            tracing::error!(stream = %self.stream.name(), consumer = %self.name, error = %e, "consumer state write failed");
        }
        m.deleted = true;
        drop(m);
        self.wake.notify_one();
    }

    /// Stops the consumer; waiting pull requests get `409 Consumer Deleted`.
    pub fn stop(&self) {
        let mut m = self.lock();
        m.deleted = true;
        let outs = m
            .waiting
            .drain(..)
            .map(|w| Out::status(w.reply, status("409 Consumer Deleted", &[])))
            .collect();
        self.send(outs);
        drop(m);
        self.wake.notify_one();
    }

    /// A pull request (`CONSUMER.MSG.NEXT`) answered on `reply`.
    pub fn pull(&self, reply: &str, payload: &[u8]) {
        let now = Instant::now();
        let req = PullRequest::parse(payload);
        let mut m = self.lock();
        if m.deleted {
            return;
        }
        let c = &m.config;
        let reject = if c.is_push() {
            Some("409 Consumer is push based".to_string())
        } else if c.max_batch > 0 && req.batch > c.max_batch as u64 {
            Some(format!("409 Exceeded MaxRequestBatch of {}", c.max_batch))
        } else if c.max_expires > 0
            && req
                .expires
                .is_some_and(|e| e.as_nanos() > c.max_expires as u128)
        {
            Some(format!(
                "409 Exceeded MaxRequestExpires of {}",
                go_duration(Duration::from_nanos(c.max_expires as u64))
            ))
        } else if c.max_bytes > 0 && req.max_bytes > c.max_bytes as u64 {
            Some(format!(
                "409 Exceeded MaxRequestMaxBytes of {}",
                c.max_bytes
            ))
        } else if req
            .idle_heartbeat
            .is_some_and(|hb| req.expires.is_none_or(|e| hb > e / 2))
        {
            Some("400 Bad Request - heartbeat value too large".to_string())
        } else if m.waiting.len() as i64 >= c.max_waiting.max(1) {
            Some("409 Exceeded MaxWaiting".to_string())
        } else {
            None
        };
        if let Some(line) = reject {
            self.send(vec![Out::status(reply.to_string(), status(&line, &[]))]);
            return;
        }
        if req.expired {
            let s = with_pending("408 Request Timeout", req.batch, req.max_bytes);
            self.send(vec![Out::status(reply.to_string(), s)]);
            return;
        }
        m.inactive_since = None;
        m.waiting.push_back(Waiting {
            reply: reply.into(),
            batch: req.batch,
            max_bytes: req.max_bytes,
            limited: req.max_bytes > 0,
            expires: req.expires.map(|e| now + e),
            hb: req.idle_heartbeat,
            next_hb: req.idle_heartbeat.map(|h| now + h),
            one_shot: false,
            delivered: 0,
        });
        let mut outs = self.pump(&mut m, now);
        if req.no_wait {
            if let Some(i) = m.waiting.iter().rposition(|w| &*w.reply == reply) {
                if req.expires.is_some() && m.waiting[i].delivered == 0 {
                    m.waiting[i].one_shot = true;
                } else {
                    let w = m.waiting.remove(i).expect("index");
                    outs.push(Out::status(w.reply, status("404 No Messages", &[])));
                }
            }
        }
        self.commit(&mut m, outs);
        drop(m);
        self.wake.notify_one();
    }

    /// An acknowledgement; returns the sequences no longer pending (for retention). With
    /// `defer_reply`, a double ack that completed some sequences is not confirmed here: the
    /// caller confirms it once it has removed them from the stream.
    pub fn ack(
        &self,
        a: &AckSubject<'_>,
        kind: AckKind,
        reply: Option<&str>,
        defer_reply: bool,
    ) -> Vec<u64> {
        let now = Instant::now();
        let mut m = self.lock();
        if m.deleted {
            return Vec::new();
        }
        m.inactive_since = None;
        let seq = a.stream_seq;
        let mut done = Vec::new();
        let mut outs = Vec::new();
        let mut next_req = None;
        let nak = matches!(kind, AckKind::Nak(_));
        match kind {
            AckKind::Ack | AckKind::Term | AckKind::Next(_) => {
                let term = kind == AckKind::Term;
                match m.config.ack_policy {
                    AckPolicy::None => {}
                    AckPolicy::All if !term => {
                        done = m.pending.range(..=seq).map(|(k, _)| *k).collect();
                        if !done.is_empty() {
                            m.log.acked_upto(seq);
                        }
                    }
                    _ => {
                        if m.pending.contains_key(&seq) {
                            m.log.acked(seq);
                            done.push(seq);
                        }
                    }
                }
                if term {
                    if let Some(p) = m.pending.get(&seq) {
                        outs.push(self.advisory_term(seq, p.cseq, p.dc));
                    }
                }
                for q in &done {
                    m.forget(*q);
                }
                if !done.is_empty() {
                    m.last_ack = now_nanos();
                    m.update_floor();
                }
                if let AckKind::Next(body) = kind {
                    next_req = reply.map(|r| (r.to_string(), body));
                }
            }
            AckKind::Nak(delay) => {
                if m.pending.contains_key(&seq) {
                    m.unschedule(seq);
                    match delay {
                        Some(d) => m.schedule(seq, now + d),
                        None => {
                            m.redeliver.insert(seq);
                        }
                    }
                }
            }
            AckKind::Progress => {
                if let Some(dc) = m.pending.get(&seq).map(|p| p.dc) {
                    if !m.redeliver.contains(&seq) {
                        m.unschedule(seq);
                        let d = m.config.redelivery_delay(dc);
                        m.schedule(seq, now + d);
                    }
                }
            }
        }
        outs.extend(self.pump(&mut m, now));
        // The ack is written before it is confirmed (double ack) by the commit below.
        if next_req.is_none() && (!defer_reply || done.is_empty()) {
            if let Some(r) = reply {
                outs.push(Out::status(r.to_string(), Vec::new()).without_headers());
            }
        }
        // A plain ack with nothing to send stays in the log's buffer: the wake below has the
        // consumer's task write it right after, in one write(2) with the rest of a burst (a
        // client acks a batch in one packet). Nothing waits on it: a crash before that write
        // is a crash before the ack was read, and the message comes back, as it would then.
        // The task is woken once per burst to write it, and for a nak, whose redelivery may
        // be due before the task's next timer.
        let wake = nak || (outs.is_empty() && !m.write_due);
        // A double ack is confirmed only once written, also when the confirmation is sent by
        // the caller (after the deletions it set off).
        if outs.is_empty() && reply.is_none() {
            m.write_due = true;
        } else {
            self.commit(&mut m, outs);
        }
        drop(m);
        if let Some((r, body)) = next_req {
            self.pull(&r, &body);
        }
        if wake {
            self.wake.notify_one();
        }
        done
    }

    /// A flow control reply arrived on `subject`.
    pub fn flow_control(&self, subject: &str) -> bool {
        let mut m = self.lock();
        match &m.fc {
            Some((s, bytes)) if s == subject => {
                let b = *bytes;
                m.fc_bytes = m.fc_bytes.saturating_sub(b);
                m.fc = None;
                drop(m);
                self.kick();
                true
            }
            _ => false,
        }
    }

    /// Runs what is due (redeliveries, expiries, heartbeats, inactivity) and delivers.
    pub fn tick(&self) -> Tick {
        let now = Instant::now();
        let mut m = self.lock();
        if m.deleted {
            return Tick::Stop;
        }
        let mut outs = Vec::new();
        // Ack wait expiries.
        while let Some(&(at, seq)) = m.deadlines.first() {
            if at > now {
                break;
            }
            m.deadlines.pop_first();
            let Some(p) = m.pending.get_mut(&seq) else {
                continue;
            };
            p.deadline = None;
            let dc = p.dc;
            let max = m.config.max_deliver;
            if max > 0 && dc >= max as u64 {
                // Given up: no more deliveries; it stops counting as pending. The ack floor
                // stays until the next ack moves it (as nats-server reports it).
                outs.push(self.advisory_max_deliver(seq, dc));
                m.log.acked(seq);
                m.forget(seq);
            } else {
                m.redeliver.insert(seq);
            }
        }
        // Pull request expiries and heartbeats.
        let (dc, ds) = (m.delivered_c, m.delivered_s);
        let mut keep = VecDeque::new();
        for mut w in m.waiting.drain(..) {
            if w.expires.is_some_and(|e| e <= now) {
                outs.push(Out::status(
                    w.reply,
                    with_pending("408 Request Timeout", w.batch, w.max_bytes),
                ));
                continue;
            }
            if let (Some(hb), Some(at)) = (w.hb, w.next_hb) {
                if at <= now {
                    outs.push(Out::status(w.reply.clone(), heartbeat(dc, ds, None)));
                    w.next_hb = Some(now + hb);
                }
            }
            keep.push_back(w);
        }
        m.waiting = keep;
        // Push: interest.
        if m.config.is_push() {
            m.interest = self.outbox.has_interest(&m.config.deliver_subject);
        }
        // Inactivity.
        let active = if m.config.is_push() {
            m.interest
        } else {
            !m.waiting.is_empty()
        };
        let threshold = m.config.inactive_threshold;
        let mut next: Vec<Instant> = Vec::new();
        if active || threshold <= 0 {
            m.inactive_since = None;
        } else {
            let since = *m.inactive_since.get_or_insert(now);
            let until = since + Duration::from_nanos(threshold as u64);
            if until <= now {
                drop(m);
                self.send(outs);
                return Tick::Delete;
            }
            next.push(until);
        }
        m.replay_at = None;
        outs.extend(self.pump(&mut m, now));
        // Push idle heartbeats, only when the pump delivered nothing (a subscriber that
        // just appeared gets the messages first, as from nats-server).
        let hb = m.config.idle_heartbeat;
        if m.config.is_push()
            && hb > 0
            && m.interest
            && now >= m.last_push + Duration::from_nanos(hb as u64)
        {
            let stalled = m.fc.as_ref().map(|f| f.0.clone());
            let (dc, ds) = (m.delivered_c, m.delivered_s);
            outs.push(Out::status(
                m.config.deliver_subject.clone(),
                heartbeat(dc, ds, stalled.as_deref()),
            ));
            m.last_push = now;
        }
        self.commit(&mut m, outs);
        // When to look again.
        next.extend(m.deadlines.first().map(|d| d.0));
        next.extend(m.waiting.iter().filter_map(|w| w.expires));
        next.extend(m.waiting.iter().filter_map(|w| w.next_hb));
        next.extend(m.replay_at);
        if m.config.is_push() {
            let poll = if !m.interest && now < m.fast_poll_until {
                FAST_POLL
            } else {
                INTEREST_POLL
            };
            next.push(now + poll);
            if m.config.idle_heartbeat > 0 {
                next.push(m.last_push + Duration::from_nanos(m.config.idle_heartbeat as u64));
            }
        }
        let pause = m.config.pause_until_nanos() - now_nanos();
        if pause > 0 {
            next.push(now + Duration::from_nanos(pause as u64));
        }
        Tick::At(
            next.into_iter()
                .min()
                .unwrap_or(now + Duration::from_secs(3600)),
        )
    }

    /// The delivery loop: while there is somewhere to deliver and something to deliver.
    fn pump(&self, m: &mut Inner, now: Instant) -> Vec<Out> {
        let mut outs = Vec::new();
        // Bytes handed out by this call: past PUMP_BYTES (or PUMP_MSGS messages) it stops and
        // asks the driver to come back, so a large backlog goes out in bounded pieces (the
        // connection's buffer drains between them) instead of all at once from memory.
        let mut budget = (PUMP_MSGS, PUMP_BYTES);
        let mut moved = false;
        if m.deleted || m.config.pause_until_nanos() > now_nanos() {
            return outs;
        }
        let push = m.config.is_push();
        if push {
            m.interest = self.outbox.has_interest(&m.config.deliver_subject);
        }
        let acking = m.config.ack_policy != AckPolicy::None;
        let mut ahead: VecDeque<StoredMsg> = VecDeque::new();
        let mut deliver: Option<Arc<str>> = None;
        let mut listening: Option<Arc<str>> = None;
        // One clock reading per pass (a pass takes microseconds), and none for a pass that
        // delivers nothing (one runs after every ack).
        let mut wall = 0;
        loop {
            if budget.0 == 0 || budget.1 == 0 {
                self.wake.notify_one();
                break;
            }
            // Somewhere to deliver.
            if push {
                if !m.interest || (m.config.flow_control && m.fc_bytes >= 2 * FC_BYTES) {
                    break;
                }
            } else {
                while let Some(w) = m.waiting.front() {
                    // Checked once per request and pass, not per message.
                    if listening.as_ref().is_some_and(|l| Arc::ptr_eq(l, &w.reply))
                        || self.outbox.has_interest(&w.reply)
                    {
                        listening = Some(w.reply.clone());
                        break;
                    }
                    m.waiting.pop_front();
                }
                if m.waiting.is_empty() {
                    break;
                }
            }
            // Something to deliver: redeliveries first.
            let (msg, redelivery) = if let Some(seq) = m.redeliver.pop_first() {
                match self.stream.get(seq) {
                    Ok(Some(msg)) => (msg, true),
                    _ => {
                        m.log.acked(seq);
                        m.forget(seq);
                        m.update_floor();
                        continue;
                    }
                }
            } else {
                let max_ack = m.config.max_ack_pending;
                if acking && max_ack > 0 && m.pending.len() as i64 >= max_ack {
                    break;
                }
                // As many as this pass can hand out, so a run read ahead is rarely wasted;
                // worked out only when a run is to be read.
                let mut want = budget.0 as usize;
                if ahead.back().is_none_or(|a| a.seq < m.next_seq) {
                    if !push {
                        want = want.min(m.waiting.iter().map(|w| w.batch as usize).sum());
                    }
                    if acking && max_ack > 0 {
                        want = want.min((max_ack as usize).saturating_sub(m.pending.len()));
                    }
                }
                let Some(msg) = self.next_new(m, &mut ahead, want) else {
                    break;
                };
                if m.config.replay_policy == ReplayPolicy::Original {
                    let (base, ts0) = *m.replay.get_or_insert((now, msg.timestamp));
                    let due = base + Duration::from_nanos((msg.timestamp - ts0).max(0) as u64);
                    if due > now {
                        m.replay_at = Some(due);
                        break;
                    }
                }
                (msg, false)
            };
            let seq = msg.seq;
            let dc = if redelivery {
                m.pending.get(&seq).map_or(1, |p| p.dc + 1)
            } else {
                1
            };
            let cseq = m.delivered_c + 1;
            let pending_after = if redelivery {
                m.num_pending
            } else {
                m.num_pending.saturating_sub(1)
            };
            let reply = ack::reply_subject(
                self.stream.name(),
                &self.name,
                dc,
                seq,
                cseq,
                msg.timestamp,
                pending_after,
            );
            let (headers, payload) = if m.config.headers_only {
                (
                    Some(add_header(&msg.headers, "Nats-Msg-Size", msg.payload.len()).into()),
                    bytes::Bytes::new(),
                )
            } else {
                (
                    (!msg.headers.is_empty()).then(|| msg.headers.clone()),
                    msg.payload.clone(),
                )
            };
            let size = (msg.subject.len()
                + reply.len()
                + headers.as_ref().map_or(0, |h| h.len())
                + payload.len()) as u64;
            let to = if push {
                deliver
                    .get_or_insert_with(|| m.config.deliver_subject.as_str().into())
                    .clone()
            } else {
                let w = m.waiting.front_mut().expect("checked");
                if w.limited && size > w.max_bytes {
                    let w = m.waiting.pop_front().expect("front");
                    outs.push(Out::status(
                        w.reply,
                        with_pending("409 Message Size Exceeds MaxBytes", w.batch, w.max_bytes),
                    ));
                    if redelivery {
                        m.redeliver.insert(seq);
                    } else if !m.lps.contains(&seq) {
                        ahead.push_front(msg);
                    }
                    continue;
                }
                w.reply.clone()
            };
            // Deliver.
            if wall == 0 {
                wall = now_nanos();
            }
            m.delivered_c = cseq;
            m.last_delivery = wall;
            if !redelivery {
                m.num_pending = pending_after;
                m.delivered_s = m.delivered_s.max(seq);
                if !m.lps.remove(&seq) {
                    m.next_seq = seq + 1;
                }
            }
            if acking {
                m.log.delivered(seq, cseq, dc, wall);
            } else {
                // Nothing is pending without acks: the position, logged once per pass below,
                // is all a restart needs.
                moved = true;
            }
            if acking {
                let delay = m.config.redelivery_delay(dc);
                m.unschedule(seq);
                m.pending.insert(
                    seq,
                    Pend {
                        cseq,
                        dc,
                        ts: wall,
                        deadline: None,
                    },
                );
                m.schedule(seq, now + delay);
            } else {
                m.update_floor();
            }
            budget = (budget.0 - 1, budget.1.saturating_sub(size));
            outs.push(Out {
                to,
                subject: Some(msg.subject),
                reply: Some(reply),
                headers,
                payload,
            });
            if push {
                m.last_push = now;
                if m.config.flow_control {
                    m.fc_bytes += size;
                    if m.fc.is_none() && m.fc_bytes >= FC_BYTES {
                        let subj = format!(
                            "$JS.FC.{}.{}.{}",
                            self.stream.name(),
                            self.name,
                            super::random_id(4)
                        );
                        outs.push(Out {
                            to: m.config.deliver_subject.as_str().into(),
                            subject: None,
                            reply: Some(subj.clone()),
                            headers: Some(status("100 FlowControl Request", &[]).into()),
                            payload: bytes::Bytes::new(),
                        });
                        m.fc = Some((subj, m.fc_bytes));
                    }
                }
            } else {
                let hb = m.waiting.front().and_then(|w| w.hb);
                let w = m.waiting.front_mut().expect("checked");
                w.batch -= 1;
                w.delivered += 1;
                w.max_bytes = w.max_bytes.saturating_sub(size);
                w.next_hb = hb.map(|h| now + h);
                if w.batch == 0 {
                    m.waiting.pop_front();
                }
            }
        }
        if moved {
            let (s, c) = (m.delivered_s, m.delivered_c);
            m.log.position(s, c);
        }
        Self::end_one_shots(m, &mut outs);
        outs
    }

    /// Ends the one-shot (`no_wait` with `expires`) requests that have had messages.
    fn end_one_shots(m: &mut Inner, outs: &mut Vec<Out>) {
        if !m.waiting.iter().any(|w| w.one_shot && w.delivered > 0) {
            return;
        }
        let (done, keep): (VecDeque<Waiting>, VecDeque<Waiting>) = m
            .waiting
            .drain(..)
            .partition(|w| w.one_shot && w.delivered > 0);
        m.waiting = keep;
        for w in done {
            outs.push(Out::status(w.reply, status("404 No Messages", &[])));
        }
    }

    /// The next undelivered message for this consumer that the stream reported durable.
    ///
    /// `ahead` holds messages read ahead in this pass: every match from `next_seq` up to its
    /// last entry, in order (a message taken but not delivered is put back at its front). It
    /// is refilled with runs of up to `want` messages, read at once.
    fn next_new(
        &self,
        m: &mut Inner,
        ahead: &mut VecDeque<StoredMsg>,
        want: usize,
    ) -> Option<StoredMsg> {
        if let Some(&seq) = m.lps.first() {
            match self.stream.get(seq) {
                Ok(Some(msg)) => return Some(msg),
                _ => {
                    m.lps.remove(&seq);
                    m.num_pending = m.num_pending.saturating_sub(1);
                    return self.next_new(m, ahead, want);
                }
            }
        }
        if m.next_seq > m.last_stored {
            return None;
        }
        while ahead.front().is_some_and(|a| a.seq < m.next_seq) {
            ahead.pop_front();
        }
        if let Some(msg) = ahead.pop_front() {
            return (msg.seq <= m.last_stored).then_some(msg);
        }
        let filters = m.config.filters();
        let found = if filters.len() <= 1 {
            let filter = filters.first().map(String::as_str);
            let run = self.stream.get_run(m.next_seq, filter, want);
            ahead.extend(run.ok().unwrap_or_default());
            ahead.pop_front()
        } else {
            filters
                .iter()
                .filter_map(|f| self.stream.get_next(m.next_seq, Some(f)).ok().flatten())
                .min_by_key(|msg| msg.seq)
        };
        match found {
            Some(msg) if msg.seq <= m.last_stored => Some(msg),
            Some(_) => None,
            None => {
                // Nothing left: whatever was counted was removed by limits.
                m.num_pending = 0;
                None
            }
        }
    }

    fn advisory_max_deliver(&self, seq: u64, dc: u64) -> Out {
        let body = serde_json::json!({
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "id": super::random_id(22),
            "timestamp": rfc3339(now_nanos()),
            "stream": self.stream.name(),
            "consumer": self.name,
            "stream_seq": seq,
            "deliveries": dc,
        });
        Out::advisory(
            format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
                self.stream.name(),
                self.name
            ),
            body,
        )
    }

    fn advisory_term(&self, seq: u64, cseq: u64, dc: u64) -> Out {
        let body = serde_json::json!({
            "type": "io.nats.jetstream.advisory.v1.terminated",
            "id": super::random_id(22),
            "timestamp": rfc3339(now_nanos()),
            "stream": self.stream.name(),
            "consumer": self.name,
            "consumer_seq": cseq,
            "stream_seq": seq,
            "deliveries": dc,
        });
        Out::advisory(
            format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.{}",
                self.stream.name(),
                self.name
            ),
            body,
        )
    }
}

/// `100 Idle Heartbeat` with the last delivered sequences (and the pending flow control
/// subject when stalled, so the client can answer it).
fn heartbeat(cseq: u64, sseq: u64, stalled: Option<&str>) -> Vec<u8> {
    let mut h = vec![
        ("Nats-Last-Consumer", cseq.to_string()),
        ("Nats-Last-Stream", sseq.to_string()),
    ];
    if let Some(s) = stalled {
        h.push(("Nats-Consumer-Stalled", s.to_string()));
    }
    status("100 Idle Heartbeat", &h)
}

fn add_header(block: &[u8], name: &str, value: usize) -> Vec<u8> {
    let mut h = if block.is_empty() {
        b"NATS/1.0\r\n\r\n".to_vec()
    } else {
        block.to_vec()
    };
    let at = h.len() - 2;
    h.splice(at..at, format!("{name}: {value}\r\n").into_bytes());
    h
}

impl Out {
    fn status(to: impl Into<Arc<str>>, headers: Vec<u8>) -> Out {
        Out {
            to: to.into(),
            subject: None,
            reply: None,
            headers: Some(headers.into()),
            payload: bytes::Bytes::new(),
        }
    }
    fn without_headers(mut self) -> Out {
        self.headers = None;
        self
    }
    fn advisory(to: String, body: serde_json::Value) -> Out {
        Out {
            to: to.into(),
            subject: None,
            reply: None,
            headers: None,
            payload: serde_json::to_vec(&body).expect("json").into(),
        }
    }
}

impl Inner {
    fn schedule(&mut self, seq: u64, at: Instant) {
        if let Some(p) = self.pending.get_mut(&seq) {
            p.deadline = Some(at);
            self.deadlines.insert((at, seq));
        }
    }
    fn unschedule(&mut self, seq: u64) {
        if let Some(p) = self.pending.get_mut(&seq) {
            if let Some(at) = p.deadline.take() {
                self.deadlines.remove(&(at, seq));
            }
        }
        self.redeliver.remove(&seq);
    }
    /// Removes `seq` from the pending set (not the log).
    fn forget(&mut self, seq: u64) {
        self.unschedule(seq);
        self.pending.remove(&seq);
    }
    fn update_floor(&mut self) {
        match self.pending.first_key_value() {
            Some((s, p)) => {
                self.floor_s = s - 1;
                self.floor_c = p.cseq.saturating_sub(1);
            }
            None => {
                self.floor_s = self.delivered_s;
                self.floor_c = self.delivered_c;
            }
        }
    }
    fn snapshot(&self) -> Saved {
        Saved {
            delivered_s: self.delivered_s,
            delivered_c: self.delivered_c,
            pending: self
                .pending
                .iter()
                .map(|(s, p)| {
                    (
                        *s,
                        SavedPending {
                            cseq: p.cseq,
                            dc: p.dc,
                            ts: p.ts,
                        },
                    )
                })
                .collect(),
        }
    }
}
