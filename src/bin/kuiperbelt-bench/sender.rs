//! The push side of the load: one keep-alive HTTP/1.1 connection per
//! sender doing `POST /send` with one session header per target, or one
//! channel header, or `POST /batch` with one item per target.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const SESSION_HEADER: HeaderName = HeaderName::from_static("x-kuiperbelt-session");
const CHANNEL_HEADER: HeaderName = HeaderName::from_static("x-kuiperbelt-channel");
const OK_REPLY: &[u8] = br#"{"result":"OK"}"#;
const BATCH_OK: &[u8] = br#"{"result":"OK","#;

/// Session ids as header values, built once and shared by every sender.
pub type Ids = Arc<Vec<HeaderValue>>;

pub fn ids(n: usize) -> Ids {
    names("", n)
}

/// Channel names `c0`.. as the bench's app hands them out.
pub fn channels(n: usize) -> Ids {
    names("c", n)
}

fn names(prefix: &str, n: usize) -> Ids {
    Arc::new(
        (0..n)
            .map(|i| HeaderValue::from_str(&format!("{prefix}{i}")).expect("ASCII"))
            .collect(),
    )
}

/// Who one `/send` is for.
#[derive(Debug, Clone, Copy)]
pub enum To {
    /// `count` sessions from `first` on (wrapping).
    Sessions { first: usize, count: usize },
    /// One channel, by index.
    Channel(usize),
    /// A `/batch` of `count` items to sessions from `first` on, each with
    /// its own message.
    Batch { first: usize, count: usize },
}

/// One keep-alive connection to the push API.
pub struct Sender {
    send: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    uri: Uri,
    ids: Ids,
}

impl Sender {
    pub async fn connect(server: SocketAddr, ids: Ids) -> Result<Sender> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Sender {
            send,
            host: HeaderValue::from_str(&server.to_string())?,
            uri: Uri::from_static("/send"),
            ids,
        })
    }

    /// `POST /send` to `to` (`channels` names the channels); true when the
    /// reply is `{"result":"OK"}` with no errors.
    pub async fn send(&mut self, to: To, channels: &Ids, body: Bytes) -> Result<bool> {
        let batch = match to {
            To::Batch { first, count } => Some(self.items(first, count, &body)),
            _ => None,
        };
        let is_batch = batch.is_some();
        let mut req = Request::new(Full::new(batch.unwrap_or(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = if is_batch {
            Uri::from_static("/batch")
        } else {
            self.uri.clone()
        };
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        let content_type = if is_batch {
            "application/json"
        } else {
            "text/plain"
        };
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        match to {
            To::Sessions { first, count } => {
                let n = self.ids.len();
                for k in 0..count {
                    h.append(SESSION_HEADER, self.ids[(first + k) % n].clone());
                }
            }
            To::Channel(c) => {
                h.insert(CHANNEL_HEADER, channels[c].clone());
            }
            To::Batch { .. } => {}
        }
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        let ok = res.status().is_success();
        let body = res.into_body().collect().await?.to_bytes();
        let reply_ok = if is_batch {
            body.starts_with(BATCH_OK)
        } else {
            body.trim_ascii_end() == OK_REPLY
        };
        Ok(ok && reply_ok)
    }

    /// `/batch` items to `count` sessions from `first` on, each message
    /// `payload` with its tail replaced by the item's number.
    fn items(&self, first: usize, count: usize, payload: &[u8]) -> Bytes {
        let n = self.ids.len();
        let mut json = Vec::with_capacity(count * (payload.len() + 40) + 2);
        json.push(b'[');
        for k in 0..count {
            if k > 0 {
                json.push(b',');
            }
            json.extend_from_slice(br#"{"session":""#);
            json.extend_from_slice(self.ids[(first + k) % n].as_bytes());
            json.extend_from_slice(br#"","message":""#);
            let tag = k.to_string();
            let keep = payload.len().saturating_sub(tag.len());
            json.extend_from_slice(&payload[..keep]);
            json.extend_from_slice(tag.as_bytes());
            json.extend_from_slice(br#""}"#);
        }
        json.push(b']');
        Bytes::from(json)
    }
}
