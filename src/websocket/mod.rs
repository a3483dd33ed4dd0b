//! The WebSocket protocol on the server's side of a connection, beyond
//! what the handshake and the write side (`frame`, `sessions::outlet`) do:
//! the frame reader (`reader`), permessage-deflate's negotiation
//! (`negotiate`) and inflation of client messages (`inflate`), the
//! `compression.*` keys (`config`) and their metrics (`metrics`).

pub(crate) mod config;
pub(crate) mod inflate;
pub(crate) mod metrics;
pub(crate) mod negotiate;
pub(crate) mod reader;
