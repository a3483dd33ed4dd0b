//! The state every handler and session task shares: config, sessions,
//! metrics, callback client, API guard, lifecycle, and the task trackers
//! shutdown waits on.
//!
//! Owns construction of that state only; behaviour lives in the modules
//! that use it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::callback::Callbacks;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connection::metrics::ConnectionMetrics;
use crate::drain::metrics::DrainMetrics;
use crate::http::auth::Guard;
use crate::http::metrics::BatchMetrics;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::sessions::{SessionEvent, Sessions};
use crate::websocket::metrics::CompressionMetrics;

/// Tasks shutdown waits for.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    /// Session tasks.
    pub(crate) sessions: TaskTracker,
    /// Callbacks and other detached work that must finish before exit.
    pub(crate) background: TaskTracker,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sessions: Arc<Sessions>,
    /// The registry and the `/stats` figures; each subsystem's own metrics
    /// sit with it (`callbacks`, `sessions`, `cluster`, `guard`) or here.
    pub(crate) metrics: Metrics,
    pub(crate) connection_metrics: ConnectionMetrics,
    pub(crate) drain_metrics: DrainMetrics,
    pub(crate) batch_metrics: BatchMetrics,
    /// permessage-deflate's compressor (when enabled) and counters.
    pub(crate) compression: CompressionMetrics,
    pub(crate) callbacks: Callbacks,
    pub(crate) guard: Arc<Guard>,
    pub(crate) lifecycle: Lifecycle,
    /// The value of `X-Kuiperbelt-Endpoint`.
    pub(crate) endpoint: String,
    pub(crate) tasks: Tasks,
    /// Cluster mode's link to the other nodes.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// When the server started (`/status` uptime).
    pub(crate) started: std::time::Instant,
}

impl Shared {
    /// `cluster` and `events` come together: the sessions report to the
    /// cluster task what it must subscribe to.
    pub(crate) fn new(
        config: Config,
        endpoint: String,
        metrics: Metrics,
        cluster: Option<(Arc<Cluster>, mpsc::UnboundedSender<SessionEvent>)>,
    ) -> Arc<Shared> {
        let (cluster, events) = cluster.unzip();
        let callbacks = Callbacks::new(
            config.callback.clone(),
            config.session_header.clone(),
            &endpoint,
            &metrics,
        );
        Arc::new(Shared {
            sessions: Arc::new(Sessions::new(
                config.send_queue_size,
                config.send_timeout,
                config.channel.max_per_session,
                &metrics,
                events,
            )),
            cluster,
            started: std::time::Instant::now(),
            guard: Arc::new(Guard::new(&config.api, &metrics)),
            connection_metrics: ConnectionMetrics::new(&metrics),
            drain_metrics: DrainMetrics::new(&metrics),
            batch_metrics: BatchMetrics::new(&metrics),
            compression: CompressionMetrics::new(&config.compression, &metrics),
            lifecycle: Lifecycle::default(),
            tasks: Tasks::default(),
            config,
            metrics,
            callbacks,
            endpoint,
        })
    }
}
