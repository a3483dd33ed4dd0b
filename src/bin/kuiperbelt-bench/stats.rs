//! The bench's clock, timestamped payloads and latency histograms, shared by
//! the WebSocket clients, the HTTP senders and the fake app.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;

/// Digits of the send timestamp at the start of every payload.
pub const STAMP_LEN: usize = 20;

/// Histogram shards: clients record into shard `i % SHARDS`, so 10,000
/// clients on two threads rarely wait for one lock.
const SHARDS: usize = 16;

/// Longest latency a histogram holds (µs); longer ones are clamped to it.
const MAX_MICROS: u64 = 120_000_000;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The instant every timestamp counts from.
pub fn origin() -> Instant {
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since the bench started.
pub fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

/// Nanoseconds from the origin to `t` (a scheduled send time, say).
pub fn ns_at(t: Instant) -> u64 {
    t.saturating_duration_since(origin()).as_nanos() as u64
}

/// A message body of `size` bytes (at least 40): the actual send time and
/// the scheduled send time, each as 20 ASCII digits of nanoseconds since
/// the origin, then `x` padding. Text, so valid UTF-8 for a text frame.
/// Closed-loop load has no schedule: `scheduled_ns` is `None`, written as 0.
pub fn payload(size: usize, sent_ns: u64, scheduled_ns: Option<u64>) -> Bytes {
    let len = size.max(2 * STAMP_LEN);
    let mut body = Vec::with_capacity(len);
    write!(body, "{sent_ns:020}{:020}", scheduled_ns.unwrap_or(0)).expect("writing to a Vec");
    body.resize(len, b'x');
    Bytes::from(body)
}

/// As [`payload`], but after the stamps comes a JSON update of the kind an
/// app pushes (rows of ids, names, random scores and flags), cut at `size`
/// bytes: text that compresses as real JSON does, where `x` padding would
/// compress to almost nothing.
pub fn json_payload(size: usize, sent_ns: u64, scheduled_ns: Option<u64>) -> Bytes {
    let len = size.max(2 * STAMP_LEN);
    let mut body = Vec::with_capacity(len + 128);
    write!(body, "{sent_ns:020}{:020}", scheduled_ns.unwrap_or(0)).expect("writing to a Vec");
    body.extend_from_slice(br#"{"type":"scores","rows":["#);
    let mut row = 0;
    while body.len() < len {
        let id = fastrand::u32(1..1_000_000);
        write!(
            body,
            r#"{}{{"id":{id},"user":"player-{}","score":{},"level":{},"online":{},"updated":"2026-12-{:02}T{:02}:{:02}:{:02}Z"}}"#,
            if row == 0 { "" } else { "," },
            id % 5000,
            fastrand::u32(0..100_000),
            fastrand::u8(1..60),
            fastrand::bool(),
            fastrand::u8(1..29),
            fastrand::u8(0..24),
            fastrand::u8(0..60),
            fastrand::u8(0..60),
        )
        .expect("writing to a Vec");
        row += 1;
    }
    body.truncate(len);
    Bytes::from(body)
}

/// The (sent, scheduled) times at the start of a payload, if it has them.
pub fn timestamps(body: &[u8]) -> Option<(u64, u64)> {
    Some((
        digits(body.get(..STAMP_LEN)?)?,
        digits(body.get(STAMP_LEN..2 * STAMP_LEN)?)?,
    ))
}

fn digits(digits: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// Delivery latency from the actual send time, and from the scheduled one
/// (which also counts time the load generator fell behind its schedule, so
/// an overloaded server is not hidden by a slowed-down generator).
#[derive(Default)]
pub struct LatencyPair {
    pub sent: Latencies,
    pub scheduled: Latencies,
}

impl LatencyPair {
    /// Records one payload's latencies, if it carries timestamps (the
    /// scheduled one only for open-loop load).
    pub fn record(&self, shard: usize, body: &[u8]) {
        if let Some((sent, scheduled)) = timestamps(body) {
            self.sent.record_since(shard, sent);
            if scheduled != 0 {
                self.scheduled.record_since(shard, scheduled);
            }
        }
    }

    pub fn reset(&self) {
        self.sent.reset();
        self.scheduled.reset();
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
}

/// A latency histogram (1 µs to 120 s, 3 significant digits) in shards.
pub struct Latencies(Vec<Mutex<Histogram<u64>>>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            (0..SHARDS)
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, MAX_MICROS, 3)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
        )
    }
}

impl Latencies {
    /// Records now minus `sent_ns` into shard `shard % SHARDS`.
    pub fn record_since(&self, shard: usize, sent_ns: u64) {
        let micros = (now_ns().saturating_sub(sent_ns) / 1_000).clamp(1, MAX_MICROS);
        let mut h = self.0[shard % SHARDS].lock().expect("histogram lock");
        let _ = h.record(micros);
    }

    /// Forgets everything recorded so far (after a warm-up).
    pub fn reset(&self) {
        for shard in &self.0 {
            shard.lock().expect("histogram lock").reset();
        }
    }

    pub fn summary(&self) -> Summary {
        let mut all =
            Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds");
        for shard in &self.0 {
            let _ = all.add(&*shard.lock().expect("histogram lock"));
        }
        if all.is_empty() {
            return Summary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            p50: ms(all.value_at_quantile(0.5)),
            p99: ms(all.value_at_quantile(0.99)),
            p999: ms(all.value_at_quantile(0.999)),
            max: ms(all.max()),
            count: all.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_its_timestamps() {
        let p = payload(64, 1_234_567_890, Some(1_234_000_000));
        assert_eq!(p.len(), 64);
        assert_eq!(timestamps(&p), Some((1_234_567_890, 1_234_000_000)));
        assert_eq!(payload(5, 7, None).len(), 2 * STAMP_LEN);
        assert_eq!(timestamps(&payload(5, 7, None)), Some((7, 0)));
        let json = json_payload(2048, 7, Some(9));
        assert_eq!(json.len(), 2048);
        assert_eq!(timestamps(&json), Some((7, 9)));
        assert!(json[2 * STAMP_LEN..].starts_with(b"{\"type\""));
        assert_eq!(timestamps(b"hello"), None);
        assert_eq!(timestamps(&[b'0'; 39]), None);
        assert_eq!(timestamps(&[b'0'; 41]), Some((0, 0)));
    }
}
