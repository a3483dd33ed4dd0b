//! The state every handler and session task shares: config, registry,
//! metrics, callback client, and the cancellation tree and task trackers
//! that shutdown uses.
//!
//! Owns construction of that state only; behaviour lives in the modules
//! that use it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::Callbacks;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Bytes tungstenite allocates (and zero-fills, so they count in RSS) per
/// connection to read frames into. Its default is 128 KiB; clients of this
/// proxy send small messages, and a larger one grows the buffer as needed.
/// Measured on 8,000 idle connections: 4 KiB -> 7.7 KiB RSS per connection,
/// 2 KiB -> 6.0 KiB, 1 KiB -> 4.2 KiB.
pub const READ_BUFFER_SIZE: usize = 1024;

/// Bytes of queued frames tungstenite buffers before it writes; a flush
/// always writes everything, so this only bounds one batch.
pub const WRITE_BUFFER_SIZE: usize = 64 * 1024;

pub struct Shared {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub callbacks: Callbacks,
    /// The value of `X-Kuiperbelt-Endpoint`.
    pub endpoint: String,
    pub ws_config: WebSocketConfig,
    /// Root of every session's cancel token: cancelling it ends all sessions now.
    pub root: CancellationToken,
    /// Cancelled when the server starts closing sessions for shutdown, so a
    /// session whose token fires knows it is drained, not replaced.
    pub draining: CancellationToken,
    /// Cancelled when new WebSocket upgrades must be refused.
    pub refuse_upgrades: CancellationToken,
    /// Cancelled when `/readyz` must answer 503 (first drain stage).
    pub not_ready: CancellationToken,
    /// Set by the first caller of `drain::drain`.
    pub drain_started: AtomicBool,
    /// Cancelled when the drain has finished or hit its deadline.
    pub drain_done: CancellationToken,
    /// Bounds close callbacks in flight at once (`drain.callback_concurrency`).
    pub close_permits: Semaphore,
    /// Session tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Close callbacks and other detached work that must finish before exit.
    pub background: TaskTracker,
}

impl Shared {
    pub fn new(config: Config, endpoint: String, metrics: Metrics) -> Arc<Shared> {
        let config = Arc::new(config);
        let callbacks = Callbacks::new(config.clone(), &endpoint, metrics.clone());
        let close_permits = config.drain.callback_concurrency;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_write_buffer_size(WRITE_BUFFER_SIZE + config.max_message_size + 1024)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Arc::new(Shared {
            config,
            registry: Arc::new(Registry::new()),
            metrics,
            callbacks,
            endpoint,
            ws_config,
            root: CancellationToken::new(),
            draining: CancellationToken::new(),
            refuse_upgrades: CancellationToken::new(),
            not_ready: CancellationToken::new(),
            drain_started: AtomicBool::new(false),
            drain_done: CancellationToken::new(),
            close_permits: Semaphore::new(close_permits),
            sessions: TaskTracker::new(),
            background: TaskTracker::new(),
        })
    }
}
