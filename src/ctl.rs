//! `kuiperbelt ctl`: the operator's client for a running kuiperbelt's API
//! (status, sessions, channels, push, close, drain), in the same binary so that
//! `kubectl exec POD -c kuiperbelt -- kuiperbelt ctl status` works in the
//! shell-less image.
//!
//! Owns finding the API (`--api`, else the config's `api.listen`, else its
//! public port or socket), the token (`--token`, `KUIPERBELT_API__TOKEN`,
//! `api.token`, `api.token_file`), one HTTP/1.1 request per call over TCP or
//! a UNIX socket, and what is printed. Exit codes: 0 done (status: ready),
//! 1 refused or not ready, 2 the API could not be asked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{self, Overrides, Source};
use crate::http::auth::TokenSource;
use crate::server::listener::{Listen, ListenAddr};

/// Options of `kuiperbelt ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API: `http://HOST:PORT` or a UNIX socket (`unix:/path` or
    /// `/path`). Default: from the config's `api.listen`, else its `port`
    /// (on 127.0.0.1) or `sock`.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Bearer token. Default: KUIPERBELT_API__TOKEN, else the config's
    /// `api.token` or `api.token_file`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The config file to take the defaults from (default: config.yml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Readiness, drain stage, connections, callback health, version,
    /// uptime; exit 0 when ready, 1 when not.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The sessions this node holds, in id order.
    Sessions {
        /// Sessions to list at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// The channels with members on this node, in name order, with their
    /// member counts.
    Channels {
        /// Channels to list at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Push a message (`POST /send`) to sessions and/or channels; the body
    /// from --data, --file, or `-` (standard input). With --batch, post a
    /// JSON array of items to `/batch` instead.
    Send {
        #[arg(
            value_name = "SESSION",
            required_unless_present_any = ["channels", "batch"],
            conflicts_with = "batch"
        )]
        sessions: Vec<String>,
        #[command(flatten)]
        to: Channels,
        /// Send a binary frame (application/octet-stream).
        #[arg(long)]
        binary: bool,
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// A file, or `-` for standard input.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A file of `/batch` items (a JSON array), or `-` for standard input.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["data", "file", "binary", "channels", "exclude"])]
        batch: Option<PathBuf>,
    },
    /// Close sessions and/or channels' members (`POST /close`), with a last
    /// message from --data.
    Close {
        #[arg(value_name = "SESSION", required_unless_present = "channels")]
        sessions: Vec<String>,
        #[command(flatten)]
        to: Channels,
        #[arg(long)]
        data: Option<String>,
    },
    /// Start the drain; with --wait, return when it has ended (for a
    /// preStop hook).
    Drain {
        #[arg(long)]
        wait: bool,
    },
}

/// Channel targets of `send` and `close`.
#[derive(Debug, clap::Args)]
pub struct Channels {
    /// A channel whose members get it (repeatable).
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
    /// A session a channel push leaves out (repeatable).
    #[arg(long, value_name = "SESSION")]
    exclude: Vec<String>,
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Api {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Api::Tcp(authority) => write!(f, "http://{authority}"),
            Api::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A failure worth exit code 2, with what to do about it.
struct Failed(String);

/// What the caller got back.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// Runs one `ctl` command.
pub fn run(args: CtlArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(execute(args)) {
        Ok(code) => code,
        Err(Failed(message)) => {
            eprintln!("kuiperbelt ctl: {message}");
            ExitCode::from(2)
        }
    }
}

/// The API, the token and the session header, from flags, environment and config.
fn locate(args: &CtlArgs) -> Result<(Api, Option<String>, String), Failed> {
    let source = match &args.config {
        Some(path) => Source::Explicit(path.clone()),
        None => Source::Default(config::default_path().to_path_buf()),
    };
    let loaded = config::load(&source, &Overrides::default());
    let api = match (&args.api, &loaded) {
        (Some(api), _) => parse_api(api)?,
        (None, Ok(config)) => match &config.api.listen {
            Some(ListenAddr::Tcp(addr)) if addr.ip().is_unspecified() => {
                Api::Tcp(format!("127.0.0.1:{}", addr.port()))
            }
            Some(ListenAddr::Tcp(addr)) => Api::Tcp(addr.to_string()),
            Some(ListenAddr::Unix(path)) => Api::Unix(path.clone()),
            None => match &config.listen {
                Listen::Port(port) => Api::Tcp(format!("127.0.0.1:{port}")),
                Listen::Unix(path) => Api::Unix(path.clone()),
            },
        },
        (None, Err(e)) => {
            return Err(Failed(format!(
                "cannot tell where the API is: pass --api (reading the config: {e})"
            )))
        }
    };
    let token = match (&args.token, std::env::var("KUIPERBELT_API__TOKEN").ok()) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(t)) if !t.is_empty() => Some(t),
        _ => match loaded.as_ref().ok().and_then(|c| c.api.token.clone()) {
            Some(TokenSource::Value(t)) => Some(t),
            Some(TokenSource::File(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| Failed(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
    };
    let header = loaded
        .map(|c| c.session_header.to_string())
        .unwrap_or_else(|_| "X-Kuiperbelt-Session".into());
    Ok((api, token, header))
}

fn parse_api(api: &str) -> Result<Api, Failed> {
    if let Some(path) = api.strip_prefix("unix:") {
        return Ok(Api::Unix(PathBuf::from(path)));
    }
    if api.starts_with('/') {
        return Ok(Api::Unix(PathBuf::from(api)));
    }
    let uri: http::Uri = api.parse().map_err(|_| {
        Failed(format!(
            "--api {api:?} is not http://HOST:PORT or a UNIX socket path"
        ))
    })?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => Ok(Api::Tcp(authority.to_string())),
        _ => Err(Failed(format!(
            "--api {api:?} is not http://HOST:PORT or a UNIX socket path"
        ))),
    }
}

/// One request to the API.
async fn call(
    api: &Api,
    token: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    limit: Duration,
) -> Result<Answer, Failed> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Failed(format!(
            "cannot reach the API at {api}: {e} (is kuiperbelt running there? pass --api)"
        ))
    };
    let host = match api {
        Api::Tcp(authority) => authority.clone(),
        Api::Unix(_) => "localhost".into(),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| Failed(format!("bad request: {e}")))?;
    let exchange = async {
        let mut sender = match api {
            Api::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|e| unreachable(&e))?;
                handshake(stream).await.map_err(|e| unreachable(&e))?
            }
            Api::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| unreachable(&e))?;
                handshake(stream).await.map_err(|e| unreachable(&e))?
            }
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    let answer = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| Failed(format!("the API at {api} did not answer within {limit:?}")))??;
    match answer.status {
        StatusCode::UNAUTHORIZED => Err(Failed(format!(
            "the API at {api} refused the token (401): pass --token or set KUIPERBELT_API__TOKEN"
        ))),
        StatusCode::NOT_FOUND
            if ["/status", "/sessions", "/channels"]
                .iter()
                .any(|p| path.starts_with(p)) =>
        {
            Err(Failed(format!(
                "{api} does not serve {path} (404): is it the API listener (api.listen)?"
            )))
        }
        _ => Ok(answer),
    }
}

/// An HTTP/1.1 client connection over `stream`, driven in the background.
async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn json(answer: &Answer) -> Result<serde_json::Value, Failed> {
    serde_json::from_slice(&answer.body).map_err(|_| {
        Failed(format!(
            "unexpected answer ({}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ))
    })
}

const QUICK: Duration = Duration::from_secs(10);

async fn execute(args: CtlArgs) -> Result<ExitCode, Failed> {
    let (api, token, header) = locate(&args)?;
    let token = token.as_deref();
    match args.command {
        CtlCommand::Status { json: as_json } => {
            let answer = call(
                &api,
                token,
                Method::GET,
                "/status",
                &[],
                Bytes::new(),
                QUICK,
            )
            .await?;
            let s = json(&answer)?;
            if as_json {
                println!("{s}");
            } else {
                let yes = |b: &serde_json::Value| if b == true { "yes" } else { "no" };
                println!("api:         {api}");
                println!("version:     {}", s["version"].as_str().unwrap_or("?"));
                println!(
                    "ready:       {} ({})",
                    yes(&s["ready"]),
                    s["stage"].as_str().unwrap_or("?")
                );
                println!("uptime:      {} s", s["uptime_seconds"]);
                println!(
                    "connections: {} ({} addressable sessions)",
                    s["connections"], s["sessions"]
                );
                println!(
                    "callbacks:   {} ({} waiting for the app, {} close callbacks unanswered)",
                    if s["app_up"] == true {
                        "the app answers"
                    } else {
                        "HELD: the app does not answer"
                    },
                    s["callbacks_waiting"],
                    s["closing_connections"]
                );
                match &s["cluster"] {
                    serde_json::Value::Null => println!("cluster:     single node"),
                    c => println!(
                        "cluster:     {}",
                        if c["connected"] == true {
                            "connected to NATS"
                        } else {
                            "NATS LOST"
                        }
                    ),
                }
            }
            Ok(if s["ready"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        CtlCommand::Sessions {
            limit,
            prefix,
            json: as_json,
        } => {
            let all = pages(&api, token, "sessions", limit, &prefix).await?;
            if as_json {
                println!("{}", serde_json::Value::Array(all));
            } else {
                println!(
                    "{:<32} {:>9} {:>8} {:>8} {:>8} {:>7}  REMOTE",
                    "SESSION", "AGE(s)", "IN", "OUT", "QUEUED", "DEFLATE"
                );
                for s in &all {
                    println!(
                        "{:<32} {:>9} {:>8} {:>8} {:>8} {:>7}  {}",
                        s["session"].as_str().unwrap_or("?"),
                        s["age_seconds"],
                        s["messages_in"],
                        s["messages_out"],
                        s["queued_bytes"],
                        if s["permessage_deflate"] == true {
                            "yes"
                        } else {
                            "-"
                        },
                        s["remote"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Channels {
            limit,
            prefix,
            json: as_json,
        } => {
            let all = pages(&api, token, "channels", limit, &prefix).await?;
            if as_json {
                println!("{}", serde_json::Value::Array(all));
            } else {
                println!("{:<48} {:>8}", "CHANNEL", "MEMBERS");
                for c in &all {
                    println!(
                        "{:<48} {:>8}",
                        c["channel"].as_str().unwrap_or("?"),
                        c["members"]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Send {
            batch: Some(path), ..
        } => {
            let body = read_input(&path)?;
            push(&api, token, "/batch", Vec::new(), "application/json", body).await
        }
        CtlCommand::Send {
            sessions,
            to,
            binary,
            data,
            file,
            batch: None,
        } => {
            let body = match (data, file) {
                (Some(d), _) => Bytes::from(d),
                (None, Some(path)) => read_input(&path)?,
                (None, None) => {
                    return Err(Failed(
                        "send what? pass --data TEXT, --file FILE or --file -".into(),
                    ))
                }
            };
            let content_type = if binary {
                "application/octet-stream"
            } else {
                "text/plain; charset=utf-8"
            };
            let headers = targets(&header, &sessions, &to);
            push(&api, token, "/send", headers, content_type, body).await
        }
        CtlCommand::Close { sessions, to, data } => {
            let body = data.map(Bytes::from).unwrap_or_default();
            let headers = targets(&header, &sessions, &to);
            push(
                &api,
                token,
                "/close",
                headers,
                "text/plain; charset=utf-8",
                body,
            )
            .await
        }
        CtlCommand::Drain { wait } => {
            let (path, limit) = if wait {
                ("/drain", Duration::from_secs(3600))
            } else {
                ("/drain?wait=false", QUICK)
            };
            let answer = call(&api, token, Method::POST, path, &[], Bytes::new(), limit).await?;
            if answer.status.is_success() {
                println!(
                    "{}",
                    if wait {
                        "drain finished"
                    } else {
                        "drain started"
                    }
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{}", String::from_utf8_lossy(&answer.body));
                Ok(ExitCode::from(1))
            }
        }
    }
}

/// The contents of `path`, or of standard input for `-`.
fn read_input(path: &std::path::Path) -> Result<Bytes, Failed> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Failed(format!("reading standard input: {e}")))?;
        return Ok(Bytes::from(buf));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| Failed(format!("cannot read {}: {e}", path.display())))
}

/// Up to `limit` entries of `/<key>` (`sessions` or `channels`) whose
/// names start with `prefix`, following `next_after` page by page.
async fn pages(
    api: &Api,
    token: Option<&str>,
    key: &str,
    limit: usize,
    prefix: &str,
) -> Result<Vec<serde_json::Value>, Failed> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    while all.len() < limit {
        let page = (limit - all.len()).min(1000);
        let mut params = vec![("limit", page.to_string())];
        if !prefix.is_empty() {
            params.push(("prefix", prefix.to_string()));
        }
        if let Some(after) = &after {
            params.push(("after", after.clone()));
        }
        let query = serde_urlencoded::to_string(&params).unwrap_or_default();
        let path = format!("/{key}?{query}");
        let answer = call(api, token, Method::GET, &path, &[], Bytes::new(), QUICK).await?;
        let body = json(&answer)?;
        all.extend(body[key].as_array().cloned().unwrap_or_default());
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    Ok(all)
}

/// The target headers of a push: one session header per session, one
/// channel header per channel, one exclude header per excluded session.
fn targets<'a>(
    header: &'a str,
    sessions: &'a [String],
    to: &'a Channels,
) -> Vec<(&'a str, &'a str)> {
    let mut headers: Vec<(&str, &str)> = sessions.iter().map(|s| (header, s.as_str())).collect();
    headers.extend(
        to.channels
            .iter()
            .map(|c| ("x-kuiperbelt-channel", c.as_str())),
    );
    headers.extend(
        to.exclude
            .iter()
            .map(|e| ("x-kuiperbelt-exclude", e.as_str())),
    );
    headers
}

/// `/send` or `/close` with these target headers: prints the JSON reply; 1
/// when NG.
async fn push(
    api: &Api,
    token: Option<&str>,
    path: &str,
    mut headers: Vec<(&str, &str)>,
    content_type: &str,
    body: Bytes,
) -> Result<ExitCode, Failed> {
    headers.push(("content-type", content_type));
    let answer = call(api, token, Method::POST, path, &headers, body, QUICK).await?;
    let reply = json(&answer)?;
    println!("{reply}");
    Ok(if answer.status.is_success() && reply["result"] == "OK" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_forms() {
        assert_eq!(
            parse_api("http://127.0.0.1:9181").ok(),
            Some(Api::Tcp("127.0.0.1:9181".into()))
        );
        assert_eq!(
            parse_api("unix:/run/kb.sock").ok(),
            Some(Api::Unix("/run/kb.sock".into()))
        );
        assert_eq!(
            parse_api("/run/kb.sock").ok(),
            Some(Api::Unix("/run/kb.sock".into()))
        );
        assert!(parse_api("https://x:1").is_err());
        assert!(parse_api("nonsense").is_err());
    }
}
