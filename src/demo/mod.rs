//! `kuiperbelt demo`: the real proxy plus a small chat app on loopback ports,
//! talking to each other over HTTP only, as any kuiperbelt deployment does.
//!
//! Owns the wiring (ports, config, start and stop). The app itself is in
//! `app.rs`; the page it serves is `index.html`.

mod app;

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config;
use crate::server;
use crate::server::listener::Listener;

/// A running demo.
pub struct Demo {
    /// Open this in a browser.
    pub page_url: String,
    /// The proxy (WebSocket clients and the push API).
    pub proxy: SocketAddr,
    /// The demo app (the page and the callbacks).
    pub app: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    proxy_task: JoinHandle<io::Result<()>>,
    app_task: JoinHandle<()>,
}

/// Starts the proxy on `127.0.0.1:port` (0 picks a free port) and the demo
/// app on a free loopback port.
pub async fn start(port: u16) -> io::Result<Demo> {
    let proxy_listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let proxy = proxy_listener.local_addr()?;
    let app_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let app = app_listener.local_addr()?;

    let yaml = format!(
        "endpoint: {proxy}\n\
         callback:\n  connect: http://{app}/connect\n  establish: http://{app}/establish\n  \
         receive: http://{app}/receive\n  close: http://{app}/close\n\
         send_queue_size: 64\nsend_timeout: 1s\n\
         drain:\n  announce_delay: 0s\n  spread: 1s\n  timeout: 5s\n"
    );
    let config =
        config::from_yaml_str(&yaml).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;

    let app_task = tokio::spawn(app::serve(app_listener, proxy));
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy_task = tokio::spawn(server::run(config, Listener::Tcp(proxy_listener), async {
        let _ = stopped.await;
    }));
    Ok(Demo {
        page_url: format!("http://{app}/"),
        proxy,
        app,
        stop: Some(stop),
        proxy_task,
        app_task,
    })
}

impl Demo {
    /// Stops the proxy (closing every chat with 1001) and the app.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.proxy_task)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        self.app_task.abort();
        result
    }
}
