//! permessage-deflate's metrics: sessions that negotiated it, payloads
//! compressed (once per push), compressed frames sent and the bytes they
//! saved, and client messages inflated.
//!
//! Owns these families; the compressor in `frame` and the connection's
//! reader update them.

use std::sync::Arc;

use prometheus::IntCounter;

use super::config::CompressionConfig;
use crate::frame::Deflater;
use crate::metrics::Metrics;

/// The compression metric handles, and the deflater built on them.
#[derive(Clone, Debug)]
pub(crate) struct CompressionMetrics {
    /// `kuiperbelt_deflate_sessions_total`.
    pub(crate) negotiated: IntCounter,
    /// `kuiperbelt_inflated_messages_total`.
    pub(crate) inflated: IntCounter,
    /// The server's compressor, when `compression.enabled`.
    pub(crate) deflater: Option<Arc<Deflater>>,
}

impl CompressionMetrics {
    pub(crate) fn new(config: &CompressionConfig, metrics: &Metrics) -> CompressionMetrics {
        let deflater = Deflater {
            min_size: config.min_size,
            level: config.level,
            compressions: metrics.counter(
                "kuiperbelt_compressed_payloads_total",
                "Payloads compressed with permessage-deflate: once per push, whatever its number of recipients.",
            ),
            frames: metrics.counter(
                "kuiperbelt_compressed_frames_total",
                "Compressed frames handed to sessions that negotiated permessage-deflate.",
            ),
            saved: metrics.counter(
                "kuiperbelt_compression_saved_bytes_total",
                "Bytes the compressed frames saved against the same frames uncompressed.",
            ),
        };
        CompressionMetrics {
            negotiated: metrics.counter(
                "kuiperbelt_deflate_sessions_total",
                "Connections that negotiated permessage-deflate.",
            ),
            inflated: metrics.counter(
                "kuiperbelt_inflated_messages_total",
                "Compressed client messages inflated before the receive callback.",
            ),
            deflater: config.enabled.then(|| Arc::new(deflater)),
        }
    }
}
