//! The session map: session id -> the live connection's entry (its serial,
//! outlet and stop signal), with the duplicate-id rule: an entry is removed
//! only by the connection it belongs to, so an older connection's exit never
//! removes a newer one. The channel tables sit under the same lock, so a
//! session's memberships come and go with its entry.
//!
//! Owns the map and its lock; what an entry's outlet does is `outlet.rs`,
//! what a membership is `channels.rs`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::channels::{Change, Channels, TooMany};
use super::handle::{Info, Stop};
use super::outlet::Outlet;
use super::page::smallest;

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
    book: RwLock<Book>,
}

/// What the lock guards.
#[derive(Debug, Default)]
pub(crate) struct Book {
    map: HashMap<Arc<str>, Entry>,
    pub(crate) channels: Channels,
}

/// Why a membership change was not made for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// No session has this id.
    NotFound,
    /// It would be in more than `channel.max_per_session` channels.
    TooMany,
    /// In cluster mode, the node holding it could not be asked.
    Unavailable,
}

impl Registry {
    /// Registers `entry` under `id` in `channels` (the replaced entry's
    /// memberships end), returning the entry it replaced.
    pub(crate) fn insert(
        &self,
        id: Arc<str>,
        entry: Entry,
        channels: &[Arc<str>],
        change: &mut Change,
    ) -> Option<Entry> {
        let mut book = self.book.write().expect("registry lock");
        let book = &mut *book;
        let (serial, outlet) = (entry.serial, entry.outlet.clone());
        let old = book.map.insert(id.clone(), entry);
        if let Some(old) = &old {
            book.channels.drop_session((&id, old.serial), change);
        }
        if !channels.is_empty() {
            let names: Vec<&str> = channels.iter().map(|c| &**c).collect();
            let _ = book
                .channels
                .join((&id, serial), &outlet, &names, usize::MAX, change);
        }
        old
    }

    /// Removes `id` (and its memberships) only while it still belongs to
    /// connection `serial`.
    pub(crate) fn remove(&self, id: &str, serial: u64, change: &mut Change) -> bool {
        let mut book = self.book.write().expect("registry lock");
        if book.map.get(id).is_some_and(|e| e.serial == serial) {
            book.map.remove(id);
            book.channels.drop_session((id, serial), change);
            true
        } else {
            false
        }
    }

    /// Puts session `id` in `names` (all or none, at most `max` channels).
    pub(crate) fn join(
        &self,
        id: &str,
        names: &[&str],
        max: usize,
        change: &mut Change,
    ) -> Result<(), Missed> {
        let mut book = self.book.write().expect("registry lock");
        let book = &mut *book;
        let Some((id, entry)) = book.map.get_key_value(id) else {
            return Err(Missed::NotFound);
        };
        book.channels
            .join((id, entry.serial), &entry.outlet, names, max, change)
            .map_err(|TooMany| Missed::TooMany)
    }

    /// Takes session `id` out of `names`.
    pub(crate) fn leave(
        &self,
        id: &str,
        names: &[&str],
        change: &mut Change,
    ) -> Result<(), Missed> {
        let mut book = self.book.write().expect("registry lock");
        let Some(serial) = book.map.get(id).map(|e| e.serial) else {
            return Err(Missed::NotFound);
        };
        book.channels.leave((id, serial), names, change);
        Ok(())
    }

    /// The sessions and channels, read-locked: hold it only to look up and
    /// offer, never across an `.await`.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Book> {
        self.book.read().expect("registry lock")
    }

    /// Runs `f` on each id's entry (or `None`) under one read lock.
    /// `f` must not block: it runs with the lock held.
    pub(crate) fn with_each<'a, I, F>(&self, ids: I, mut f: F)
    where
        I: IntoIterator<Item = &'a str>,
        F: FnMut(&'a str, Option<&Entry>),
    {
        let book = self.read();
        for id in ids {
            f(id, book.map.get(id));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.read().map.len()
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
    ) -> Vec<(Arc<str>, Entry, Vec<String>)> {
        let book = self.read();
        let map = &book.map;
        smallest(map.keys(), prefix, after, limit)
            .into_iter()
            .map(|id| {
                let entry = &map[id];
                let channels = book.channels.of(entry.serial).iter();
                let channels = channels.map(|c| c.to_string()).collect();
                (id.clone(), entry.clone(), channels)
            })
            .collect()
    }

    /// Every entry's id and stop signal, for the drain.
    pub(crate) fn stops(&self) -> Vec<(Arc<str>, Arc<Stop>)> {
        self.read()
            .map
            .iter()
            .map(|(id, e)| (id.clone(), e.stop.clone()))
            .collect()
    }
}

impl Book {
    /// The connection serial of session `id`, if it is here.
    pub(crate) fn serial(&self, id: &str) -> Option<u64> {
        self.map.get(id).map(|e| e.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::outlet;

    fn entry(serial: u64) -> Entry {
        Entry {
            serial,
            outlet: outlet::channel(1, None).0,
            stop: Arc::new(Stop::default()),
            info: Arc::new(Info::new(None)),
        }
    }

    #[test]
    fn pages_are_ordered_filtered_and_bounded() {
        let r = Registry::default();
        for (i, id) in ["b2", "a1", "b1", "c1", "b3"].iter().enumerate() {
            r.insert((*id).into(), entry(i as u64), &[], &mut Change::default());
        }
        let ids = |page: Vec<(Arc<str>, Entry, Vec<String>)>| {
            page.into_iter()
                .map(|(id, _, _)| id.to_string())
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
        let c = &mut Change::default();
        let x: Arc<str> = "x".into();
        assert!(r
            .insert("a".into(), entry(1), std::slice::from_ref(&x), c)
            .is_none());
        let replaced = r
            .insert("a".into(), entry(2), &[], c)
            .expect("old entry returned");
        assert_eq!(replaced.serial, 1);
        assert!(
            r.read().channels.of(1).is_empty() && r.read().channels.of(2).is_empty(),
            "the new one's channels"
        );
        r.join("a", &["y"], 100, c).unwrap();
        assert!(!r.remove("a", 1, c));
        assert_eq!(r.len(), 1);
        assert_eq!(r.read().channels.of(2).len(), 1);
        assert!(r.remove("a", 2, c));
        assert_eq!(r.len(), 0);
        assert!(r.read().channels.members("y").is_none());
        assert_eq!(r.join("a", &["y"], 100, c), Err(Missed::NotFound));
    }
}
