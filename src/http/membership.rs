//! `POST /subscribe` and `POST /unsubscribe`: put sessions (session headers)
//! in channels (`X-Kuiperbelt-Channel` headers) or take them out, here or,
//! in cluster mode, on the node that holds them; answered like `/send`.
//!
//! Owns the HTTP side of a membership change; the tables are the sessions
//! core's.

use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Response, StatusCode};

use super::push::error_text;
use super::reply::{self, Body, ErrorEntry};
use super::targets::Targets;
use super::CHANNEL_HEADER;
use crate::sessions::{Missed, Outcome};
use crate::state::Shared;

/// Which membership endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    Subscribe,
    Unsubscribe,
}

/// What a join past `channel.max_per_session` answers.
pub(crate) const TOO_MANY: &str = "too many channels.";

/// Handles `/subscribe` or `/unsubscribe`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    kind: Membership,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    if method != Method::POST {
        return reply::error(StatusCode::METHOD_NOT_ALLOWED, "required POST method");
    }
    let targets = match Targets::read(&headers, &shared.config.session_header) {
        Ok(targets) => targets,
        Err(bad) => return bad.reply(),
    };
    if targets.ids.is_empty() {
        return reply::error(StatusCode::BAD_REQUEST, "session header is missing");
    }
    if targets.channels.is_empty() {
        return reply::error(
            StatusCode::BAD_REQUEST,
            format!("{CHANNEL_HEADER} header is missing"),
        );
    }
    let join = kind == Membership::Subscribe;
    let names = &targets.channels;
    let mut results = if join {
        shared.sessions.join(&targets.ids, names)
    } else {
        shared.sessions.leave(&targets.ids, names)
    };
    if let Some(cluster) = &shared.cluster {
        let elsewhere: Vec<usize> = (0..results.len())
            .filter(|i| results[*i] == Err(Missed::NotFound))
            .collect();
        if !elsewhere.is_empty() {
            let ids: Vec<&str> = elsewhere.iter().map(|i| &*targets.ids[*i]).collect();
            for (i, result) in elsewhere
                .into_iter()
                .zip(cluster.membership(&ids, names, join).await)
            {
                results[i] = result;
            }
        }
    }
    if join && results.iter().any(|r| r.is_ok()) {
        // Answered once a push on any node reaches the new members here.
        shared.sessions.settled().await;
    }
    let succeeded = results.iter().any(|r| r.is_ok());
    let errors = targets
        .ids
        .iter()
        .zip(&results)
        .filter_map(|(id, result)| {
            let text = match result {
                Ok(()) => return None,
                Err(Missed::TooMany) => TOO_MANY,
                Err(Missed::NotFound) => error_text(Outcome::NotFound)?,
                Err(Missed::Unavailable) => error_text(Outcome::Unavailable)?,
            };
            Some(ErrorEntry::session(text, id))
        })
        .collect();
    reply::outcome(errors, succeeded)
}
