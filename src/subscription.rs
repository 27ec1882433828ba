//! A subscription: what the routing table stores and what a delivery needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::account::Forward;
use crate::outbound::Client;

/// One `SUB`, owned by its connection and shared with the routing table.
#[derive(Debug)]
pub struct Subscription {
    /// The subscribing connection.
    pub client: Arc<Client>,
    /// Subject or wildcard pattern (an owned copy, not a slice of a read buffer).
    pub subject: Bytes,
    /// Queue group, if any.
    pub queue: Option<Bytes>,
    /// The client's id for this subscription, echoed in every `MSG`.
    pub sid: Bytes,
    /// Set for an account import's forwarding subscription: what it matches is re-published
    /// into another account rather than written to `client`.
    pub forward: Option<Box<Forward>>,
    max: AtomicU64,
    delivered: AtomicU64,
}

/// Whether a message may go to a subscription with a delivery limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Deliver it.
    Deliver,
    /// Deliver it; it is the last one, so unsubscribe afterwards.
    DeliverLast,
    /// The limit is already reached.
    Skip,
}

impl Subscription {
    /// A subscription with no delivery limit.
    pub fn new(client: Arc<Client>, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Self {
        Subscription {
            client,
            subject: Bytes::copy_from_slice(subject),
            queue: queue.map(Bytes::copy_from_slice),
            sid: Bytes::copy_from_slice(sid),
            forward: None,
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// Limits the subscription to `max` messages in all (`UNSUB sid max`), counting those
    /// already delivered, as nats-server does; true when that many were delivered already,
    /// so it must go now.
    pub fn set_max(&self, max: u64) -> bool {
        self.max.store(max, Ordering::Relaxed);
        self.delivered.load(Ordering::Relaxed) >= max
    }

    /// Counts one delivery against the limit. Atomic, so concurrent publishers together never
    /// deliver more than the limit. Every delivery is counted, limited or not, because a later
    /// `UNSUB sid max` includes the messages already delivered.
    pub fn claim(&self) -> Claim {
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return Claim::Deliver;
        }
        match n.cmp(&max) {
            std::cmp::Ordering::Less => Claim::Deliver,
            std::cmp::Ordering::Equal => Claim::DeliverLast,
            // Past the limit: a racing UNSUB lowered it. Remove now, or no claim ever would.
            std::cmp::Ordering::Greater => Claim::Skip,
        }
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}
