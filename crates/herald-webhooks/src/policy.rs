//! What happens to a delivery after an attempt (SPEC 7.1): the verdict of a response, the
//! retry schedule with ±20 % jitter, and `Retry-After`.

use std::time::{Duration, SystemTime};

use herald_core::webhook::{Delivery, Next};

/// Shortest `Retry-After` delay taken (a `0` or a date in the past would retry at once).
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `Retry-After` delay taken (a receiver cannot park a delivery for a year).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Jitter: each scheduled delay is stretched by a factor drawn uniformly from
/// `1 - JITTER ..= 1 + JITTER`.
const JITTER: f64 = 0.2;

/// How an attempt ended, as far as the delivery and the endpoint's health are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A 2xx.
    Delivered,
    /// `410 Gone`: this delivery fails and the endpoint is disabled.
    Gone,
    /// The receiver said `webhook-delivery: abort-message`: no more attempts.
    Aborted,
    /// Anything else (non-2xx, timeout, connection or guard error): retry per schedule, or
    /// after `retry_after` when the receiver gave one on a 429/503.
    Retry {
        /// The receiver's `Retry-After`, already bounded.
        retry_after: Option<Duration>,
    },
}

impl Verdict {
    /// The verdict of a response.
    pub(crate) fn of_response(status: u16, abort: bool, retry_after: Option<Duration>) -> Self {
        match status {
            200..=299 => Self::Delivered,
            410 => Self::Gone,
            _ if abort => Self::Aborted,
            _ => Self::Retry { retry_after },
        }
    }
}

/// The delivery's next state after an attempt that ended at `now_ms`. `unit` is a uniform
/// random number in `[0, 1)` for the jitter.
pub(crate) fn next(
    delivery: &Delivery,
    verdict: Verdict,
    schedule: &[Duration],
    now_ms: i64,
    unit: f64,
) -> Next {
    match verdict {
        Verdict::Delivered => Next::Succeeded,
        Verdict::Gone | Verdict::Aborted => Next::Failed,
        Verdict::Retry { retry_after } => {
            // `attempts` counts the attempts made before this one: the first retry waits
            // `schedule[0]`, and after the last delay's retry the delivery has failed.
            let idx = usize::try_from(delivery.attempts).unwrap_or(usize::MAX);
            match schedule.get(idx) {
                Some(delay) if !delivery.last_chance => {
                    let delay = retry_after.unwrap_or_else(|| jitter(*delay, unit));
                    Next::RetryAt(now_ms.saturating_add(millis(delay)))
                }
                _ => Next::Failed,
            }
        }
    }
}

/// `delay` stretched by a factor in `[0.8, 1.2)`, chosen by `unit` in `[0, 1)`.
pub(crate) fn jitter(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
    // `mul_f64` panics on overflow; a configured delay of centuries must not.
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses a `Retry-After` value, delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), into a delay from `now`, bounded to
/// [`MIN_RETRY_AFTER`]..=[`MAX_RETRY_AFTER`]. `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let delay = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only too many of them fails to parse, which means "very long".
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// A small, fast random source for jitter (xorshift64*), seeded from the OS. Not for
/// anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the OS random source; from the clock if that fails (jitter only spreads
    /// retries, it needs no secrecy).
    pub(crate) fn from_os() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15)
        });
        Self::seeded(seed)
    }

    /// A fixed sequence (tests).
    pub(crate) fn seeded(seed: u64) -> Self {
        // xorshift is stuck at zero.
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next number, uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // The top 53 bits make an exact f64 in [0, 1).
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use herald_core::webhook::Status;

    use super::*;

    fn delivery(attempts: u32, last_chance: bool) -> Delivery {
        Delivery {
            id: 1,
            endpoint: "wh_1".into(),
            event_id: 1,
            msg_id: "msg_1".into(),
            event_type: "message".into(),
            body: "{}".into(),
            status: Status::Pending,
            attempts,
            next_at_ms: 0,
            last_chance,
            created_ms: 0,
        }
    }

    #[test]
    fn jitter_bounds() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(80));
        assert_eq!(jitter(d, 0.5), Duration::from_secs(100));
        assert!(jitter(d, 0.999_999) < Duration::from_secs(120));
        assert!(jitter(d, 0.999_999) > Duration::from_secs(119));
        // Out-of-range inputs stay within the bounds.
        assert_eq!(jitter(d, -3.0), Duration::from_secs(80));
        assert_eq!(jitter(d, 7.0), Duration::from_secs(120));
        assert_eq!(jitter(d, f64::NAN), Duration::from_secs(100));
        assert_eq!(jitter(Duration::MAX, 0.9), Duration::MAX);
        assert_eq!(jitter(Duration::ZERO, 0.3), Duration::ZERO);

        let mut rng = Rng::seeded(42);
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u), "{u}");
            let j = jitter(d, u).as_secs_f64();
            assert!((80.0..120.0).contains(&j), "{j}");
            lo = lo.min(j);
            hi = hi.max(j);
        }
        // Uniform over the whole range, not stuck in a corner.
        assert!(lo < 81.0 && hi > 119.0, "{lo} {hi}");
    }

    #[test]
    fn rng_zero_seed_moves() {
        let mut r = Rng::seeded(0);
        let a = r.unit();
        let b = r.unit();
        assert_ne!(a, b);
        let _ = Rng::from_os().unit();
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("0", now), Some(MIN_RETRY_AFTER));
        assert_eq!(parse_retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", " ", "-1", "1.5", "soon", "1e3", "+5"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        // In the past: as soon as allowed.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(MIN_RETRY_AFTER)
        );
        // Far future: capped.
        assert_eq!(
            parse_retry_after("Fri, 21 Oct 2016 07:28:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        // The obsolete formats HTTP still allows.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", now),
            None
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::of_response(200, false, None), Verdict::Delivered);
        assert_eq!(Verdict::of_response(204, true, None), Verdict::Delivered);
        assert_eq!(Verdict::of_response(410, true, None), Verdict::Gone);
        assert_eq!(Verdict::of_response(500, true, None), Verdict::Aborted);
        assert_eq!(Verdict::of_response(400, true, None), Verdict::Aborted);
        let ra = Some(Duration::from_secs(3));
        assert_eq!(
            Verdict::of_response(429, false, ra),
            Verdict::Retry { retry_after: ra }
        );
        assert_eq!(
            Verdict::of_response(301, false, None),
            Verdict::Retry { retry_after: None }
        );
    }

    #[test]
    fn next_states() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        let retry = Verdict::Retry { retry_after: None };
        let now = 1_000_000;
        assert_eq!(
            next(&delivery(0, false), Verdict::Delivered, &schedule, now, 0.5),
            Next::Succeeded
        );
        assert_eq!(
            next(&delivery(0, false), Verdict::Gone, &schedule, now, 0.5),
            Next::Failed
        );
        assert_eq!(
            next(&delivery(0, false), Verdict::Aborted, &schedule, now, 0.5),
            Next::Failed
        );
        // First failure: schedule[0] with jitter.
        assert_eq!(
            next(&delivery(0, false), retry, &schedule, now, 0.5),
            Next::RetryAt(now + 10_000)
        );
        assert_eq!(
            next(&delivery(0, false), retry, &schedule, now, 0.0),
            Next::RetryAt(now + 8_000)
        );
        assert_eq!(
            next(&delivery(1, false), retry, &schedule, now, 0.5),
            Next::RetryAt(now + 100_000)
        );
        // Schedule exhausted: 1 attempt + 2 retries made.
        assert_eq!(
            next(&delivery(2, false), retry, &schedule, now, 0.5),
            Next::Failed
        );
        assert_eq!(
            next(&delivery(u32::MAX, false), retry, &schedule, now, 0.5),
            Next::Failed
        );
        // A manual retry's one last attempt.
        assert_eq!(
            next(&delivery(0, true), retry, &schedule, now, 0.5),
            Next::Failed
        );
        assert_eq!(
            next(&delivery(0, true), Verdict::Delivered, &schedule, now, 0.5),
            Next::Succeeded
        );
        // Retry-After replaces the scheduled delay, without jitter.
        let ra = Verdict::Retry {
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            next(&delivery(0, false), ra, &schedule, now, 0.0),
            Next::RetryAt(now + 3_000)
        );
        assert_eq!(
            next(&delivery(2, false), ra, &schedule, now, 0.0),
            Next::Failed
        );
        // No schedule: the first failure is final.
        assert_eq!(
            next(&delivery(0, false), retry, &[], now, 0.5),
            Next::Failed
        );
        // Saturating time arithmetic.
        assert_eq!(
            next(
                &delivery(0, false),
                retry,
                &[Duration::MAX],
                i64::MAX - 5,
                0.5
            ),
            Next::RetryAt(i64::MAX)
        );
    }
}
