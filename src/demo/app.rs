//! The demo chat app: a plain HTTP server that is a genuine kuiperbelt app.
//! Its connect callback issues a fresh random session id per connection,
//! refuses clients without a `name` and puts each session in its room's
//! channel (`room`, `lobby` when none is given); establish and close announce
//! joins and leaves to the room; receive broadcasts each line to the room
//! with one `POST /send` to its channel that leaves the speaker out. It also
//! serves the page and relays the proxy's `/stats`.
//!
//! Owns the chat's state (session id -> name and room) and the mapping from
//! a room to its channel name. It reaches the proxy only through its HTTP
//! API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tokio::net::TcpListener;

const PAGE: &str = include_str!("index.html");
const SESSION_HEADER: &str = "x-kuiperbelt-session";
const CHANNEL_HEADER: &str = "x-kuiperbelt-channel";
const EXCLUDE_HEADER: &str = "x-kuiperbelt-exclude";
const MAX_NAME: usize = 32;
/// The room of a client that names none.
const DEFAULT_ROOM: &str = "lobby";
/// The longest room name, in characters.
const MAX_ROOM: usize = 32;
/// The longest channel name kuiperbelt accepts, in bytes.
const MAX_CHANNEL: usize = 200;
/// What a room name escapes on its way to a channel name: kuiperbelt's
/// names are printable ASCII without comma or space (non-ASCII is always
/// escaped), and `%` is escaped too so that no two rooms share a channel.
const CHANNEL_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%');

/// A session the connect callback accepted.
#[derive(Clone)]
struct Member {
    name: String,
    /// The channel of the member's room.
    channel: String,
}

struct Chat {
    proxy: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// session id -> member, for naming speakers, finding their room and
    /// announcing leaves.
    members: Mutex<HashMap<String, Member>>,
}

/// Serves the demo app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: SocketAddr) {
    let chat = Arc::new(Chat {
        proxy,
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        members: Mutex::new(HashMap::new()),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "demo app: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let chat = chat.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let chat = chat.clone();
                async move { Ok::<_, Infallible>(chat.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// Decodes a form-encoded query value (`+` is a space).
fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A client's room (`DEFAULT_ROOM` when blank) and its channel name: the
/// room percent-encoded where a channel name needs it. The room is cut to
/// `MAX_ROOM` characters, and shorter when its channel name would pass
/// `MAX_CHANNEL` bytes, so the channel always names exactly that room.
fn room_and_channel(requested: Option<&str>) -> (String, String) {
    let requested = requested.map(str::trim).filter(|r| !r.is_empty());
    let (mut room, mut channel) = (String::new(), String::new());
    let mut utf8 = [0u8; 4];
    for c in requested.unwrap_or(DEFAULT_ROOM).chars().take(MAX_ROOM) {
        let escaped = utf8_percent_encode(c.encode_utf8(&mut utf8), CHANNEL_ESCAPES).to_string();
        if channel.len() + escaped.len() > MAX_CHANNEL {
            break;
        }
        room.push(c);
        channel.push_str(&escaped);
    }
    (room, channel)
}

impl Chat {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let page = PAGE.replace("{{PROXY}}", &format!("ws://{}", self.proxy));
                let mut res = text(StatusCode::OK, page);
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                res
            }
            (&Method::GET, "/stats") => self.stats().await,
            (&Method::GET, "/connect") => self.connect(req.uri().query()),
            (&Method::POST, "/establish") => {
                // To the others in the room: the newcomer joins its channel
                // once this callback has answered.
                if let Some((id, member)) = self.member(session.as_deref()) {
                    let line = format!("* {} joined", member.name);
                    self.broadcast(&member.channel, line, id).await;
                }
                text(StatusCode::OK, "")
            }
            (&Method::POST, "/receive") => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body"),
                };
                // To the others in the room: the speaker's page shows its
                // own line.
                if let Some((id, member)) = self.member(session.as_deref()) {
                    let line = String::from_utf8_lossy(&body);
                    let line = format!("{}: {}", member.name, line.trim());
                    self.broadcast(&member.channel, line, id).await;
                }
                text(StatusCode::OK, "")
            }
            (&Method::POST, "/close") => {
                if let Some(id) = session.as_deref() {
                    let left = self.members().remove(id);
                    if let Some(member) = left {
                        let line = format!("* {} left", member.name);
                        self.broadcast(&member.channel, line, id).await;
                    }
                }
                text(StatusCode::OK, "")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// The connect callback: a name is the demo's whole "authentication";
    /// the answer puts the session in its room's channel.
    fn connect(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let name = query_param(query, "name")
            .map(|n| n.trim().chars().take(MAX_NAME).collect::<String>())
            .filter(|n| !n.is_empty());
        let Some(name) = name else {
            return text(StatusCode::UNAUTHORIZED, "a name is required");
        };
        let (room, channel) = room_and_channel(query_param(query, "room").as_deref());
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let here = {
            let mut members = self.members();
            let here = 1 + members.values().filter(|m| m.channel == channel).count();
            let member = Member {
                name: name.clone(),
                channel: channel.clone(),
            };
            members.insert(id.clone(), member);
            here
        };
        let mut res = text(
            StatusCode::OK,
            format!("* welcome to {room}, {name} ({here} here)"),
        );
        res.headers_mut().insert(
            SESSION_HEADER,
            header::HeaderValue::from_str(&id).expect("hex is a valid header value"),
        );
        res.headers_mut().insert(
            CHANNEL_HEADER,
            header::HeaderValue::from_str(&channel).expect("a channel name is printable ASCII"),
        );
        res
    }

    /// The member list. No code panics while holding it, so a poisoned lock
    /// still holds a consistent map.
    fn members(&self) -> MutexGuard<'_, HashMap<String, Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The member a callback's session header names, if it is one.
    fn member<'s>(&self, session: Option<&'s str>) -> Option<(&'s str, Member)> {
        let id = session?;
        let member = self.members().get(id).cloned()?;
        Some((id, member))
    }

    /// One `POST /send` to everyone in `channel` but `except`. A room with
    /// nobody else in it answers that nobody got the line, which is fine.
    async fn broadcast(&self, channel: &str, line: String, except: &str) {
        let req = Request::post(format!("http://{}/send", self.proxy))
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(CHANNEL_HEADER, channel)
            .header(EXCLUDE_HEADER, except)
            .body(Full::new(Bytes::from(line)));
        let Ok(req) = req else {
            return;
        };
        match self.client.request(req).await {
            Ok(res) if res.status().is_success() => {}
            Ok(res) => tracing::warn!(status = %res.status(), "demo broadcast refused"),
            Err(e) => tracing::warn!(error = %e, "demo broadcast failed"),
        }
    }

    /// Relays the proxy's `/stats` so the page can show the connection count.
    async fn stats(&self) -> Response<Full<Bytes>> {
        let Ok(req) =
            Request::get(format!("http://{}/stats", self.proxy)).body(Full::new(Bytes::new()))
        else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "");
        };
        let (status, body) = match self.client.request(req).await {
            Ok(res) => {
                let status = res.status();
                match res.into_body().collect().await {
                    Ok(body) => (status, body.to_bytes()),
                    Err(_) => return text(StatusCode::BAD_GATEWAY, "proxy stats unreadable"),
                }
            }
            Err(_) => return text(StatusCode::BAD_GATEWAY, "proxy unreachable"),
        };
        let mut res = text(status, body);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("Al%20ice+B"), "Al ice B");
        assert_eq!(percent_decode("%E3%81%82"), "あ");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(
            query_param(Some("a=1&name=bob"), "name").as_deref(),
            Some("bob")
        );
        assert_eq!(query_param(Some("a=1"), "name"), None);
    }

    /// kuiperbelt's rule for a channel name.
    fn valid_channel(name: &str) -> bool {
        (1..=MAX_CHANNEL).contains(&name.len())
            && name
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    }

    #[test]
    fn a_room_becomes_a_valid_channel_of_its_own() {
        let channel = |room: Option<&str>| room_and_channel(room).1;
        assert_eq!(room_and_channel(None), ("lobby".into(), "lobby".into()));
        assert_eq!(
            room_and_channel(Some("  ")),
            ("lobby".into(), "lobby".into())
        );
        assert_eq!(
            room_and_channel(Some(" kitchen ")),
            ("kitchen".into(), "kitchen".into())
        );
        assert_eq!(channel(Some("my room, 2")), "my%20room%2C%202");
        assert_eq!(channel(Some("100%")), "100%25");
        assert_eq!(channel(Some("あ")), "%E3%81%82");
        // Escaping `%` keeps rooms apart that would otherwise meet.
        assert_ne!(channel(Some("a b")), channel(Some("a%20b")));

        let long = "x".repeat(100);
        assert_eq!(room_and_channel(Some(&long)).0.chars().count(), MAX_ROOM);
        // Every character escaped, several bytes each: cut at the byte limit,
        // the room cut with it.
        let wide = "\u{10348}".repeat(MAX_ROOM);
        let (cut, cut_channel) = room_and_channel(Some(&wide));
        assert!(cut_channel.len() <= MAX_CHANNEL, "{}", cut_channel.len());
        assert!(cut.chars().count() < MAX_ROOM, "{cut:?}");
        assert_eq!(
            percent_encoding::percent_decode_str(&cut_channel)
                .decode_utf8()
                .unwrap(),
            cut
        );

        for room in [
            None,
            Some("kitchen"),
            Some("a,b c\t%"),
            Some("\u{7f}é"),
            Some(&*wide),
            Some(&*long),
        ] {
            let name = channel(room);
            assert!(valid_channel(&name), "{room:?} -> {name:?}");
        }
    }
}
