//! The sessions core: every addressable connection, and the one way to reach
//! them. `/send`, `/close` (and anything else that pushes) call
//! [`Sessions::deliver`]; connections come and go through
//! [`Sessions::attach`], [`Sessions::register`] and [`Sessions::unregister`];
//! the drain stops them with [`Sessions::close_all`].
//!
//! Owns the id -> connection map ([`registry`]), channel membership
//! ([`channels`]), each connection's write side and queue accounting
//! ([`outlet`]), and the rules between them: the newest connection with an
//! id wins (and brings its own channels), a push is written directly or
//! queued in order, a channel push reaches each member once, a full queue is
//! waited on up to `send_timeout`, and the app's close takes effect for
//! addressing at once. It never reads a socket; the session task does.

pub(crate) mod channels;
pub(crate) mod config;
mod handle;
pub(crate) mod metrics;
mod outcome;
pub(crate) mod outlet;
mod page;
pub(crate) mod registry;
pub(crate) mod socket;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use crate::frame::SessionDeflate;
use crate::metrics::Metrics;
use channels::{Change, Member};
pub(crate) use handle::{Info, Stop, StopReason};
use metrics::SessionsMetrics;
pub(crate) use outcome::{ChannelOutcome, Outcome, Reach, WriteError};
use outlet::{Mailbox, Outlet, Push};
pub(crate) use registry::Missed;
use registry::{Entry, Registry};

/// A session became addressable here, or stopped being; a channel gained
/// its first member here or lost its last one (for cluster mode, which
/// subscribes to each session's and channel's subject while this node holds
/// it; a channel event is a hint to look again, as events may arrive out of
/// order).
#[derive(Debug)]
pub(crate) enum SessionEvent {
    Registered {
        id: Arc<str>,
        serial: u64,
    },
    Unregistered {
        id: Arc<str>,
        serial: u64,
    },
    Channel {
        name: Arc<str>,
    },
    /// Answered once every event before it has taken effect (cluster mode:
    /// the NATS server has the subscriptions).
    Barrier(oneshot::Sender<()>),
}

/// A channel push offered to the members here, some perhaps still waiting
/// for room in their queues ([`Sessions::settle`] finishes it).
#[derive(Debug)]
pub(crate) struct Offered {
    reach: Vec<Reach>,
    /// Every member's outcome so far, for the metrics.
    outcomes: Vec<Outcome>,
    /// Members whose queue was full: (channel index, id, outlet, serial
    /// for a close).
    waiting: Vec<(usize, Arc<str>, Member, Option<u64>)>,
    push: Push,
}

impl Offered {
    /// `serial` is the member's connection for a close (to unregister it).
    fn record(&mut self, c: usize, id: &Arc<str>, serial: Option<u64>, outcome: Outcome) {
        self.reach[c].record(id, outcome);
        if let (true, Some(serial)) = (outcome.delivered(), serial) {
            self.reach[c].closed.push((id.clone(), serial));
        }
        self.outcomes.push(outcome);
    }

    /// Members reached so far or waiting for room, over every channel.
    pub(crate) fn reached(&self) -> usize {
        self.reach.iter().map(|r| r.delivered).sum::<usize>() + self.waiting.len()
    }
}

/// One channel as `GET /channels` lists it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChannelView {
    pub(crate) channel: String,
    pub(crate) members: usize,
}

/// One session as `GET /sessions` lists it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct SessionView {
    pub(crate) session: String,
    pub(crate) age_seconds: f64,
    pub(crate) remote: Option<String>,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) queued_bytes: usize,
    pub(crate) channels: Vec<String>,
    /// The session negotiated permessage-deflate.
    pub(crate) permessage_deflate: bool,
}

/// A connection with an id that is not (yet) addressable: the connect
/// handler attaches it, and it is registered before or after the upgrade.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) id: Arc<str>,
    pub(crate) serial: u64,
    pub(crate) stop: Arc<Stop>,
    pub(crate) info: Arc<Info>,
    outlet: Arc<Outlet>,
}

/// Every addressable session of this server.
#[derive(Debug)]
pub(crate) struct Sessions {
    registry: Registry,
    next_serial: AtomicU64,
    /// Set by the drain: a session registered from now on is stopped at once.
    closing: AtomicBool,
    queue_size: usize,
    send_timeout: Option<Duration>,
    max_channels: usize,
    metrics: SessionsMetrics,
    /// Where registrations are reported (cluster mode only).
    events: Option<mpsc::UnboundedSender<SessionEvent>>,
}

impl Sessions {
    /// `queue_size` items per session queue (at least 1); a full queue is
    /// waited on up to `send_timeout` (`None`: no limit); a session is in
    /// `max_channels` channels at most.
    pub(crate) fn new(
        queue_size: usize,
        send_timeout: Option<Duration>,
        max_channels: usize,
        metrics: &Metrics,
        events: Option<mpsc::UnboundedSender<SessionEvent>>,
    ) -> Sessions {
        Sessions {
            registry: Registry::default(),
            next_serial: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            queue_size: queue_size.max(1),
            send_timeout,
            max_channels,
            metrics: SessionsMetrics::new(metrics),
            events,
        }
    }

    fn report(&self, event: impl FnOnce() -> SessionEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event());
        }
    }

    /// Counts a membership change and reports the channels it touched.
    fn changed(&self, change: Change) {
        if change.channels == 0 && change.members == 0 && change.touched.is_empty() {
            // A session in no channel came or went: nothing to count.
            return;
        }
        self.metrics
            .channels_changed(change.channels, change.members);
        for name in change.touched {
            self.report(|| SessionEvent::Channel { name });
        }
    }

    /// Resolves once every membership change made so far has taken effect
    /// for the other nodes (at once on a single node).
    pub(crate) async fn settled(&self) {
        if let Some(events) = &self.events {
            let (done, wait) = oneshot::channel();
            if events.send(SessionEvent::Barrier(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// The most channels a session may be in.
    pub(crate) fn max_channels(&self) -> usize {
        self.max_channels
    }

    /// A new connection under `id` from `remote`, with the mailbox its task reads.
    pub(crate) fn attach(
        &self,
        id: Arc<str>,
        remote: Option<String>,
        deflate: Option<SessionDeflate>,
    ) -> (Attached, Mailbox) {
        let (outlet, mailbox) = outlet::channel(self.queue_size, deflate);
        let attached = Attached {
            id,
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            stop: Arc::new(Stop::default()),
            info: Arc::new(Info::new(remote)),
            outlet,
        };
        (attached, mailbox)
    }

    /// Makes `conn` addressable, a member of `channels` (the connect
    /// callback's); an older connection with the same id is stopped (it
    /// closes with 4001 after what was queued for it) and its memberships
    /// end.
    pub(crate) fn register(&self, conn: &Attached, channels: &[Arc<str>]) {
        let entry = Entry {
            serial: conn.serial,
            outlet: conn.outlet.clone(),
            stop: conn.stop.clone(),
            info: conn.info.clone(),
        };
        let mut change = Change::default();
        let old = self
            .registry
            .insert(conn.id.clone(), entry, channels, &mut change);
        if let Some(old) = old {
            tracing::info!(session = %conn.id, "session id reused: closing the older connection");
            old.stop.stop(StopReason::Replaced);
        }
        self.changed(change);
        self.report(|| SessionEvent::Registered {
            id: conn.id.clone(),
            serial: conn.serial,
        });
        // Checked after the insert: either the drain's snapshot has this
        // entry, or this sees the flag the drain set before taking it.
        if self.closing.load(Ordering::SeqCst) {
            conn.stop.stop(StopReason::Drain);
        }
    }

    /// The message metrics (connections count what they write).
    pub(crate) fn metrics(&self) -> &SessionsMetrics {
        &self.metrics
    }

    /// Removes `conn` from the map if it is still the one under its id.
    pub(crate) fn unregister(&self, conn: &Attached) {
        self.forget(&conn.id, conn.serial);
    }

    /// Removes connection `serial` under `id` (and its memberships), if it
    /// is still the one there.
    fn forget(&self, id: &str, serial: u64) {
        let mut change = Change::default();
        if self.registry.remove(id, serial, &mut change) {
            self.report(|| SessionEvent::Unregistered {
                id: Arc::from(id),
                serial,
            });
        }
        self.changed(change);
    }

    /// Puts each of `ids` in every channel of `names` (all or none per
    /// session); one result per id.
    pub(crate) fn join<S: AsRef<str>>(&self, ids: &[S], names: &[&str]) -> Vec<Result<(), Missed>> {
        self.each_membership(ids, |id, change| {
            self.registry.join(id, names, self.max_channels, change)
        })
    }

    /// Takes each of `ids` out of `names`; one result per id.
    pub(crate) fn leave<S: AsRef<str>>(
        &self,
        ids: &[S],
        names: &[&str],
    ) -> Vec<Result<(), Missed>> {
        self.each_membership(ids, |id, change| self.registry.leave(id, names, change))
    }

    fn each_membership<S: AsRef<str>>(
        &self,
        ids: &[S],
        mut f: impl FnMut(&str, &mut Change) -> Result<(), Missed>,
    ) -> Vec<Result<(), Missed>> {
        let mut change = Change::default();
        let results = ids.iter().map(|id| f(id.as_ref(), &mut change)).collect();
        self.changed(change);
        results
    }

    /// Whether channel `name` has a member here.
    pub(crate) fn has_members(&self, name: &str) -> bool {
        self.registry.read().channels.members(name).is_some()
    }

    /// Up to `limit` channels with members here whose names start with
    /// `prefix` and sort after `after`, in name order.
    pub(crate) fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<ChannelView> {
        self.registry
            .read()
            .channels
            .page(prefix, after, limit)
            .into_iter()
            .map(|(name, members)| ChannelView {
                channel: name.to_string(),
                members,
            })
            .collect()
    }

    /// Stops the session held here under `id`, if any.
    pub(crate) fn stop(&self, id: &str, reason: StopReason) {
        self.registry.with_each([id], |_, entry| {
            if let Some(entry) = entry {
                entry.stop.stop(reason);
            }
        });
    }

    /// Addressable sessions.
    pub(crate) fn len(&self) -> usize {
        self.registry.len()
    }

    /// Up to `limit` sessions whose ids start with `prefix` and sort after
    /// `after`, in id order (see [`Registry::page`] for the cost).
    pub(crate) fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<SessionView> {
        let now = std::time::SystemTime::now();
        self.registry
            .page(prefix, after, limit)
            .into_iter()
            .map(|(id, entry, channels)| {
                let (messages_out, queued_bytes) = entry.outlet.counts();
                SessionView {
                    session: id.to_string(),
                    age_seconds: now
                        .duration_since(entry.info.opened)
                        .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
                        .unwrap_or(0.0),
                    remote: entry.info.remote.clone(),
                    messages_in: entry.info.received.load(Ordering::Relaxed),
                    messages_out,
                    queued_bytes,
                    channels,
                    permessage_deflate: entry.outlet.deflated(),
                }
            })
            .collect()
    }

    /// Indices of `targets` that no session has.
    pub(crate) fn missing<S: AsRef<str>>(&self, targets: &[S]) -> Vec<usize> {
        let mut missing = Vec::new();
        let mut i = 0;
        self.registry
            .with_each(targets.iter().map(AsRef::as_ref), |_, entry| {
                if entry.is_none() {
                    missing.push(i);
                }
                i += 1;
            });
        missing
    }

    /// From now on every session is stopped as it registers; returns the
    /// stop signals of those registered now, for the drain to use.
    pub(crate) fn close_all(&self) -> Vec<Arc<Stop>> {
        self.closing.store(true, Ordering::SeqCst);
        self.registry.stops().into_iter().map(|(_, s)| s).collect()
    }

    /// Hands `push` to every target: written straight onto idle sockets,
    /// queued for the others, full queues waited on all at once (so one slow
    /// session does not delay the rest). One outcome per target, in order.
    /// A `Close` that reached a session unregisters it at once.
    pub(crate) async fn deliver<S: AsRef<str>>(&self, targets: &[S], push: Push) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(targets.len());
        let mut waiting: Vec<(usize, Entry)> = Vec::new();
        let mut closed: Vec<(usize, u64)> = Vec::new();
        let is_close = matches!(push, Push::Close(_));
        // Fast path under one read lock: nothing here waits.
        self.registry
            .with_each(targets.iter().map(AsRef::as_ref), |_, entry| {
                let Some(entry) = entry else {
                    outcomes.push(Outcome::NotFound);
                    return;
                };
                let outcome = Outcome::from(entry.outlet.offer(&push));
                if outcome == Outcome::Full {
                    waiting.push((outcomes.len(), entry.clone()));
                } else if is_close && outcome.delivered() {
                    closed.push((outcomes.len(), entry.serial));
                }
                outcomes.push(outcome);
            });
        // Slow path: wait for room in the full queues, all at once.
        let waited = self
            .wait_full(waiting.iter().map(|(_, e)| &e.outlet), &push)
            .await;
        for ((i, entry), outcome) in waiting.iter().zip(waited) {
            outcomes[*i] = outcome;
            if is_close && outcome.delivered() {
                closed.push((*i, entry.serial));
            }
        }
        // The app's close takes effect for addressing at once: later pushes
        // to these ids are "not found" while the close frame is on its way.
        for (i, serial) in closed {
            self.forget(targets[i].as_ref(), serial);
        }
        self.metrics
            .pushed(&outcomes, push.frame().map(|f| f.payload));
        outcomes
    }

    /// [`Sessions::deliver`] to one session, allocating nothing.
    pub(crate) async fn deliver_one(&self, id: &str, push: Push) -> Outcome {
        let mut outcome = Outcome::NotFound;
        let mut held: Option<(u64, Arc<Outlet>)> = None;
        self.registry.with_each([id], |_, entry| {
            if let Some(entry) = entry {
                outcome = Outcome::from(entry.outlet.offer(&push));
                held = Some((entry.serial, entry.outlet.clone()));
            }
        });
        if let (Outcome::Full, Some((_, outlet))) = (outcome, &held) {
            outcome = Outcome::from(outlet.wait_room(push.clone(), self.send_timeout).await);
        }
        if let (Push::Close(_), true, Some((serial, _))) = (&push, outcome.delivered(), held) {
            self.forget(id, serial);
        }
        self.metrics.pushed(
            std::slice::from_ref(&outcome),
            push.frame().map(|f| f.payload),
        );
        outcome
    }

    /// Waits for room in each of these full queues, all at once, up to
    /// `send_timeout`.
    async fn wait_full<'a>(
        &self,
        outlets: impl Iterator<Item = &'a Arc<Outlet>>,
        push: &Push,
    ) -> Vec<Outcome> {
        let limit = self.send_timeout;
        join_all(outlets.map(|outlet| outlet.wait_room(push.clone(), limit)))
            .await
            .into_iter()
            .map(Outcome::from)
            .collect()
    }

    /// Hands `push` to the members here of each of `channels`, each session
    /// once however many of them it is in, leaving out those in `skip`
    /// (sessions addressed by id, and excluded ones) and the members of
    /// `covered` (channels an earlier part of the same push reached). This
    /// is the part that does not wait: under one read lock, the frame is
    /// written straight onto idle members' sockets or queued; members with
    /// a full queue are left for [`Sessions::settle`], which gives one
    /// [`Reach`] per channel.
    pub(crate) fn offer_channels<S: AsRef<str>>(
        &self,
        channels: &[&str],
        skip: &HashSet<&str>,
        covered: &[S],
        push: Push,
    ) -> Offered {
        let mut offered = Offered {
            reach: vec![Reach::default(); channels.len()],
            outcomes: Vec::new(),
            waiting: Vec::new(),
            push,
        };
        let is_close = matches!(offered.push, Push::Close(_));
        let book = self.registry.read();
        let dedupe = channels.len() > 1 || !covered.is_empty();
        let mut seen: HashSet<&str> = HashSet::new();
        for name in covered {
            if let Some(members) = book.channels.members(name.as_ref()) {
                seen.extend(members.keys().map(|id| &**id));
            }
        }
        for (c, name) in channels.iter().enumerate() {
            let Some(members) = book.channels.members(name) else {
                continue;
            };
            offered.reach[c].members = members.len();
            for (id, member) in members {
                if skip.contains(&**id) || (dedupe && !seen.insert(&**id)) {
                    continue;
                }
                let serial = is_close.then(|| book.serial(id)).flatten();
                match Outcome::from(member.offer(&offered.push)) {
                    Outcome::Full => offered
                        .waiting
                        .push((c, id.clone(), member.clone(), serial)),
                    outcome => offered.record(c, id, serial, outcome),
                }
            }
        }
        offered
    }

    /// The rest of a channel push: waits for room in the full queues, all at
    /// once, up to `send_timeout`; unregisters the members a close reached;
    /// counts it.
    pub(crate) async fn settle(&self, mut offered: Offered) -> Vec<Reach> {
        let waiting = std::mem::take(&mut offered.waiting);
        let waited = self
            .wait_full(
                waiting.iter().map(|(_, _, outlet, _)| outlet),
                &offered.push,
            )
            .await;
        for ((c, id, _, serial), outcome) in waiting.into_iter().zip(waited) {
            offered.record(c, &id, serial, outcome);
        }
        if matches!(offered.push, Push::Close(_)) {
            for reach in &offered.reach {
                for (id, serial) in &reach.closed {
                    self.forget(id, *serial);
                }
            }
        }
        self.metrics
            .pushed(&offered.outcomes, offered.push.frame().map(|f| f.payload));
        offered.reach
    }
}
