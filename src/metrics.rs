//! The ground floor of metrics: the registry of one server instance, the
//! helpers every subsystem declares its metric families with, the process
//! and build metrics, and Go's `/stats` numbers.
//!
//! Owns the registry, the exposition and the six `/stats` figures; it names
//! no subsystem. Each subsystem declares, labels and updates its own
//! families (`callback::metrics`, `cluster::metrics`, `connection::metrics`,
//! `drain::metrics`, `http::auth`, `sessions::metrics`) on this registry, and
//! bumps the figures that `/stats` reads through [`Figures`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};

/// The registry of one server instance, and Go's `/stats` figures.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) figures: Figures,
}

/// What `/stats` reports, as the Go server counts it. Four are metric
/// families of their own; `connect_errors` and `message_errors` are sums the
/// subsystems keep beside their labelled families.
#[derive(Clone, Debug)]
pub(crate) struct Figures {
    /// `kuiperbelt_connections`.
    pub(crate) connections: IntGauge,
    /// `kuiperbelt_connect_requests_total`.
    pub(crate) connect_requests: IntCounter,
    /// `kuiperbelt_messages_pushed_total`.
    pub(crate) messages_pushed: IntCounter,
    /// `kuiperbelt_connections_closing`.
    pub(crate) connections_closing: IntGauge,
    /// Refused connects that Go counts as errors (not exposed by itself).
    pub(crate) connect_errors: IntCounter,
    /// Accepted messages that could not be written (not exposed by itself).
    pub(crate) message_errors: IntCounter,
}

impl Metrics {
    /// A registry with the process, build and `/stats` metrics, each 0.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        // process_open_fds, process_max_fds, process_resident_memory_bytes,
        // process_cpu_seconds_total, ...: every connection is a descriptor.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        let unexposed = || IntCounter::new("unexposed", "-").expect("valid counter");
        let figures = Figures {
            connections: register(
                &registry,
                IntGauge::new(
                    "kuiperbelt_connections",
                    "WebSocket connections open (from the upgrade to the end; /stats connections).",
                )
                .expect("valid gauge"),
            ),
            connect_requests: register(
                &registry,
                IntCounter::new(
                    "kuiperbelt_connect_requests_total",
                    "Requests to the connect path, accepted or not (/stats total_connections).",
                )
                .expect("valid counter"),
            ),
            messages_pushed: register(
                &registry,
                IntCounter::new(
                    "kuiperbelt_messages_pushed_total",
                    "Messages accepted for a session: the first message, and one per known target of /send or of /close with a body (/stats total_messages).",
                )
                .expect("valid counter"),
            ),
            connections_closing: register(
                &registry,
                IntGauge::new(
                    "kuiperbelt_connections_closing",
                    "Ended connections whose close callback the app has not answered yet.",
                )
                .expect("valid gauge"),
            ),
            connect_errors: unexposed(),
            message_errors: unexposed(),
        };
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kuiperbelt_build_info",
                    "Build information; the value is always 1.",
                ),
                &["version"],
            )
            .expect("valid gauge"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics { registry, figures }
    }

    /// Registers `collector` (its name must be new) and hands it back.
    pub(crate) fn register<C>(&self, collector: C) -> C
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        register(&self.registry, collector)
    }

    pub(crate) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid gauge"))
    }

    pub(crate) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid counter"))
    }

    /// A counter family with one label, every value of which reads 0 at once.
    pub(crate) fn counter_vec(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> IntCounterVec {
        let family = self
            .register(IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter"));
        for v in values {
            family.with_label_values(&[*v]);
        }
        family
    }

    /// A counter family with two labels, every pair of which reads 0 at once.
    pub(crate) fn counter_vec2(
        &self,
        name: &str,
        help: &str,
        labels: [&str; 2],
        pairs: impl IntoIterator<Item = [&'static str; 2]>,
    ) -> IntCounterVec {
        let family = self
            .register(IntCounterVec::new(Opts::new(name, help), &labels).expect("valid counter"));
        for pair in pairs {
            family.with_label_values(&pair);
        }
        family
    }

    pub(crate) fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram"),
        )
    }

    /// A histogram family with one label, every value of which exists at once.
    pub(crate) fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        label: &str,
        values: &[&str],
    ) -> HistogramVec {
        let family = self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &[label],
            )
            .expect("valid histogram"),
        );
        for v in values {
            family.with_label_values(&[*v]);
        }
        family
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Go's `/stats` numbers.
    pub(crate) fn stats(&self) -> Stats {
        let f = &self.figures;
        Stats {
            connections: f.connections.get(),
            total_connections: f.connect_requests.get(),
            total_messages: f.messages_pushed.get(),
            connect_errors: f.connect_errors.get(),
            message_errors: f.message_errors.get(),
            closing_connections: f.connections_closing.get(),
        }
    }
}

fn register<C>(registry: &Registry, collector: C) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

/// The body of `GET /stats`, field order as the Go server writes it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) connections: i64,
    pub(crate) total_connections: u64,
    pub(crate) total_messages: u64,
    pub(crate) connect_errors: u64,
    pub(crate) message_errors: u64,
    pub(crate) closing_connections: i64,
}

impl Stats {
    /// Adds another node's numbers (`/stats?scope=cluster`).
    pub(crate) fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.total_connections += other.total_connections;
        self.total_messages += other.total_messages;
        self.connect_errors += other.connect_errors;
        self.message_errors += other.message_errors;
        self.closing_connections += other.closing_connections;
    }

    /// The `?format=text` form: `name<TAB>value<TAB>unixtime` per line.
    pub(crate) fn to_text(self, unixtime: u64) -> String {
        let rows: [(&str, i128); 6] = [
            ("kuiperbelt.conn.current", self.connections as i128),
            ("kuiperbelt.conn.total", self.total_connections as i128),
            ("kuiperbelt.conn.errors", self.connect_errors as i128),
            ("kuiperbelt.conn.closing", self.closing_connections as i128),
            ("kuiperbelt.messages.total", self.total_messages as i128),
            ("kuiperbelt.messages.errors", self.message_errors as i128),
        ];
        rows.iter()
            .map(|(name, value)| format!("{name}\t{value}\t{unixtime}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ground_metrics_read_zero_before_use() {
        let text = Metrics::new().encode();
        for name in [
            "kuiperbelt_connections 0",
            "kuiperbelt_connect_requests_total 0",
            "kuiperbelt_messages_pushed_total 0",
            "kuiperbelt_connections_closing 0",
            "process_open_fds ",
            "process_max_fds ",
            "kuiperbelt_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn stats_text_lines() {
        let m = Metrics::new();
        m.figures.connections.set(3);
        let text = m.stats().to_text(1_700_000_000);
        let first = text.lines().next().unwrap();
        assert_eq!(first, "kuiperbelt.conn.current\t3\t1700000000");
        assert_eq!(text.lines().count(), 6);
    }
}
