//! Who a push or a membership change is for: session headers, channel
//! headers (`X-Kuiperbelt-Channel`, names checked) and excluded sessions
//! (`X-Kuiperbelt-Exclude`), read from a request's headers.
//!
//! Owns reading and checking them; what is done with them is the handlers'.

use std::borrow::Cow;
use std::collections::HashSet;

use http::header::{HeaderMap, HeaderName};
use http::{Response, StatusCode};

use super::reply::{self, Body};
use super::{CHANNEL, CHANNEL_HEADER, EXCLUDE};
use crate::sessions::channels::parse_names;

/// The targets of one request, in header order.
#[derive(Debug)]
pub(crate) struct Targets<'h> {
    /// Session ids named by the session header, each once, the excluded
    /// ones left out.
    pub(crate) ids: Vec<Cow<'h, str>>,
    /// Channel names, each once.
    pub(crate) channels: Vec<&'h str>,
    /// Session ids a channel push leaves out.
    pub(crate) exclude: Vec<Cow<'h, str>>,
}

impl<'h> Targets<'h> {
    /// No session header and no channel header: a request with no target.
    pub(crate) fn none(headers: &HeaderMap, session_header: &HeaderName) -> bool {
        !headers.contains_key(session_header) && !headers.contains_key(CHANNEL)
    }

    /// Reads the targets; a bad channel name is an error naming the header.
    pub(crate) fn read(
        headers: &'h HeaderMap,
        session_header: &HeaderName,
    ) -> Result<Targets<'h>, BadTargets> {
        let lossy = |name: &HeaderName| -> Vec<Cow<'h, str>> {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect()
        };
        let channels = parse_names(headers.get_all(CHANNEL).iter().map(|v| v.as_bytes()))
            .map_err(|e| BadTargets(format!("bad {CHANNEL_HEADER} header: {e}")))?;
        Ok(Targets::new(
            lossy(session_header),
            channels,
            lossy(&EXCLUDE),
        ))
    }

    /// Targets from lists already read: each session once, the excluded
    /// ones left out.
    pub(crate) fn new(
        mut ids: Vec<Cow<'h, str>>,
        channels: Vec<&'h str>,
        exclude: Vec<Cow<'h, str>>,
    ) -> Targets<'h> {
        if ids.len() > 1 || !exclude.is_empty() {
            // Each session once, however often it is named.
            let mut seen: HashSet<Cow<'h, str>> = HashSet::with_capacity(ids.len());
            ids.retain(|id| !exclude.contains(id) && seen.insert(id.clone()));
        }
        Targets {
            ids,
            channels,
            exclude,
        }
    }
}

/// Targets that cannot be read (a bad channel name).
#[derive(Debug)]
pub(crate) struct BadTargets(String);

impl BadTargets {
    /// The 400 reply that names the header.
    pub(crate) fn reply(self) -> Response<Body> {
        reply::error(StatusCode::BAD_REQUEST, self.0)
    }
}
