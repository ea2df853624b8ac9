//! Which delivered messages are still unacknowledged, and which ones an `ACK` or `NACK`
//! covers: cumulative in `client` mode (the named message and every earlier one of that
//! subscription), single in `client-individual` mode.

use std::collections::{HashMap, VecDeque};

/// A subscription's acknowledgment mode (`ack` header of `SUBSCRIBE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// No `ACK` needed: a message counts as consumed once sent (the default).
    #[default]
    Auto,
    /// `ACK`/`NACK` are cumulative.
    Client,
    /// `ACK`/`NACK` name one message each.
    ClientIndividual,
}

impl AckMode {
    /// Parses the header value; a missing header is `auto`, an unknown value is `None`.
    pub fn parse(header: Option<&str>) -> Option<Self> {
        match header {
            None | Some("auto") => Some(Self::Auto),
            Some("client") => Some(Self::Client),
            Some("client-individual") => Some(Self::ClientIndividual),
            Some(_) => None,
        }
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Client => "client",
            Self::ClientIndividual => "client-individual",
        }
    }

    /// Whether messages of such a subscription carry an `ack` header and await an `ACK`.
    pub fn needs_ack(self) -> bool {
        self != Self::Auto
    }
}

/// What an `ACK` or `NACK` frame names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckTarget {
    /// STOMP 1.2: the `id` header, equal to the `ack` header of the `MESSAGE`.
    Id(String),
    /// STOMP 1.0 and 1.1: `message-id`, and from 1.1 the `subscription`.
    Message {
        /// The subscription (absent in 1.0: any subscription holding the message).
        subscription: Option<String>,
        /// The `message-id` of the `MESSAGE`.
        message_id: String,
    },
}

/// The messages one `ACK`/`NACK` settles, all on one subscription, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The subscription id.
    pub subscription: String,
    /// `message-id`s, in delivery order.
    pub message_ids: Vec<String>,
}

#[derive(Debug)]
struct Pending {
    mode: AckMode,
    /// (ack number, message id), ack numbers increasing.
    unacked: VecDeque<(u64, String)>,
}

/// Delivered-but-unacknowledged messages per subscription of one connection.
///
/// Every delivery on a `client`/`client-individual` subscription gets an ack number, unique
/// on the connection, sent as the `MESSAGE`'s `ack` header. Nothing is dropped on its own:
/// the adapter bounds growth by not delivering more to a subscription whose
/// [`AckTracker::unacked`] count is at its window (a prefetch limit).
#[derive(Debug, Default)]
pub struct AckTracker {
    next: u64,
    subs: HashMap<String, Pending>,
    /// How many subscriptions need acks (none: deliveries skip the lookup).
    acked_subs: usize,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a subscription (replacing any earlier one with that id).
    pub fn subscribe(&mut self, id: &str, mode: AckMode) {
        let old = self.subs.insert(
            id.to_owned(),
            Pending {
                mode,
                unacked: VecDeque::new(),
            },
        );
        self.count(old.as_ref(), -1);
        if mode.needs_ack() {
            self.acked_subs += 1;
        }
    }

    fn count(&mut self, p: Option<&Pending>, by: isize) {
        if p.is_some_and(|p| p.mode.needs_ack()) {
            self.acked_subs = self.acked_subs.saturating_add_signed(by);
        }
    }

    /// Stops tracking a subscription; returns its unacknowledged message ids (to redeliver
    /// elsewhere, for queues), oldest first.
    pub fn unsubscribe(&mut self, id: &str) -> Vec<String> {
        let removed = self.subs.remove(id);
        self.count(removed.as_ref(), -1);
        removed
            .map(|p| p.unacked.into_iter().map(|(_, m)| m).collect())
            .unwrap_or_default()
    }

    /// The mode of a tracked subscription.
    pub fn mode(&self, subscription: &str) -> Option<AckMode> {
        self.subs.get(subscription).map(|p| p.mode)
    }

    /// Records that `message_id` was sent on `subscription`. Returns the value of the
    /// `MESSAGE`'s `ack` header, or `None` for `auto` (and unknown) subscriptions, whose
    /// messages are not tracked.
    pub fn delivered(&mut self, subscription: &str, message_id: &str) -> Option<String> {
        self.delivered_with(subscription, || message_id.to_owned())
    }

    /// [`delivered`](Self::delivered) with the message id made only when it is kept.
    pub fn delivered_with(
        &mut self,
        subscription: &str,
        message_id: impl FnOnce() -> String,
    ) -> Option<String> {
        if self.acked_subs == 0 {
            return None;
        }
        let p = self.subs.get_mut(subscription)?;
        if !p.mode.needs_ack() {
            return None;
        }
        self.next += 1;
        p.unacked.push_back((self.next, message_id()));
        Some(self.next.to_string())
    }

    /// How many messages of `subscription` await an `ACK`.
    pub fn unacked(&self, subscription: &str) -> usize {
        self.subs.get(subscription).map_or(0, |p| p.unacked.len())
    }

    /// Which messages `target` covers, without settling them; `None` when it names no
    /// unacknowledged message.
    pub fn covers(&self, target: &AckTarget) -> Option<Acked> {
        let (sub, index) = self.find(target)?;
        let p = &self.subs[sub];
        let message_ids = match p.mode {
            AckMode::Client => p.unacked.range(..=index).map(|(_, m)| m.clone()).collect(),
            _ => vec![p.unacked[index].1.clone()],
        };
        Some(Acked {
            subscription: sub.to_owned(),
            message_ids,
        })
    }

    /// Settles what `target` covers (see [`AckTracker::covers`]) and returns it.
    pub fn settle(&mut self, target: &AckTarget) -> Option<Acked> {
        let (sub, index) = self.find(target)?;
        let sub = sub.to_owned();
        let p = self.subs.get_mut(&sub)?;
        let message_ids = match p.mode {
            AckMode::Client => p.unacked.drain(..=index).map(|(_, m)| m).collect(),
            _ => p
                .unacked
                .remove(index)
                .map(|(_, m)| m)
                .into_iter()
                .collect(),
        };
        Some(Acked {
            subscription: sub,
            message_ids,
        })
    }

    /// Everything still unacknowledged, per subscription (the connection is ending: queue
    /// messages go back for redelivery). Subscriptions stay tracked, now empty.
    pub fn drain(&mut self) -> Vec<Acked> {
        let mut out: Vec<Acked> = self
            .subs
            .iter_mut()
            .filter(|(_, p)| !p.unacked.is_empty())
            .map(|(id, p)| Acked {
                subscription: id.clone(),
                message_ids: p.unacked.drain(..).map(|(_, m)| m).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.subscription.cmp(&b.subscription));
        out
    }

    /// The subscription and position in its queue of the message `target` names.
    fn find(&self, target: &AckTarget) -> Option<(&str, usize)> {
        match target {
            AckTarget::Id(id) => {
                let n: u64 = id.parse().ok()?;
                self.subs.iter().find_map(|(sub, p)| {
                    p.unacked
                        .binary_search_by_key(&n, |(k, _)| *k)
                        .ok()
                        .map(|i| (sub.as_str(), i))
                })
            }
            AckTarget::Message {
                subscription,
                message_id,
            } => {
                fn in_sub<'a>(
                    (sub, p): (&'a String, &'a Pending),
                    message_id: &str,
                ) -> Option<(&'a str, usize)> {
                    p.unacked
                        .iter()
                        .position(|(_, m)| m == message_id)
                        .map(|i| (sub.as_str(), i))
                }
                match subscription {
                    Some(s) => in_sub(self.subs.get_key_value(s)?, message_id),
                    None => self.subs.iter().find_map(|e| in_sub(e, message_id)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(a: &Acked) -> Vec<&str> {
        a.message_ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn modes() {
        assert_eq!(AckMode::parse(None), Some(AckMode::Auto));
        assert_eq!(AckMode::parse(Some("client")), Some(AckMode::Client));
        assert_eq!(
            AckMode::parse(Some("client-individual")),
            Some(AckMode::ClientIndividual)
        );
        assert_eq!(AckMode::parse(Some("CLIENT")), None);
        for m in [AckMode::Auto, AckMode::Client, AckMode::ClientIndividual] {
            assert_eq!(AckMode::parse(Some(m.as_str())), Some(m));
        }
    }

    #[test]
    fn replacing_and_removing_subscriptions_keeps_tracking_right() {
        let mut t = AckTracker::new();
        t.subscribe("x", AckMode::Client);
        assert!(t.delivered("x", "m1").is_some());
        t.subscribe("x", AckMode::Auto);
        assert_eq!(t.delivered("x", "m2"), None);
        t.subscribe("y", AckMode::ClientIndividual);
        t.subscribe("x", AckMode::Client);
        assert_eq!(t.unsubscribe("y"), Vec::<String>::new());
        assert!(t.delivered("x", "m3").is_some(), "x still needs acks");
        assert_eq!(t.unsubscribe("x"), vec!["m3".to_owned()]);
        assert_eq!(t.delivered("x", "m4"), None);
        t.subscribe("z", AckMode::ClientIndividual);
        assert!(t.delivered("z", "m5").is_some());
    }

    #[test]
    fn cumulative_and_individual() {
        let mut t = AckTracker::new();
        t.subscribe("c", AckMode::Client);
        t.subscribe("i", AckMode::ClientIndividual);
        t.subscribe("a", AckMode::Auto);
        assert_eq!(t.delivered("a", "m0"), None);
        assert_eq!(t.delivered("nope", "m0"), None);
        let c1 = t.delivered("c", "m1").unwrap();
        let i2 = t.delivered("i", "m2").unwrap();
        let c3 = t.delivered("c", "m3").unwrap();
        let i4 = t.delivered("i", "m4").unwrap();
        let c5 = t.delivered("c", "m5").unwrap();
        assert_eq!(t.unacked("c"), 3);
        // Ack numbers are unique across the connection.
        let all = [&c1, &i2, &c3, &i4, &c5];
        for (n, a) in all.iter().enumerate() {
            assert!(all[n + 1..].iter().all(|b| b != a));
        }

        // client: cumulative up to and including the named message of that subscription.
        let target = AckTarget::Id(c3.clone());
        assert_eq!(ids(&t.covers(&target).unwrap()), ["m1", "m3"]);
        let acked = t.settle(&target).unwrap();
        assert_eq!(acked.subscription, "c");
        assert_eq!(ids(&acked), ["m1", "m3"]);
        assert_eq!(t.unacked("c"), 1);
        assert_eq!(t.settle(&AckTarget::Id(c1)), None, "already settled");

        // client-individual: only the named one, even if it is the later one.
        let acked = t.settle(&AckTarget::Id(i4)).unwrap();
        assert_eq!(ids(&acked), ["m4"]);
        assert_eq!(t.unacked("i"), 1);

        // 1.1 style: message-id + subscription; 1.0 style: message-id alone.
        let t11 = AckTarget::Message {
            subscription: Some("i".into()),
            message_id: "m2".into(),
        };
        assert_eq!(ids(&t.settle(&t11).unwrap()), ["m2"]);
        let t10 = AckTarget::Message {
            subscription: None,
            message_id: "m5".into(),
        };
        assert_eq!(ids(&t.settle(&t10).unwrap()), ["m5"]);
        assert_eq!(t.settle(&AckTarget::Id("x".into())), None);
        assert!(t.drain().is_empty());
        let _ = c5;
    }

    #[test]
    fn unsubscribe_and_drain_return_unacked() {
        let mut t = AckTracker::new();
        t.subscribe("c", AckMode::Client);
        t.subscribe("d", AckMode::ClientIndividual);
        t.delivered("c", "1");
        t.delivered("c", "2");
        t.delivered("d", "3");
        assert_eq!(t.unsubscribe("c"), ["1", "2"]);
        assert_eq!(t.mode("c"), None);
        let left = t.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].subscription, "d");
        assert_eq!(ids(&left[0]), ["3"]);
        assert_eq!(t.unacked("d"), 0);
        assert_eq!(t.mode("d"), Some(AckMode::ClientIndividual));
    }
}
