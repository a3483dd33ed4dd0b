//! The state every handler and session task shares: config, sessions,
//! metrics, callback client, API guard, lifecycle, and the task trackers
//! shutdown waits on.
//!
//! Owns construction of that state only; behaviour lives in the modules
//! that use it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
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

/// Bytes tungstenite allocates (and zero-fills, so they count in RSS) per
/// connection to read frames into. Its default is 128 KiB; clients of this
/// proxy send small messages, and a larger one grows the buffer as needed.
/// Measured on 8,000 idle connections: 4 KiB -> 7.7 KiB RSS per connection,
/// 2 KiB -> 6.0 KiB, 1 KiB -> 4.2 KiB.
const READ_BUFFER_SIZE: usize = 1024;

/// Bytes of frames tungstenite buffers before it writes (it writes only its
/// own pongs and close frames; pushes go through the outlet).
const WRITE_BUFFER_SIZE: usize = 4 * 1024;

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
    pub(crate) callbacks: Callbacks,
    pub(crate) guard: Arc<Guard>,
    pub(crate) lifecycle: Lifecycle,
    /// The value of `X-Kuiperbelt-Endpoint`.
    pub(crate) endpoint: String,
    pub(crate) ws_config: WebSocketConfig,
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
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_write_buffer_size(WRITE_BUFFER_SIZE + 1024)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
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
            lifecycle: Lifecycle::default(),
            tasks: Tasks::default(),
            config,
            metrics,
            callbacks,
            endpoint,
            ws_config,
        })
    }
}
