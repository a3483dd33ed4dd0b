//! The push side of the load: one keep-alive HTTP/1.1 connection per
//! sender doing `POST /send` with one session header per target, or one
//! channel header.

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
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
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
        }
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        let ok = res.status().is_success();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(ok && body.trim_ascii_end() == OK_REPLY)
    }
}
