//! The token bucket behind an endpoint's `rate_limit`: at most `n` attempts started per
//! second, with bursts of at most `n`.

use std::time::Duration;

use tokio::time::Instant;

/// `rate` tokens per second, holding at most `rate` (a full second's worth), full at first.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `per_second` attempts per second (0 is taken as 1: a limit that
    /// lets nothing through would strand the endpoint's deliveries without a word).
    pub(crate) fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Follows a changed limit, keeping what has been used.
    pub(crate) fn set_rate(&mut self, per_second: u32, now: Instant) {
        let rate = f64::from(per_second.max(1));
        if rate != self.rate {
            self.refill(now);
            self.rate = rate;
            self.tokens = self.tokens.min(rate);
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// Whole tokens available at `now`.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        // Non-negative and at most `u32::MAX`: the cast cannot wrap.
        self.tokens.floor().max(0.0) as usize
    }

    /// Uses one token (call only after [`available`](Self::available) said there is one).
    pub(crate) fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// How long from the last refill until a whole token is there (zero when one is).
    pub(crate) fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4, t0);
        assert_eq!(b.available(t0), 4);
        for _ in 0..4 {
            b.take();
        }
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.wait(), Duration::from_millis(250));
        assert_eq!(b.available(t0 + Duration::from_millis(260)), 1);
        assert_eq!(b.available(t0 + Duration::from_millis(600)), 2);
        // Never more than one second's worth.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 4);
        b.set_rate(2, t0 + Duration::from_secs(60));
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 2);
        b.take();
        b.take();
        b.take();
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 0);
        assert_eq!(b.wait(), Duration::from_millis(500));
        let mut z = TokenBucket::new(0, t0);
        assert_eq!(z.available(t0), 1);
    }
}
