//! The pattern index: which subscribers want a topic, found by walking the topic's segments
//! through a trie of patterns (like NATS's sublist) instead of testing every subscription.
//!
//! A lookup costs O(segments × wildcard branches), independent of the number of
//! subscriptions; inserts and removals touch one path.

use std::collections::HashMap;

use crate::{Pattern, topic::Segment};

/// A trie of patterns, each leaf holding the values subscribed with that pattern.
#[derive(Debug)]
pub struct PatternIndex<V> {
    root: Node<V>,
    len: usize,
}

#[derive(Debug)]
struct Node<V> {
    literal: HashMap<Box<str>, Node<V>>,
    star: Option<Box<Node<V>>>,
    /// Patterns that end exactly here.
    here: Vec<V>,
    /// Patterns whose next (and last) segment is `>`.
    tail: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            star: None,
            here: Vec::new(),
            tail: Vec::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }
}

impl<V> Default for PatternIndex<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: PartialEq> PatternIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`. The same value may be added under several patterns.
    pub fn insert(&mut self, pattern: &Pattern, value: V) {
        let mut node = &mut self.root;
        for seg in pattern.segments() {
            match seg {
                Segment::Literal(l) => node = node.literal.entry(l.clone()).or_default(),
                Segment::Star => node = node.star.get_or_insert_with(Box::default),
                Segment::Tail => {
                    node.tail.push(value);
                    self.len += 1;
                    return;
                }
            }
        }
        node.here.push(value);
        self.len += 1;
    }

    /// Removes one entry equal to `value` under `pattern`; returns whether it was there.
    pub fn remove(&mut self, pattern: &Pattern, value: &V) -> bool {
        let removed = remove_rec(&mut self.root, pattern.segments(), value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` with every value whose pattern matches `topic`. A value registered under
    /// several matching patterns is seen once per pattern.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a V)) {
        // Segments on the stack for typical topics; no allocation per lookup.
        let mut buf: [&str; 16] = [""; 16];
        let mut n = 0;
        let mut overflow: Vec<&str> = Vec::new();
        for s in topic.split('.') {
            if n < buf.len() {
                buf[n] = s;
                n += 1;
            } else {
                if overflow.is_empty() {
                    overflow.extend_from_slice(&buf);
                }
                overflow.push(s);
            }
        }
        let segs: &[&str] = if overflow.is_empty() {
            &buf[..n]
        } else {
            &overflow
        };
        match_rec(&self.root, segs, &mut f);
    }

    /// Every value whose pattern matches `topic`, collected.
    pub fn matches(&self, topic: &str) -> Vec<&V> {
        let mut out = Vec::new();
        self.for_each_match(topic, |v| out.push(v));
        out
    }
}

fn match_rec<'a, V>(node: &'a Node<V>, segs: &[&str], f: &mut impl FnMut(&'a V)) {
    let Some((first, rest)) = segs.split_first() else {
        node.here.iter().for_each(&mut *f);
        return;
    };
    node.tail.iter().for_each(&mut *f);
    if let Some(child) = node.literal.get(*first) {
        match_rec(child, rest, f);
    }
    if let Some(star) = &node.star {
        match_rec(star, rest, f);
    }
}

fn remove_rec<V: PartialEq>(node: &mut Node<V>, segs: &[Segment], value: &V) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return remove_one(&mut node.here, value);
    };
    match first {
        Segment::Tail => remove_one(&mut node.tail, value),
        Segment::Literal(l) => {
            let Some(child) = node.literal.get_mut(l) else {
                return false;
            };
            let removed = remove_rec(child, rest, value);
            if child.is_empty() {
                node.literal.remove(l);
            }
            removed
        }
        Segment::Star => {
            let Some(child) = node.star.as_mut() else {
                return false;
            };
            let removed = remove_rec(child, rest, value);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
    }
}

fn remove_one<V: PartialEq>(list: &mut Vec<V>, value: &V) -> bool {
    match list.iter().position(|v| v == value) {
        Some(i) => {
            list.swap_remove(i);
            if list.is_empty() {
                // Give the memory back: a topic that had 10,000 subscribers should not keep
                // their slots forever.
                *list = Vec::new();
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn basic() {
        let mut idx = PatternIndex::new();
        idx.insert(&p("orders.*"), 1);
        idx.insert(&p("orders.>"), 2);
        idx.insert(&p(">"), 3);
        idx.insert(&p("orders.eu"), 4);
        idx.insert(&p("*.eu.*"), 5);
        let mut m: Vec<i32> = idx.matches("orders.eu").into_iter().copied().collect();
        m.sort();
        assert_eq!(m, vec![1, 2, 3, 4]);
        let mut m: Vec<i32> = idx.matches("orders.eu.x").into_iter().copied().collect();
        m.sort();
        assert_eq!(m, vec![2, 3, 5]);
        assert!(idx.remove(&p("orders.>"), &2));
        assert!(!idx.remove(&p("orders.>"), &2));
        assert_eq!(idx.len(), 4);
        for (pat, v) in [("orders.*", 1), (">", 3), ("orders.eu", 4), ("*.eu.*", 5)] {
            assert!(idx.remove(&p(pat), &v));
        }
        assert!(idx.is_empty());
        assert!(idx.root.is_empty());
    }

    #[test]
    fn long_topics() {
        let mut idx = PatternIndex::new();
        let long: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let topic = long.join(".");
        idx.insert(&p(&topic), 1);
        idx.insert(&p("s0.>"), 2);
        assert_eq!(idx.matches(&topic).len(), 2);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|v| v.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![segment(), Just("*".to_string())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut v, tail)| {
                if tail {
                    let n = v.len();
                    v[n - 1] = ">".into();
                }
                v.join(".")
            })
    }

    proptest! {
        /// The index finds exactly what testing every pattern naively finds, also after
        /// removals.
        #[test]
        fn agrees_with_naive(
            pats in prop::collection::vec(pattern(), 0..40),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut idx = PatternIndex::new();
            let mut live: Vec<(Pattern, usize)> = Vec::new();
            for (i, s) in pats.iter().enumerate() {
                let pat = p(s);
                idx.insert(&pat, i);
                live.push((pat, i));
            }
            for r in removals {
                if live.is_empty() { break; }
                let (pat, v) = live.swap_remove(r.index(live.len()));
                prop_assert!(idx.remove(&pat, &v));
            }
            prop_assert_eq!(idx.len(), live.len());
            for t in &topics {
                let mut got: Vec<usize> = idx.matches(t).into_iter().copied().collect();
                got.sort();
                let mut want: Vec<usize> =
                    live.iter().filter(|(pat, _)| pat.matches(t)).map(|(_, v)| *v).collect();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
