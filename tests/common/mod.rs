//! Test harness: a real fake app (HTTP server recording every callback), the
//! real kuiperbelt server on 127.0.0.1:0, real WebSocket clients and a plain
//! HTTP client for the push API.
#![allow(dead_code)]

pub mod channels;
pub mod nats;
pub mod raw;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One request the fake app received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    pub fn session(&self) -> Option<&str> {
        self.header("x-kuiperbelt-session")
    }
}

/// A canned reply of the fake app.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Option<Duration>,
}

impl Canned {
    pub fn ok() -> Canned {
        Canned {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
            delay: None,
        }
    }

    pub fn status(status: u16) -> Canned {
        Canned {
            status,
            ..Canned::ok()
        }
    }

    pub fn session(id: &str) -> Canned {
        Canned::ok().header("X-Kuiperbelt-Session", id)
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Canned {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Canned {
        self.delay = Some(d);
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Canned + Send + Sync>;

/// The fake app: records every request; answers `/connect` with the session
/// id from the client's `session` query parameter (or 403 without one),
/// everything else with 200, unless a test installs its own responder. It
/// can go away (`down`: port closed, connections dropped) and come back.
pub struct FakeApp {
    pub addr: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Recorded>>,
    responder: Arc<Mutex<Responder>>,
    pub all: Arc<Mutex<Vec<Recorded>>>,
    /// TCP connections the app has accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests being answered now, and the most at once.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    tx: mpsc::UnboundedSender<Recorded>,
    /// The accept loop and every connection task, aborted by `down`.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn default_responder(r: &Recorded) -> Canned {
    if r.path == "/connect" {
        match query_param(r.query.as_deref(), "session") {
            Some(id) => Canned::session(&id),
            None => Canned::status(403)
                .body("who are you?")
                .header("Content-Type", "text/plain"),
        }
    } else {
        Canned::ok()
    }
}

impl FakeApp {
    pub async fn start() -> FakeApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let app = FakeApp {
            addr: listener.local_addr().unwrap(),
            rx: tokio::sync::Mutex::new(rx),
            responder: Arc::new(Mutex::new(Arc::new(default_responder))),
            all: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            tx,
            tasks: Arc::default(),
        };
        app.serve(listener);
        app
    }

    fn serve(&self, listener: TcpListener) {
        use std::sync::atomic::Ordering::SeqCst;
        let (tx, resp, all) = (self.tx.clone(), self.responder.clone(), self.all.clone());
        let (accepted, tasks) = (self.connections.clone(), self.tasks.clone());
        let (in_flight, max_in_flight) = (self.in_flight.clone(), self.max_in_flight.clone());
        let accept = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, SeqCst);
                let (tx, resp, all) = (tx.clone(), resp.clone(), all.clone());
                let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (tx, resp, all) = (tx.clone(), resp.clone(), all.clone());
                        let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                        async move {
                            let now = in_flight.fetch_add(1, SeqCst) + 1;
                            max_in_flight.fetch_max(now, SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let rec = Recorded {
                                method: parts.method,
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().map(str::to_string),
                                headers: parts.headers,
                                body,
                            };
                            let responder = resp.lock().unwrap().clone();
                            let canned = responder(&rec);
                            all.lock().unwrap().push(rec.clone());
                            let _ = tx.send(rec);
                            if let Some(d) = canned.delay {
                                tokio::time::sleep(d).await;
                            }
                            let mut res = Response::new(Full::new(canned.body));
                            *res.status_mut() = StatusCode::from_u16(canned.status).unwrap();
                            for (k, v) in canned.headers {
                                res.headers_mut().append(
                                    HeaderName::try_from(k).unwrap(),
                                    HeaderValue::try_from(v).unwrap(),
                                );
                            }
                            in_flight.fetch_sub(1, SeqCst);
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// The app goes away: its port refuses connections and every open
    /// connection is dropped.
    pub fn down(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// The app comes back on the same port.
    pub async fn up(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The aborted accept loop may not have dropped it yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        self.serve(listener);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Replaces how the app answers.
    pub fn respond(&self, f: impl Fn(&Recorded) -> Canned + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    /// The next request to `path` (others are skipped), within 5 s.
    pub async fn next(&self, path: &str) -> Recorded {
        let mut rx = self.rx.lock().await;
        loop {
            let rec = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no request to {path} within 5s"))
                .expect("app channel open");
            if rec.path == path {
                return rec;
            }
        }
    }

    /// How many requests (to any path) were seen so far.
    pub fn request_count(&self) -> usize {
        self.all.lock().unwrap().len()
    }

    /// Every request to `path` seen so far.
    pub fn seen(&self, path: &str) -> Vec<Recorded> {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests to `path` were seen (5 s at most).
    pub async fn wait_seen(&self, path: &str, n: usize) -> Vec<Recorded> {
        for _ in 0..500 {
            let seen = self.seen(path);
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} requests to {path}, saw {}",
            self.seen(path).len()
        );
    }
}

/// A running kuiperbelt on 127.0.0.1:0.
pub struct Kb {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The default config for tests: every callback pointed at `app`, and a
/// drain with no announce delay or spread so shutdown is quick.
pub fn base_yaml(app: &FakeApp) -> String {
    format!(
        "drain:\n  announce_delay: 0s\n  spread: 0s\ncallback:\n  connect: {}\n  receive: {}\n  close: {}\n",
        app.url("/connect"),
        app.url("/receive"),
        app.url("/close")
    )
}

impl Kb {
    /// Starts kuiperbelt with `yaml` (port is ignored: it binds 127.0.0.1:0).
    pub async fn start(yaml: &str) -> Kb {
        let config = kuiperbelt::config::from_yaml_str(yaml).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            kuiperbelt::run(config, kuiperbelt::Listener::Tcp(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Kb {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn with_app(app: &FakeApp, extra: &str) -> Kb {
        Kb::start(&format!("{}{}", base_yaml(app), extra)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Opens a WebSocket as session `id` (the fake app accepts it).
    pub async fn connect(&self, id: &str) -> Ws {
        self.try_connect(&format!("/connect?session={id}"), &[])
            .await
            .expect("connect succeeds")
    }

    pub async fn try_connect(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = self.ws_url(path_and_query).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::try_from(*v).unwrap(),
            );
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within 15s")
                .unwrap();
        }
    }

    pub async fn stats(&self) -> serde_json::Value {
        let res = http(Method::GET, &self.url("/stats"), &[], Bytes::new()).await;
        serde_json::from_slice(&res.body).unwrap()
    }

    /// Waits until `/stats` reports `n` live connections (5 s at most).
    pub async fn wait_connections(&self, n: i64) {
        self.wait_stat("connections", n).await;
    }

    /// Waits until `/stats` field `name` is `n` (5 s at most).
    pub async fn wait_stat(&self, name: &str, n: i64) {
        for _ in 0..500 {
            if self.stats().await[name] == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached {n}: {}", self.stats().await);
    }

    /// `GET path` with no headers.
    pub async fn get(&self, path: &str) -> HttpReply {
        http(Method::GET, &self.url(path), &[], Bytes::new()).await
    }

    /// `POST path` with one session header per id.
    pub async fn push(&self, path: &str, ids: &[&str], body: &str) -> HttpReply {
        let headers: Vec<(&str, &str)> =
            ids.iter().map(|id| ("X-Kuiperbelt-Session", *id)).collect();
        http(
            Method::POST,
            &self.url(path),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
    }
}

impl Drop for Kb {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One HTTP request.
pub async fn http(method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> HttpReply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client()
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    HttpReply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The value of one sample (`name` with its labels, as printed) in the
/// Prometheus text at `url`.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = http(Method::GET, url, &[], Bytes::new()).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// The next data message on `ws` within 5 s (pings and pongs skipped).
pub async fn recv(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5s")
            .expect("stream open")
            .expect("no protocol error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

pub async fn recv_text(ws: &mut Ws) -> String {
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close frame; returns its code.
pub async fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close within 10s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Asserts nothing arrives on `ws` for `ms` milliseconds.
pub async fn assert_silent(ws: &mut Ws, ms: u64) {
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(ms), ws.next()).await {
        panic!("expected silence, got {msg:?}");
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

pub async fn close(ws: &mut Ws) {
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
}

pub fn counts(values: &[Recorded]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in values {
        *out.entry(v.session().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    out
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`;
/// false if nothing did within `limit`.
pub async fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The real `kuiperbelt` binary, run with a config file; stderr goes to a file.
pub struct Binary {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary with `yaml` plus `port: <free>`; waits for `/ping`.
    pub async fn start(yaml: &str) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(&config, format!("port: {port}\n{yaml}")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kuiperbelt"))
            .arg(format!("-config={}", config.display()))
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let bin = Binary { child, port, dir };
        if !wait_listening(port, Duration::from_secs(5)).await {
            panic!("binary never listened on {port}: {}", bin.stderr());
        }
        bin
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the process to exit (20 s at most) and returns its code.
    pub async fn wait(&mut self) -> Option<i32> {
        for _ in 0..2000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("binary did not exit within 20s: {}", self.stderr());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a WebSocket to `url` as session `id` (the fake app accepts it).
pub async fn connect_url(
    base: &str,
    id: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(format!("{base}/connect?session={id}"))
        .await
        .map(|(ws, _)| ws)
}
