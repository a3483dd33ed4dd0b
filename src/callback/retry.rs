//! The retry policy of receive and close callbacks: which answers are worth
//! another try, and how long to wait before it (exponential backoff with
//! jitter).
//!
//! Owns the policy values only; the gate (`gate.rs`) and the delivery loop
//! (`outbox.rs`) apply them.

use std::time::Duration;

use http::StatusCode;

use super::CallbackError;

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The app answered 200.
    Delivered,
    /// The app is not there or not ready (connection error, timeout, 408,
    /// 429, 502, 503, 504): try again.
    Retry,
    /// The app answered, and said no (any other status): its final word.
    Final,
}

/// Classifies one attempt (`Ok`: the app answered 200).
pub(crate) fn verdict(result: &Result<(), CallbackError>) -> Verdict {
    match result {
        Ok(()) => Verdict::Delivered,
        Err(CallbackError::Timeout(..) | CallbackError::Request(..)) => Verdict::Retry,
        Err(CallbackError::Status(_, status)) if retryable(*status) => Verdict::Retry,
        Err(CallbackError::Status(..) | CallbackError::Invalid(..)) => Verdict::Final,
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 502 | 503 | 504)
}

/// Exponential backoff: `first`, doubling per attempt, capped at `max`, each
/// delay drawn from its upper half (so waiters spread out).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0 for the first retry), with
    /// `jitter` in 0..=1.
    pub(crate) fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self
            .first
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_are_retried() {
        use Verdict::*;
        let status = |s: u16| -> Result<(), CallbackError> {
            Err(CallbackError::Status(
                "receive",
                StatusCode::from_u16(s).unwrap(),
            ))
        };
        assert_eq!(verdict(&Ok(())), Delivered);
        for s in [408, 429, 502, 503, 504] {
            assert_eq!(verdict(&status(s)), Retry, "{s}");
        }
        for s in [201, 204, 301, 400, 401, 403, 404, 409, 500, 501, 505] {
            assert_eq!(verdict(&status(s)), Final, "{s}");
        }
        let timeout = Err(CallbackError::Timeout("receive", Duration::from_secs(1)));
        assert_eq!(verdict(&timeout), Retry);
        let refused = Err(CallbackError::Request(
            "receive",
            "connection refused".into(),
        ));
        assert_eq!(verdict(&refused), Retry);
        let invalid = Err(CallbackError::Invalid("receive", "bad header".into()));
        assert_eq!(verdict(&invalid), Final);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(3750));
        for attempt in 0..20 {
            let d = b.delay(attempt, fastrand::f64());
            assert!(d >= b.delay(attempt, 0.0) && d <= b.delay(attempt, 1.0));
        }
    }
}
