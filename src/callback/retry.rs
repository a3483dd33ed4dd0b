//! The retry policy of receive and close callbacks: which answers are worth
//! another try, which of them say the app is away (and so close the gate),
//! what became of a message in the end, and how long to wait before a retry
//! (exponential backoff with jitter).
//!
//! Owns the policy values only; the gate (`gate.rs`) and the delivery loop
//! (`outbox.rs`) apply them.

use std::time::Duration;

use super::request::CallbackError;

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The app answered 200.
    Delivered,
    /// The app is away (no connection: refused, reset or closed before an
    /// answer, connect timed out; or 429, 502, 503, 504): try again, and
    /// hold everyone's callbacks behind the gate meanwhile.
    Away,
    /// The app is there but did not take it this time: try again after a
    /// backoff of its own; nobody else waits. `answered`: it said so (408),
    /// which opens a closed gate; otherwise the request timed out after it
    /// was sent (with `callback.retry_timeouts`), which proves neither way.
    Again { answered: bool },
    /// The request was sent and `callback.timeout` passed: the app's answer
    /// for that message is "given up" (the app may have done the work).
    TimedOut,
    /// The app answered, and said no (any other status): its final word.
    Final,
}

/// Classifies one attempt (`Ok`: the app answered 200).
pub(crate) fn verdict(result: &Result<(), CallbackError>, retry_timeouts: bool) -> Verdict {
    match result {
        Ok(()) => Verdict::Delivered,
        Err(CallbackError::Request(..) | CallbackError::ConnectTimeout(..)) => Verdict::Away,
        Err(CallbackError::Timeout(..)) if retry_timeouts => Verdict::Again { answered: false },
        Err(CallbackError::Timeout(..)) => Verdict::TimedOut,
        Err(CallbackError::Status(_, status)) => match status.as_u16() {
            429 | 502 | 503 | 504 => Verdict::Away,
            408 => Verdict::Again { answered: true },
            _ => Verdict::Final,
        },
        Err(CallbackError::Invalid(..)) => Verdict::Final,
    }
}

/// What became of a message or close event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The app answered 200.
    Delivered,
    /// The app answered with another status: its final word.
    Refused,
    /// `callback.retry_for` passed without an answer.
    GaveUp,
    /// `callback.timeout` passed after the request was sent (not retried).
    TimedOut,
}

impl Delivery {
    /// The metric label of a message that did not get through.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Refused => "refused",
            Delivery::GaveUp => "gave_up",
            Delivery::TimedOut => "timeout",
        }
    }

    pub(crate) const DROPPED: [Delivery; 3] =
        [Delivery::Refused, Delivery::GaveUp, Delivery::TimedOut];
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
    use http::StatusCode;

    #[test]
    fn which_answers_are_retried_and_which_close_the_gate() {
        use Verdict::*;
        let status = |s: u16| -> Result<(), CallbackError> {
            Err(CallbackError::Status(
                "receive",
                StatusCode::from_u16(s).unwrap(),
            ))
        };
        for retry_timeouts in [false, true] {
            let v = |r: &Result<(), CallbackError>| verdict(r, retry_timeouts);
            assert_eq!(v(&Ok(())), Delivered);
            for s in [429, 502, 503, 504] {
                assert_eq!(v(&status(s)), Away, "{s}");
            }
            assert_eq!(v(&status(408)), Again { answered: true });
            for s in [201, 204, 301, 400, 401, 403, 404, 409, 500, 501, 505] {
                assert_eq!(v(&status(s)), Final, "{s}");
            }
            let refused = Err(CallbackError::Request(
                "receive",
                "connection refused".into(),
            ));
            assert_eq!(v(&refused), Away);
            let unreachable = Err(CallbackError::ConnectTimeout(
                "receive",
                Duration::from_secs(1),
            ));
            assert_eq!(v(&unreachable), Away);
            let invalid = Err(CallbackError::Invalid("receive", "bad header".into()));
            assert_eq!(v(&invalid), Final);
        }
        let slow = Err(CallbackError::Timeout("receive", Duration::from_secs(1)));
        assert_eq!(verdict(&slow, false), TimedOut);
        assert_eq!(verdict(&slow, true), Again { answered: false });
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
