//! The session map: session id -> the live connection's entry (its serial,
//! outlet and stop signal), with the duplicate-id rule: an entry is removed
//! only by the connection it belongs to, so an older connection's exit never
//! removes a newer one.
//!
//! Owns the map and its lock; what an entry's outlet does is `outlet.rs`.

use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, RwLock};

use super::handle::{Info, Stop};
use super::outlet::Outlet;

/// One addressable connection.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Unique per connection, so a stale entry never removes a newer one.
    pub(crate) serial: u64,
    pub(crate) outlet: Arc<Outlet>,
    pub(crate) stop: Arc<Stop>,
    pub(crate) info: Arc<Info>,
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

    /// Up to `limit` entries whose ids start with `prefix` and sort after
    /// `after`, in id order. One pass under the read lock keeping only the
    /// `limit` smallest ids (a bounded heap): O(n log limit) time, O(limit)
    /// memory, and no copy of the map.
    pub(crate) fn page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Arc<str>, Entry)> {
        let map = self.map.read().expect("registry lock");
        let mut smallest: BinaryHeap<&Arc<str>> = BinaryHeap::with_capacity(limit + 1);
        for id in map.keys() {
            if id.starts_with(prefix) && after.is_none_or(|a| &**id > a) {
                smallest.push(id);
                if smallest.len() > limit {
                    smallest.pop();
                }
            }
        }
        smallest
            .into_sorted_vec()
            .into_iter()
            .map(|id| (id.clone(), map[id].clone()))
            .collect()
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
            info: Arc::new(Info::new(None)),
        }
    }

    #[test]
    fn pages_are_ordered_filtered_and_bounded() {
        let r = Registry::default();
        for (i, id) in ["b2", "a1", "b1", "c1", "b3"].iter().enumerate() {
            r.insert((*id).into(), entry(i as u64));
        }
        let ids = |page: Vec<(Arc<str>, Entry)>| {
            page.into_iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(r.page("", None, 10)), ["a1", "b1", "b2", "b3", "c1"]);
        assert_eq!(ids(r.page("b", None, 2)), ["b1", "b2"]);
        assert_eq!(ids(r.page("b", Some("b2"), 2)), ["b3"]);
        assert_eq!(ids(r.page("", Some("c1"), 2)), Vec::<String>::new());
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
