//! The session map: session id -> the live connection's entry (its serial,
//! outlet and stop signal), with the duplicate-id rule: an entry is removed
//! only by the connection it belongs to, so an older connection's exit never
//! removes a newer one.
//!
//! Owns the map and its lock; what an entry's outlet does is `outlet.rs`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::outlet::Outlet;
use super::Stop;

/// One addressable connection.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Unique per connection, so a stale entry never removes a newer one.
    pub(crate) serial: u64,
    pub(crate) outlet: Arc<Outlet>,
    pub(crate) stop: Arc<Stop>,
}

/// Shared map of addressable sessions.
///
/// A `std::sync::RwLock` because every critical section is a map lookup or
/// a non-blocking outlet offer, never an `.await`; pushes (the hot path)
/// only take the read side and so run in parallel.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: RwLock<HashMap<Arc<str>, Entry>>,
}

impl Registry {
    /// Registers `entry` under `id`, returning the entry it replaced.
    pub(crate) fn insert(&self, id: Arc<str>, entry: Entry) -> Option<Entry> {
        self.map.write().expect("registry lock").insert(id, entry)
    }

    /// Removes `id` only while it still belongs to connection `serial`.
    pub(crate) fn remove(&self, id: &str, serial: u64) -> bool {
        let mut map = self.map.write().expect("registry lock");
        if map.get(id).is_some_and(|e| e.serial == serial) {
            map.remove(id);
            true
        } else {
            false
        }
    }

    /// Runs `f` on each id's entry (or `None`) under one read lock.
    /// `f` must not block: it runs with the lock held.
    pub(crate) fn with_each<'a, I, F>(&self, ids: I, mut f: F)
    where
        I: IntoIterator<Item = &'a str>,
        F: FnMut(&'a str, Option<&Entry>),
    {
        let map = self.map.read().expect("registry lock");
        for id in ids {
            f(id, map.get(id));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().expect("registry lock").len()
    }

    /// Every entry's id and stop signal, for the drain.
    pub(crate) fn stops(&self) -> Vec<(Arc<str>, Arc<Stop>)> {
        self.map
            .read()
            .expect("registry lock")
            .iter()
            .map(|(id, e)| (id.clone(), e.stop.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::outlet;

    fn entry(serial: u64) -> Entry {
        Entry {
            serial,
            outlet: outlet::channel(1).0,
            stop: Arc::new(Stop::default()),
        }
    }

    #[test]
    fn an_old_connection_never_removes_a_newer_one() {
        let r = Registry::default();
        assert!(r.insert("a".into(), entry(1)).is_none());
        let replaced = r.insert("a".into(), entry(2)).expect("old entry returned");
        assert_eq!(replaced.serial, 1);
        assert!(!r.remove("a", 1));
        assert_eq!(r.len(), 1);
        assert!(r.remove("a", 2));
        assert_eq!(r.len(), 0);
    }
}
