//! Topics (`orders.eu.created`) and patterns (`orders.*`, `orders.>`), NATS semantics.

use std::{fmt, sync::Arc};

use crate::error::ValidationError;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A concrete topic: 1–255 bytes of dot-separated `[A-Za-z0-9_-]+` segments.
///
/// Cheap to clone (an `Arc<str>`), so one allocation is shared by every copy of an event.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates and wraps a topic.
    ///
    /// # Errors
    /// [`ValidationError::Topic`] when empty, too long or with a bad segment.
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > MAX_TOPIC_LEN || !s.split('.').all(valid_segment) {
            return Err(ValidationError::Topic(truncate_for_error(s)));
        }
        Ok(Self(Arc::from(s)))
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", &self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(Box<str>),
    /// `*`: any one segment.
    Star,
    /// `>`: one or more trailing segments (only last).
    Tail,
}

/// A subscription pattern: segments that are literals, `*` (one segment) or a final `>`
/// (one or more trailing segments). A plain topic is also a pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    segments: Arc<[Segment]>,
}

impl Pattern {
    /// Validates and parses a pattern.
    ///
    /// # Errors
    /// [`ValidationError::Pattern`] when empty, too long, with a bad segment or with `>`
    /// anywhere but last.
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::Pattern(truncate_for_error(s));
        if s.is_empty() || s.len() > MAX_TOPIC_LEN {
            return Err(bad());
        }
        let parts: Vec<&str> = s.split('.').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "*" => Segment::Star,
                ">" if i == last => Segment::Tail,
                p if valid_segment(p) => Segment::Literal(p.into()),
                _ => return Err(bad()),
            };
            segments.push(seg);
        }
        Ok(Self {
            text: Arc::from(s),
            segments: segments.into(),
        })
    }

    /// The pattern text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when the pattern has no wildcard (it names exactly one topic).
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The literal text before the first wildcard, with its trailing dot
    /// (`orders.eu.` for `orders.eu.*`); the whole text for a literal pattern.
    pub fn literal_prefix(&self) -> &str {
        let mut len = 0;
        for seg in self.segments.iter() {
            match seg {
                Segment::Literal(l) => len += l.len() + 1,
                _ => return &self.text[..len],
            }
        }
        &self.text
    }

    /// Does this pattern match the topic?
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for seg in self.segments.iter() {
            match seg {
                Segment::Tail => return parts.next().is_some(),
                Segment::Star => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.next() != Some(&**l) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// Is every topic this pattern matches also matched by `other`? Used for permissions
    /// ("may this principal subscribe to `orders.*` when it holds `orders.>`?").
    pub fn is_covered_by(&self, other: &Pattern) -> bool {
        let (mine, theirs) = (&self.segments, &other.segments);
        for (i, t) in theirs.iter().enumerate() {
            match t {
                Segment::Tail => return mine.len() > i,
                Segment::Star => match mine.get(i) {
                    Some(Segment::Star | Segment::Literal(_)) => {}
                    _ => return false,
                },
                Segment::Literal(l) => match mine.get(i) {
                    Some(Segment::Literal(m)) if m == l => {}
                    _ => return false,
                },
            }
        }
        mine.len() == theirs.len()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", &self.text)
    }
}

impl From<Topic> for Pattern {
    fn from(t: Topic) -> Self {
        // A valid topic is always a valid literal pattern.
        let segments: Vec<Segment> = t.segments().map(|s| Segment::Literal(s.into())).collect();
        Self {
            text: t.0,
            segments: segments.into(),
        }
    }
}

/// Keeps error messages short when someone sends a megabyte as a topic.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        for ok in ["a", "orders.eu.created", "A-b_c.9", &"x".repeat(255)] {
            assert!(Topic::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "é",
            &"x".repeat(256),
        ] {
            assert!(Topic::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        for ok in [">", "*", "orders.*", "orders.>", "*.eu.*", "a.*.>"] {
            assert!(Pattern::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ">.a", "a.>.b", "a.**", "a.b*", "a..b", "a.", "a>"] {
            assert!(Pattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let m = |p: &str, t: &str| Pattern::new(p).unwrap().matches(t);
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders.eu"));
        assert!(m("orders.*", "orders.eu"));
        assert!(!m("orders.*", "orders"));
        assert!(!m("orders.*", "orders.eu.x"));
        assert!(m("orders.>", "orders.eu"));
        assert!(m("orders.>", "orders.eu.x"));
        assert!(!m("orders.>", "orders"));
        assert!(m(">", "a"));
        assert!(m(">", "a.b.c"));
        assert!(m("*.eu.>", "orders.eu.created"));
        assert!(!m("*.eu.>", "orders.us.created"));
    }

    #[test]
    fn prefix_and_cover() {
        let p = |s: &str| Pattern::new(s).unwrap();
        assert_eq!(p("orders.eu.*").literal_prefix(), "orders.eu.");
        assert_eq!(p("orders.eu").literal_prefix(), "orders.eu");
        assert_eq!(p(">").literal_prefix(), "");
        assert!(p("orders.*").is_covered_by(&p("orders.>")));
        assert!(p("orders.eu").is_covered_by(&p("orders.*")));
        assert!(!p("orders.>").is_covered_by(&p("orders.*")));
        assert!(p("a.b.c").is_covered_by(&p(">")));
        assert!(!p("orders").is_covered_by(&p("orders.>")));
    }
}
