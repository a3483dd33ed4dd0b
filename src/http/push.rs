//! `POST /send` and `POST /close`: read the targets (session headers,
//! channel headers, exclusions) and the body, hand them to the sessions core
//! ([`Sessions::deliver`] by id, [`Sessions::offer_channels`] then [`Sessions::settle`] by channel) and, in
//! cluster mode, to the other nodes, and answer with the contract's JSON.
//!
//! Owns the HTTP side of a push: method and header checks, the frame type,
//! `strict_broadcast`, and the reply texts. Delivery itself (direct writes,
//! queues, `send_timeout`) is the sessions core's.
//!
//! [`Sessions::deliver`]: crate::sessions::Sessions::deliver
//! [`Sessions::offer_channels`]: crate::sessions::Sessions::offer_channels
//! [`Sessions::settle`]: crate::sessions::Sessions::settle

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};

use super::reply::{self, ApiReply, Body, ErrorEntry};
use super::targets::Targets;
use crate::frame;
use crate::sessions::outlet::Push;
use crate::sessions::{ChannelOutcome, Outcome};
use crate::state::Shared;

/// Which push endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushKind {
    Send,
    Close,
}

/// The text of a target's entry in `errors`.
pub(crate) fn error_text(outcome: Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Written | Outcome::Queued => None,
        Outcome::NotFound => Some("session is not found."),
        Outcome::Full => Some("session queue is full."),
        Outcome::Closed => Some("session is closed."),
        Outcome::Unavailable => Some(UNAVAILABLE),
    }
}

const UNAVAILABLE: &str = "cluster is unavailable.";
const NO_SESSIONS: &str = "channel has no sessions.";

/// Handles `/send` or `/close`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    kind: PushKind,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if method != Method::POST {
        return reply::error(StatusCode::METHOD_NOT_ALLOWED, "required POST method");
    }
    if Targets::none(&headers, &shared.config.session_header) {
        return reply::error(StatusCode::BAD_REQUEST, "session header is missing");
    }
    let targets = match Targets::read(&headers, &shared.config.session_header) {
        Ok(targets) => targets,
        Err(bad) => return bad.reply(),
    };
    let push = if kind == PushKind::Close && body.is_empty() {
        Push::Close(None)
    } else {
        match frame::encode(headers.get(header::CONTENT_TYPE), body) {
            Ok(frame) if kind == PushKind::Send => Push::Message(frame),
            Ok(frame) => Push::Close(Some(frame)),
            Err(e) => return reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    };

    let pushed = deliver(&shared, &targets, push).await;
    if pushed.refused {
        return reply::json(StatusCode::BAD_REQUEST, &pushed.reply);
    }
    reply::outcome(pushed.reply.errors, pushed.reply.result == "OK")
}

/// What a push answered: the reply, and whether `strict_broadcast`
/// refused it (400 for `/send`).
#[derive(Debug)]
pub(crate) struct Pushed {
    pub(crate) reply: ApiReply,
    pub(crate) refused: bool,
}

/// Delivers `push` to `targets` (here and, in cluster mode, on the other
/// nodes) with the rules of `/send`: `strict_broadcast` first, then ids,
/// then channels.
pub(crate) async fn deliver(shared: &Shared, targets: &Targets<'_>, push: Push) -> Pushed {
    let strict = shared.config.strict_broadcast;
    if strict {
        // Nothing is sent when a target is unknown (on every node).
        let mut errors = unknown_sessions(shared, &targets.ids).await;
        errors.extend(empty_channels(shared, &targets.channels).await);
        if !errors.is_empty() {
            return Pushed {
                reply: ApiReply::ng(errors),
                refused: true,
            };
        }
    }
    let (mut errors, mut succeeded) = (Vec::new(), false);
    if !targets.ids.is_empty() {
        let outcomes = to_sessions(shared, &targets.ids, push.clone()).await;
        succeeded |= outcomes.iter().any(|o| o.delivered());
        errors.extend(entries(&targets.ids, outcomes.into_iter().enumerate()));
    }
    if !targets.channels.is_empty() {
        succeeded |= to_channels(shared, targets, push, &mut errors).await;
    }
    let refused = strict && !errors.is_empty();
    let ok = !refused && (succeeded || errors.is_empty());
    Pushed {
        reply: ApiReply {
            errors,
            result: if ok { "OK" } else { "NG" },
        },
        refused,
    }
}

/// `errors` entries for the ids no node holds (or the cluster cannot say).
async fn unknown_sessions(shared: &Shared, ids: &[Cow<'_, str>]) -> Vec<ErrorEntry> {
    let mut missing: Vec<(usize, Outcome)> = shared
        .sessions
        .missing(ids)
        .into_iter()
        .map(|i| (i, Outcome::NotFound))
        .collect();
    if let (Some(cluster), false) = (&shared.cluster, missing.is_empty()) {
        let asked: Vec<&str> = missing.iter().map(|(i, _)| ids[*i].as_ref()).collect();
        let remote = cluster.unreachable(&asked).await;
        missing = missing
            .into_iter()
            .zip(remote)
            .filter_map(|((i, _), why)| why.map(|o| (i, o)))
            .collect();
    }
    entries(ids, missing.into_iter())
}

/// `errors` entries for the channels with no member on any node (or whose
/// other nodes cannot be asked).
async fn empty_channels(shared: &Shared, channels: &[&str]) -> Vec<ErrorEntry> {
    let empty: Vec<&str> = channels
        .iter()
        .copied()
        .filter(|name| !shared.sessions.has_members(name))
        .collect();
    let why: Vec<Option<Outcome>> = match (&shared.cluster, empty.is_empty()) {
        (Some(cluster), false) => cluster.channels_unreachable(&empty).await,
        _ => vec![Some(Outcome::NotFound); empty.len()],
    };
    empty
        .into_iter()
        .zip(why)
        .filter_map(|(name, why)| match why? {
            Outcome::NotFound => Some(ErrorEntry::channel(NO_SESSIONS, name)),
            _ => Some(ErrorEntry::channel(UNAVAILABLE, name)),
        })
        .collect()
}

/// Delivers to sessions by id: here, then (cluster mode) on the nodes that
/// hold the others. One outcome per id.
async fn to_sessions(shared: &Shared, ids: &[Cow<'_, str>], push: Push) -> Vec<Outcome> {
    let (mut outcomes, elsewhere) = sessions_here(shared, ids, push.clone()).await;
    if let (Some(cluster), false) = (&shared.cluster, elsewhere.is_empty()) {
        let asked: Vec<&str> = elsewhere.iter().map(|i| ids[*i].as_ref()).collect();
        let answers = cluster.deliver(&asked, &push).await;
        for (i, outcome) in elsewhere.into_iter().zip(answers) {
            outcomes[i] = outcome;
        }
    }
    outcomes
}

/// The local half of a push by id: one outcome per id, and (cluster mode)
/// the indices of the ids not held here, for the other nodes.
pub(crate) async fn sessions_here(
    shared: &Shared,
    ids: &[Cow<'_, str>],
    push: Push,
) -> (Vec<Outcome>, Vec<usize>) {
    let outcomes = shared.sessions.deliver(ids, push).await;
    let elsewhere = match shared.cluster {
        Some(_) => (0..ids.len())
            .filter(|i| outcomes[*i] == Outcome::NotFound)
            .collect(),
        None => Vec::new(),
    };
    (outcomes, elsewhere)
}

/// What `/send` answers for a push to one session, from its outcome.
pub(crate) fn session_reply(id: &str, outcome: Outcome) -> ApiReply {
    match error_text(outcome) {
        None => ApiReply {
            errors: Vec::new(),
            result: "OK",
        },
        Some(text) => ApiReply::ng(vec![ErrorEntry::session(text, id)]),
    }
}

/// What `/send` answers for a push by id alone, from its outcomes.
pub(crate) fn sessions_reply(ids: &[Cow<'_, str>], outcomes: Vec<Outcome>) -> ApiReply {
    let succeeded = outcomes.iter().any(|o| o.delivered());
    let errors = entries(ids, outcomes.into_iter().enumerate());
    let ok = succeeded || errors.is_empty();
    ApiReply {
        errors,
        result: if ok { "OK" } else { "NG" },
    }
}

/// Delivers to the members of each channel, here and (cluster mode, one
/// NATS message per channel) on every other node with members, leaving out
/// the sessions addressed by id and the excluded ones. Adds the channels'
/// and the failed members' `errors` entries; whether anyone got it.
async fn to_channels(
    shared: &Shared,
    targets: &Targets<'_>,
    push: Push,
    errors: &mut Vec<ErrorEntry>,
) -> bool {
    let channels = &targets.channels;
    let skip: HashSet<&str> = targets
        .ids
        .iter()
        .chain(&targets.exclude)
        .map(AsRef::as_ref)
        .collect();
    let remote_push = shared.cluster.as_ref().map(|_| push.clone());
    // Offered here first; then the waits on full queues here and the other
    // nodes' deliveries go on together.
    let offered = shared
        .sessions
        .offer_channels(channels, &skip, &[] as &[&str], push);
    let elsewhere = async {
        match (&shared.cluster, remote_push) {
            (Some(cluster), Some(push)) => {
                let skip: Vec<&str> = skip.iter().copied().collect();
                join_all(
                    (0..channels.len())
                        .map(|i| cluster.broadcast(channels[i], &push, &skip, &channels[..i])),
                )
                .await
            }
            _ => vec![Ok(None); channels.len()],
        }
    };
    let (here, elsewhere) = tokio::join!(shared.sessions.settle(offered), elsewhere);
    let mut succeeded = false;
    for ((name, reach), remote) in channels.iter().zip(here).zip(elsewhere) {
        let outcome = match remote {
            _ if reach.delivered > 0 => ChannelOutcome::Delivered,
            Ok(Some(delivered)) if delivered > 0 => ChannelOutcome::Delivered,
            Ok(Some(_)) => ChannelOutcome::Missed,
            Ok(None) if reach.members > 0 => ChannelOutcome::Missed,
            Ok(None) => ChannelOutcome::NoSessions,
            Err(_) => ChannelOutcome::Unavailable,
        };
        shared.sessions.metrics().channel_push(outcome);
        succeeded |= outcome == ChannelOutcome::Delivered;
        match (outcome, &remote) {
            (ChannelOutcome::NoSessions, _) => errors.push(ErrorEntry::channel(NO_SESSIONS, name)),
            (_, Err(_)) => errors.push(ErrorEntry::channel(UNAVAILABLE, name)),
            _ => {}
        }
        for (id, failed) in &reach.failed {
            if let Some(text) = error_text(*failed) {
                errors.push(ErrorEntry::session(text, id));
            }
        }
    }
    succeeded
}

/// One `errors` entry per failed target, in target order.
fn entries(
    ids: &[Cow<'_, str>],
    outcomes: impl Iterator<Item = (usize, Outcome)>,
) -> Vec<ErrorEntry> {
    outcomes
        .filter_map(|(i, outcome)| {
            error_text(outcome).map(|text| ErrorEntry::session(text, &ids[i]))
        })
        .collect()
}
