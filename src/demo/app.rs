//! The demo chat app: a plain HTTP server that is a genuine kuiperbelt app.
//! Its connect callback issues a fresh random session id per connection and
//! refuses clients without a `name`; establish and close announce joins and
//! leaves; receive broadcasts each line with one `POST /send` naming every
//! session. It also serves the page and relays the proxy's `/stats`.
//!
//! Owns the chat's state (session id -> name). It reaches the proxy only
//! through its HTTP API.

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
use tokio::net::TcpListener;

const PAGE: &str = include_str!("index.html");
const SESSION_HEADER: &str = "x-kuiperbelt-session";
const MAX_NAME: usize = 32;

struct Chat {
    proxy: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// session id -> name, for addressing broadcasts and announcing leaves.
    members: Mutex<HashMap<String, String>>,
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
                // To the others: the newcomer is addressable once this
                // callback has answered.
                if let Some(name) = session.as_deref().and_then(|s| self.name_of(s)) {
                    self.broadcast(format!("* {name} joined"), session.as_deref())
                        .await;
                }
                text(StatusCode::OK, "")
            }
            (&Method::POST, "/receive") => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body"),
                };
                if let Some(name) = session.as_deref().and_then(|s| self.name_of(s)) {
                    let line = String::from_utf8_lossy(&body);
                    self.broadcast(format!("{name}: {}", line.trim()), None)
                        .await;
                }
                text(StatusCode::OK, "")
            }
            (&Method::POST, "/close") => {
                let left = session.and_then(|s| self.members().remove(&s));
                if let Some(name) = left {
                    self.broadcast(format!("* {name} left"), None).await;
                }
                text(StatusCode::OK, "")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// The connect callback: a name is the demo's whole "authentication".
    fn connect(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let name = query_param(query, "name")
            .map(|n| n.trim().chars().take(MAX_NAME).collect::<String>())
            .filter(|n| !n.is_empty());
        let Some(name) = name else {
            return text(StatusCode::UNAUTHORIZED, "a name is required");
        };
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let online = {
            let mut members = self.members();
            members.insert(id.clone(), name.clone());
            members.len()
        };
        let mut res = text(
            StatusCode::OK,
            format!("* welcome, {name} ({online} online)"),
        );
        res.headers_mut().insert(
            SESSION_HEADER,
            header::HeaderValue::from_str(&id).expect("hex is a valid header value"),
        );
        res
    }

    /// The member list. No code panics while holding it, so a poisoned lock
    /// still holds a consistent map.
    fn members(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn name_of(&self, session: &str) -> Option<String> {
        self.members().get(session).cloned()
    }

    /// One `POST /send` naming every member but `except`.
    async fn broadcast(&self, line: String, except: Option<&str>) {
        let ids: Vec<String> = self
            .members()
            .keys()
            .filter(|id| Some(id.as_str()) != except)
            .cloned()
            .collect();
        if ids.is_empty() {
            return;
        }
        let mut req = Request::post(format!("http://{}/send", self.proxy))
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        for id in &ids {
            req = req.header(SESSION_HEADER, id);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(line))) else {
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
}
