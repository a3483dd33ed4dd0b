//! The session registry: session id -> handle (bounded queue sender, cancel
//! token, serial). It never holds a socket; the session task owns that.
//!
//! Owns the id -> connection mapping and the duplicate-id policy (the newest
//! connection wins; an older connection's exit never removes a newer one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::outlet::Outlet;

/// What the push API hands a session task through its queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Write this frame.
    Message(Message),
    /// Write this frame if any, then close with 1000 (no close callback).
    Close(Option<Message>),
    /// Write the tail of a direct write the socket did not take at once.
    Flush,
}

/// How the push API and the drain reach one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Unique per connection, so a stale handle never removes a newer one.
    pub serial: u64,
    /// A flume sender: its bounded channel allocates nothing until a message
    /// waits (tokio's allocates a 32-slot block, ~2.5 KiB, per channel).
    pub tx: flume::Sender<Outbound>,
    /// Cancelled to end the session (replacement or drain).
    pub cancel: CancellationToken,
    /// The socket's shared write side, for direct writes and queue order.
    pub outlet: Arc<Outlet>,
}

/// Shared map of open sessions.
///
/// A `std::sync::RwLock` because every critical section is a map lookup or
/// a non-blocking `try_send`, never an `.await`; pushes (the hot path) only
/// take the read side and so run in parallel.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: RwLock<HashMap<Arc<str>, SessionHandle>>,
    next_serial: AtomicU64,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A serial for a new connection.
    pub fn next_serial(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `handle` under `id`, returning the handle it replaced.
    pub fn insert(&self, id: Arc<str>, handle: SessionHandle) -> Option<SessionHandle> {
        self.sessions
            .write()
            .expect("registry lock")
            .insert(id, handle)
    }

    /// Removes `id` only while it still belongs to connection `serial`.
    pub fn remove(&self, id: &str, serial: u64) -> bool {
        let mut map = self.sessions.write().expect("registry lock");
        if map.get(id).is_some_and(|h| h.serial == serial) {
            map.remove(id);
            true
        } else {
            false
        }
    }

    /// Runs `f` on each id's handle (or `None`) under one read lock.
    /// `f` must not block: it runs with the lock held.
    pub fn with_each<'a, I, F>(&self, ids: I, mut f: F)
    where
        I: IntoIterator<Item = &'a str>,
        F: FnMut(&'a str, Option<&SessionHandle>),
    {
        let map = self.sessions.read().expect("registry lock");
        for id in ids {
            f(id, map.get(id));
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.sessions
            .read()
            .expect("registry lock")
            .contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.sessions.read().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every handle, for the drain.
    pub fn handles(&self) -> Vec<(Arc<str>, SessionHandle)> {
        self.sessions
            .read()
            .expect("registry lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(registry: &Registry) -> (SessionHandle, flume::Receiver<Outbound>) {
        let (tx, rx) = flume::bounded(1);
        let h = SessionHandle {
            serial: registry.next_serial(),
            tx,
            cancel: CancellationToken::new(),
            outlet: Arc::new(Outlet::new()),
        };
        (h, rx)
    }

    #[test]
    fn an_old_connection_never_removes_a_newer_one() {
        let r = Registry::new();
        let (old, _rx1) = handle(&r);
        let (new, _rx2) = handle(&r);
        let old_serial = old.serial;
        assert!(r.insert("a".into(), old).is_none());
        let replaced = r
            .insert("a".into(), new.clone())
            .expect("old handle returned");
        assert_eq!(replaced.serial, old_serial);
        assert!(!r.remove("a", old_serial));
        assert!(r.contains("a"));
        assert!(r.remove("a", new.serial));
        assert!(r.is_empty());
    }
}
