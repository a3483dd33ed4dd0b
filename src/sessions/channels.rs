//! Channel membership on this node: channel name -> the sessions in it here,
//! and each session's channels; the rule for a channel name.
//!
//! Owns the two tables and their invariants: a name is stored once (every
//! membership shares its `Arc`), a channel exists only while it has a member
//! here, and a session in no channel has no entry at all. The registry keeps
//! them under its lock, beside the sessions map. A membership is one entry
//! in its channel's map (the session id and its outlet) and one name in the
//! session's list, which is kept inline for a session in one channel and
//! keyed by the connection's serial.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::outlet::Outlet;
use super::page::smallest;

/// The longest channel name, in bytes.
pub(crate) const MAX_NAME: usize = 200;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    Empty,
    TooLong(usize),
    BadByte(u8),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "a channel name is empty"),
            NameError::TooLong(n) => {
                write!(f, "a channel name of {n} bytes is longer than {MAX_NAME}")
            }
            NameError::BadByte(b) => write!(
                f,
                "byte 0x{b:02x} in a channel name: names are printable ASCII without comma or space"
            ),
        }
    }
}

/// Checks one name: 1-200 bytes of printable ASCII, no comma, no space.
pub(crate) fn check_name(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(&b) = name
        .iter()
        .find(|&&b| !(0x21..=0x7e).contains(&b) || b == b',')
    {
        return Err(NameError::BadByte(b));
    }
    Ok(std::str::from_utf8(name).expect("ASCII is UTF-8"))
}

/// The names in header values, each one name or a comma-separated list
/// (blanks around a name are dropped), without repeats, in order.
pub(crate) fn parse_names<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<&'a str>, NameError> {
    let mut names: Vec<&str> = Vec::new();
    for value in values {
        for part in value.split(|&b| b == b',') {
            let name = check_name(part.trim_ascii())?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// A session's place in a channel: enough to write to it without a lookup.
pub(crate) type Member = Arc<Outlet>;

/// The channels of one session: one inline, more boxed.
#[derive(Debug)]
enum Joined {
    One(Arc<str>),
    Many(Box<[Arc<str>]>),
}

impl Joined {
    fn names(&self) -> &[Arc<str>] {
        match self {
            Joined::One(name) => std::slice::from_ref(name),
            Joined::Many(names) => names,
        }
    }

    fn from(mut names: Vec<Arc<str>>) -> Option<Joined> {
        match names.len() {
            0 => None,
            1 => names.pop().map(Joined::One),
            _ => Some(Joined::Many(names.into_boxed_slice())),
        }
    }
}

/// What a membership change did, for the gauges and cluster mode.
#[derive(Debug, Default)]
pub(crate) struct Change {
    /// Channels that gained their first member or lost their last one.
    pub(crate) touched: Vec<Arc<str>>,
    /// Channels here, after minus before.
    pub(crate) channels: i64,
    /// Memberships here, after minus before.
    pub(crate) members: i64,
}

/// A join would take a session past `channel.max_per_session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany;

/// Both directions of membership.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, Member>>,
    /// By connection serial; only sessions in at least one channel have an
    /// entry.
    joined: HashMap<u64, Joined>,
}

impl Channels {
    /// Puts session `id` (connection `serial`) in each of `names`; none of
    /// them when that would make more than `max` channels for it. Joining
    /// twice is joining once.
    pub(crate) fn join(
        &mut self,
        (id, serial): (&Arc<str>, u64),
        member: &Member,
        names: &[&str],
        max: usize,
        change: &mut Change,
    ) -> Result<(), TooMany> {
        let current: &[Arc<str>] = self.joined.get(&serial).map_or(&[], Joined::names);
        let mut new: Vec<&str> = Vec::with_capacity(names.len());
        for &name in names {
            if !current.iter().any(|c| &**c == name) && !new.contains(&name) {
                new.push(name);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        if current.len() + new.len() > max {
            return Err(TooMany);
        }
        let mut all: Vec<Arc<str>> = Vec::with_capacity(current.len() + new.len());
        all.extend(current.iter().cloned());
        for name in new {
            let name = match self.rooms.get_key_value(name) {
                Some((stored, _)) => stored.clone(),
                None => {
                    let stored: Arc<str> = Arc::from(name);
                    self.rooms.insert(stored.clone(), HashMap::new());
                    change.touched.push(stored.clone());
                    change.channels += 1;
                    stored
                }
            };
            let room = self.rooms.get_mut(&name).expect("inserted above");
            room.insert(id.clone(), member.clone());
            change.members += 1;
            all.push(name);
        }
        self.joined
            .insert(serial, Joined::from(all).expect("at least one"));
        Ok(())
    }

    /// Takes session `id` (connection `serial`) out of each of `names` it
    /// is in.
    pub(crate) fn leave(&mut self, (id, serial): (&str, u64), names: &[&str], change: &mut Change) {
        let Some(current) = self.joined.get(&serial) else {
            return;
        };
        let (gone, kept): (Vec<Arc<str>>, Vec<Arc<str>>) = current
            .names()
            .iter()
            .cloned()
            .partition(|c| names.contains(&&**c));
        if gone.is_empty() {
            return;
        }
        match Joined::from(kept) {
            Some(kept) => {
                self.joined.insert(serial, kept);
            }
            None => {
                self.joined.remove(&serial);
            }
        }
        for name in gone {
            self.take_out(&name, id, change);
        }
    }

    /// Takes session `id` (connection `serial`) out of every channel (it is
    /// gone or replaced).
    pub(crate) fn drop_session(&mut self, (id, serial): (&str, u64), change: &mut Change) {
        if let Some(current) = self.joined.remove(&serial) {
            for name in current.names() {
                self.take_out(name, id, change);
            }
        }
    }

    fn take_out(&mut self, name: &Arc<str>, id: &str, change: &mut Change) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.remove(id).is_some() {
            change.members -= 1;
        }
        if room.is_empty() {
            self.rooms.remove(name);
            change.touched.push(name.clone());
            change.channels -= 1;
        } else if room.capacity() > 4 * room.len().max(4) {
            room.shrink_to_fit();
        }
    }

    /// The members of `name` here, if it has any.
    pub(crate) fn members(&self, name: &str) -> Option<&HashMap<Arc<str>, Member>> {
        self.rooms.get(name)
    }

    /// The channels of connection `serial`.
    pub(crate) fn of(&self, serial: u64) -> &[Arc<str>] {
        self.joined.get(&serial).map_or(&[], Joined::names)
    }

    /// Up to `limit` channels whose names start with `prefix` and sort after
    /// `after`, in name order, with their member counts (a bounded heap, as
    /// the sessions page).
    pub(crate) fn page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Arc<str>, usize)> {
        smallest(self.rooms.keys(), prefix, after, limit)
            .into_iter()
            .map(|name| (name.clone(), self.rooms[name].len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::outlet;

    fn member() -> Member {
        outlet::channel(1, None).0
    }

    #[test]
    fn names_follow_the_rule() {
        assert_eq!(parse_names([&b"a, b,a"[..], b"c"]), Ok(vec!["a", "b", "c"]));
        assert_eq!(parse_names([&b"a,,b"[..]]), Err(NameError::Empty));
        assert_eq!(parse_names([&b""[..]]), Err(NameError::Empty));
        assert_eq!(parse_names([&b"a b"[..]]), Err(NameError::BadByte(b' ')));
        assert_eq!(parse_names(["é".as_bytes()]), Err(NameError::BadByte(0xc3)));
        assert_eq!(check_name(&[b'x'; 200]).map(str::len), Ok(200));
        assert_eq!(check_name(&[b'x'; 201]), Err(NameError::TooLong(201)));
        assert!(check_name(b"room:1/a~!#").is_ok());
    }

    #[test]
    fn a_name_is_stored_once_and_a_channel_lives_while_it_has_members() {
        let mut c = Channels::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut change = Change::default();
        c.join((&a, 1), &member(), &["x", "y"], 100, &mut change)
            .unwrap();
        c.join((&b, 2), &member(), &["x", "x"], 100, &mut change)
            .unwrap();
        c.join((&b, 2), &member(), &["x"], 100, &mut change)
            .unwrap();
        assert_eq!(c.of(2).len(), 1, "a name given twice is one membership");
        assert!(matches!(c.joined[&2], Joined::One(_)), "one channel inline");
        assert_eq!((change.channels, change.members), (2, 3));
        assert!(
            Arc::ptr_eq(&c.of(1)[0], &c.of(2)[0]),
            "one copy of the name"
        );
        assert_eq!(c.page("", None, 10), [("x".into(), 2), ("y".into(), 1)]);
        let mut change = Change::default();
        c.leave(("a", 1), &["y", "z"], &mut change);
        assert_eq!(&*change.touched, [Arc::<str>::from("y")]);
        assert!(matches!(c.joined[&1], Joined::One(_)));
        c.leave(("a", 1), &["x"], &mut change);
        assert!(
            !c.joined.contains_key(&1),
            "no entry for a session in no channel"
        );
        c.drop_session(("b", 2), &mut change);
        assert!(c.rooms.is_empty() && c.joined.is_empty());
        assert_eq!((change.channels, change.members), (-2, -3));
    }

    #[test]
    fn a_join_past_the_limit_joins_nothing() {
        let mut c = Channels::default();
        let a: Arc<str> = "a".into();
        let mut change = Change::default();
        c.join((&a, 1), &member(), &["x", "y"], 3, &mut change)
            .unwrap();
        assert_eq!(
            c.join((&a, 1), &member(), &["x", "z", "w"], 3, &mut change),
            Err(TooMany)
        );
        assert_eq!(c.of(1).len(), 2);
        c.join((&a, 1), &member(), &["x", "z"], 3, &mut change)
            .unwrap();
        assert_eq!(c.of(1).len(), 3);
    }
}
