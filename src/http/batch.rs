//! `POST /batch`: many pushes in one request. The body is a JSON array of
//! items, each with its targets (`session`, `channel`, `exclude`) and one
//! payload (`message`, `json` or `binary`), or `close: true`. Every item is
//! checked and its frame encoded before anything is sent; then the items
//! are delivered in array order, each exactly as `/send` or `/close` would,
//! and the reply holds one `/send` reply per item.
//!
//! Owns the batch format, its checks and limits (`batch.*`); delivery is
//! `push::deliver`'s.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use http::header::HeaderMap;
use http::{Method, Response, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::push::{deliver, session_reply, sessions_here, sessions_reply};
use super::reply::{self, ApiReply, Body};
use super::targets::Targets;
use crate::frame::{self, Encoded};
use crate::sessions::channels::check_name;
use crate::sessions::outlet::Push;
use crate::sessions::Outcome;
use crate::state::Shared;

/// One item as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem<'a> {
    #[serde(default, borrow)]
    session: OneOrMany<'a>,
    #[serde(default, borrow)]
    channel: OneOrMany<'a>,
    #[serde(default, borrow)]
    exclude: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    json: Option<serde_json::Value>,
    #[serde(default, borrow)]
    binary: Option<Cow<'a, str>>,
    #[serde(default)]
    close: bool,
}

/// `"json": null` is a payload (the text `null`), not a missing one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// A string or a list of strings, borrowed from the body where it can be
/// (one string needs no list).
#[derive(Debug)]
enum OneOrMany<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Default for OneOrMany<'_> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl<'a> OneOrMany<'a> {
    fn names(&self) -> &[Cow<'a, str>] {
        match self {
            OneOrMany::One(name) => std::slice::from_ref(name),
            OneOrMany::Many(names) => names,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for OneOrMany<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(s) = seq.next_element::<Cow<'de, str>>()? {
                    list.push(s);
                }
                Ok(OneOrMany::Many(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// The array, at most `max` items, naming the item a parse error is in.
struct Items<'a>(Vec<RawItem<'a>>);

struct ItemsSeed {
    max: usize,
}

impl<'de> de::DeserializeSeed<'de> for ItemsSeed {
    type Value = Items<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V(usize);
        impl<'de> Visitor<'de> for V {
            type Value = Items<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                loop {
                    let i = items.len();
                    let item = seq
                        .next_element::<RawItem<'de>>()
                        .map_err(|e| de::Error::custom(format!("item {i}: {e}")))?;
                    match item {
                        Some(_) if i == self.0 => {
                            return Err(de::Error::custom(format!(
                                "more than batch.max_items ({}) items",
                                self.0
                            )))
                        }
                        Some(item) => items.push(item),
                        None => return Ok(Items(items)),
                    }
                }
            }
        }
        d.deserialize_seq(V(self.max))
    }
}

/// Why an item cannot be sent (the text names it), and the status.
#[derive(Debug)]
struct BadItem {
    why: String,
    status: StatusCode,
}

/// Checks one item and encodes its frame; the targets borrow from it.
fn prepare<'b>(
    index: usize,
    item: &'b RawItem<'_>,
    max_message_size: usize,
) -> Result<(Ready<'b>, Push), BadItem> {
    let bad = |why: String| BadItem {
        why: format!("item {index}: {why}"),
        status: StatusCode::BAD_REQUEST,
    };
    if item.session.names().is_empty() && item.channel.names().is_empty() {
        return Err(bad("no targets: give \"session\" or \"channel\"".into()));
    }
    let mut channels: Vec<&'b str> = Vec::with_capacity(item.channel.names().len());
    for name in item.channel.names() {
        let name = check_name(name.as_bytes()).map_err(|e| bad(format!("bad channel: {e}")))?;
        if !channels.contains(&name) {
            channels.push(name);
        }
    }
    let payloads =
        item.message.is_some() as u8 + item.json.is_some() as u8 + item.binary.is_some() as u8;
    if payloads > 1 {
        return Err(bad(
            "more than one payload: give one of \"message\", \"json\", \"binary\"".into(),
        ));
    }
    if payloads == 0 && !item.close {
        return Err(bad(
            "no payload: give one of \"message\", \"json\", \"binary\" (or \"close\": true)".into(),
        ));
    }
    let frame: Option<Encoded> = if let Some(text) = &item.message {
        Some(frame::text(text))
    } else if let Some(value) = &item.json {
        Some(frame::text(&value.to_string()))
    } else if let Some(data) = &item.binary {
        let data = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| bad(format!("binary is not base64: {e}")))?;
        Some(frame::binary(&data))
    } else {
        None
    };
    if let Some(f) = &frame {
        if f.payload > max_message_size {
            return Err(BadItem {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..bad(format!(
                    "payload of {} bytes is larger than max_message_size ({max_message_size} bytes)",
                    f.payload
                ))
            });
        }
    }
    let push = match (item.close, frame) {
        (true, frame) => Push::Close(frame),
        (false, Some(frame)) => Push::Message(frame),
        (false, None) => unreachable!("checked above"),
    };
    if let ([id], true, true) = (
        item.session.names(),
        channels.is_empty(),
        item.exclude.is_empty(),
    ) {
        return Ok((Ready::One(id), push));
    }
    let borrow = |list: &'b [Cow<'_, str>]| list.iter().map(|s| Cow::Borrowed(&**s)).collect();
    let targets = Targets::new(
        borrow(item.session.names()),
        channels,
        borrow(&item.exclude),
    );
    Ok((Ready::Targets(targets), push))
}

/// Who a checked item is for: one session alone (the common case, sent
/// without building a list), or targets as `/send` reads them.
#[derive(Debug)]
enum Ready<'b> {
    One(&'b str),
    Targets(Targets<'b>),
}

impl Ready<'_> {
    /// `/send`'s reply from the outcomes of its ids.
    fn reply(&self, outcomes: Vec<Outcome>) -> ApiReply {
        match self {
            Ready::One(id) => session_reply(id, outcomes[0]),
            Ready::Targets(targets) => sessions_reply(&targets.ids, outcomes),
        }
    }
}

/// `{"result":...,"results":[...]}`.
#[derive(Debug, Serialize)]
struct BatchReply {
    result: &'static str,
    results: Vec<ApiReply>,
}

/// Handles `/batch`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    method: Method,
    _headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if method != Method::POST {
        return reply::error(StatusCode::METHOD_NOT_ALLOWED, "required POST method");
    }
    let limits = shared.config.batch;
    let mut parser = serde_json::Deserializer::from_slice(&body);
    let items = match de::DeserializeSeed::deserialize(
        ItemsSeed {
            max: limits.max_items,
        },
        &mut parser,
    )
    .and_then(|items| parser.end().map(|()| items))
    {
        Ok(Items(items)) => items,
        Err(e) => {
            shared.batch_metrics.refused();
            return reply::error(StatusCode::BAD_REQUEST, format!("bad batch: {e}"));
        }
    };
    let mut prepared = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match prepare(index, item, shared.config.max_message_size) {
            Ok(ready) => prepared.push(ready),
            Err(bad) => {
                shared.batch_metrics.refused();
                return reply::error(bad.status, bad.why);
            }
        }
    }
    shared.batch_metrics.accepted(prepared.len());
    let results = deliver_all(&shared, &prepared).await;
    let all_ok = results.iter().all(|r| r.result == "OK");
    reply::json(
        StatusCode::OK,
        &BatchReply {
            result: if all_ok { "OK" } else { "NG" },
            results,
        },
    )
}

/// The part of an item by id that other nodes still have to answer.
type Remote<'a> = (usize, Vec<Outcome>, Vec<usize>, BoxFuture<'a, Vec<Outcome>>);

/// Delivers the items in order, one reply each. In cluster mode the remote
/// part of a run of items by id alone is not awaited item by item: their
/// NATS requests go out together, in item order (which each holder keeps
/// per session), and are awaited before an item with channels or under
/// `strict_broadcast`, whose order against them could not be kept so.
async fn deliver_all<'a>(shared: &'a Shared, prepared: &'a [(Ready<'a>, Push)]) -> Vec<ApiReply> {
    let mut replies: Vec<Option<ApiReply>> = vec![None; prepared.len()];
    let mut remote: Vec<Remote<'a>> = Vec::new();
    let strict = shared.config.strict_broadcast;
    for (i, (ready, push)) in prepared.iter().enumerate() {
        match ready {
            // The common item: one session, and nothing allocated for it.
            Ready::One(id) if !strict => {
                let outcome = shared.sessions.deliver_one(id, push.clone()).await;
                match &shared.cluster {
                    Some(cluster) if outcome == Outcome::NotFound => {
                        let request = async move { cluster.deliver(&[*id], push).await };
                        remote.push((i, vec![outcome], vec![0], Box::pin(request)));
                    }
                    _ => replies[i] = Some(session_reply(id, outcome)),
                }
            }
            Ready::Targets(targets)
                if shared.cluster.is_some() && !strict && targets.channels.is_empty() =>
            {
                let (outcomes, elsewhere) = sessions_here(shared, &targets.ids, push.clone()).await;
                match &shared.cluster {
                    Some(cluster) if !elsewhere.is_empty() => {
                        let (ids, asked) = (&targets.ids, elsewhere.clone());
                        let request = async move {
                            let asked: Vec<&str> = asked.iter().map(|k| ids[*k].as_ref()).collect();
                            cluster.deliver(&asked, push).await
                        };
                        remote.push((i, outcomes, elsewhere, Box::pin(request)));
                    }
                    _ => replies[i] = Some(sessions_reply(&targets.ids, outcomes)),
                }
            }
            _ => {
                answer(&mut remote, &mut replies, prepared).await;
                let one;
                let targets = match ready {
                    Ready::One(id) => {
                        one = Targets::new(vec![Cow::Borrowed(*id)], Vec::new(), Vec::new());
                        &one
                    }
                    Ready::Targets(targets) => targets,
                };
                replies[i] = Some(deliver(shared, targets, push.clone()).await.reply);
            }
        }
    }
    answer(&mut remote, &mut replies, prepared).await;
    replies
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect()
}

/// Sends the waiting remote requests, in item order, and fills in those
/// items' replies.
async fn answer(
    remote: &mut Vec<Remote<'_>>,
    replies: &mut [Option<ApiReply>],
    prepared: &[(Ready<'_>, Push)],
) {
    if remote.is_empty() {
        return;
    }
    let waiting = std::mem::take(remote);
    let (parts, requests): (Vec<_>, Vec<_>) = waiting
        .into_iter()
        .map(|(i, outcomes, elsewhere, request)| ((i, outcomes, elsewhere), request))
        .unzip();
    let answers = join_all(requests).await;
    for ((i, mut outcomes, elsewhere), answers) in parts.into_iter().zip(answers) {
        for (k, outcome) in elsewhere.into_iter().zip(answers) {
            outcomes[k] = outcome;
        }
        replies[i] = Some(prepared[i].0.reply(outcomes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, max: usize) -> Result<Vec<RawItem<'_>>, String> {
        let mut parser = serde_json::Deserializer::from_str(body);
        de::DeserializeSeed::deserialize(ItemsSeed { max }, &mut parser)
            .and_then(|items| parser.end().map(|()| items.0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn items_parse_borrowed_and_errors_name_the_item() {
        let items = parse(
            r#"[{"session":"a","message":"hi"},{"session":["b","c"],"channel":"room","json":{"n":1}},{"channel":["x"],"json":null}]"#,
            10,
        )
        .unwrap();
        assert!(matches!(
            items[0].session,
            OneOrMany::One(Cow::Borrowed("a"))
        ));
        assert_eq!(items[1].session.names().len(), 2);
        assert_eq!(items[2].json, Some(serde_json::Value::Null));
        let err = parse(r#"[{"session":"a","message":"x"},{"session":1}]"#, 10).unwrap_err();
        assert!(err.starts_with("item 1: "), "{err}");
        let err = parse(r#"[{"session":"a","mesage":"x"}]"#, 10).unwrap_err();
        assert!(err.starts_with("item 0: unknown field `mesage`"), "{err}");
        let err = parse(r#"{"session":"a"}"#, 10).unwrap_err();
        assert!(err.contains("a JSON array of items"), "{err}");
        let err = parse(
            r#"[{"session":"a","message":"x"},{"session":"b","message":"y"}]"#,
            1,
        )
        .unwrap_err();
        assert!(err.contains("more than batch.max_items (1) items"), "{err}");
    }

    #[test]
    fn an_item_has_targets_and_one_payload() {
        let one = |body: &str| {
            let items = parse(body, 10).unwrap();
            prepare(3, &items[0], 100).map(|_| ()).map_err(|e| e.why)
        };
        assert!(one(r#"[{"session":"a","message":"x"}]"#).is_ok());
        assert!(one(r#"[{"channel":"a","close":true}]"#).is_ok());
        assert!(one(r#"[{"session":"a","binary":"AAEC"}]"#).is_ok());
        let err = |body: &str| one(body).unwrap_err();
        assert!(err(r#"[{"message":"x"}]"#).starts_with("item 3: no targets"));
        assert!(err(r#"[{"session":"a"}]"#).starts_with("item 3: no payload"));
        assert!(err(r#"[{"session":"a","message":"x","json":1}]"#)
            .starts_with("item 3: more than one payload"));
        assert!(
            err(r#"[{"session":"a","binary":"!!"}]"#).starts_with("item 3: binary is not base64")
        );
        assert!(err(r#"[{"channel":"a b","message":"x"}]"#).starts_with("item 3: bad channel"));
        let long = format!(r#"[{{"session":"a","message":"{}"}}]"#, "x".repeat(101));
        assert!(err(&long).contains("larger than max_message_size (100 bytes)"));
    }
}
