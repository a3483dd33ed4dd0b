//! Cluster mode: pushes to sessions held by other nodes, over NATS.
//!
//! Each node subscribes to `<prefix>.s.<id>` for every session it holds
//! (while it holds it). A push whose target is not held here becomes a NATS
//! request on that subject, carrying the frame encoded once; the holder
//! hands it to its sessions core (`Sessions::deliver`) and answers with the
//! outcome; "no responders" means no node holds the id. A node that
//! registers an id tells the others, whose older connection closes with
//! 4001. Membership changes for a session held elsewhere go to its subject
//! too.
//!
//! Each node also subscribes to `<prefix>.c.<name>` while it holds a member
//! of channel `name`. A channel push is one request on that subject: every
//! node with members delivers it to them (`Sessions::offer_channels`) and
//! answers; the first answer (or "no responders": no member anywhere) is the
//! pusher's. The connection does not echo, so a node never hears its own
//! pushes (its members got them locally). `/stats?scope=cluster` asks every
//! node on `<prefix>.stats`.
//!
//! Owns the NATS client, the subscriptions and the remote half of a push.
//! Local targets never come here; without `cluster.*` none of this runs.

pub(crate) mod config;
pub(crate) mod metrics;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frame::Recent;
use crate::metrics::{Metrics, Stats};
use crate::sessions::channels::check_name;
use crate::sessions::outlet::Push;
use crate::sessions::{Missed, Outcome, SessionEvent, Sessions, StopReason};
use config::{ClusterConfig, NatsAuth};
pub(crate) use metrics::ClusterError;
use metrics::ClusterMetrics;
use wire::Request;

/// How long `/stats?scope=cluster` collects the nodes' answers at most.
const STATS_WINDOW: Duration = Duration::from_millis(500);

/// This node's link to the others.
pub(crate) struct Cluster {
    client: Client,
    /// A random name, so a node ignores its own replacement notices.
    node: String,
    prefix: String,
    request_timeout: Duration,
    pub(crate) metrics: ClusterMetrics,
    /// Frames that arrived lately, so the copies of one push share one
    /// compressed form.
    recent: Recent,
}

impl Cluster {
    /// Starts connecting (in the background: an unreachable NATS does not
    /// stop the node, which keeps serving its own sessions and retries).
    pub(crate) async fn connect(
        config: &ClusterConfig,
        metrics: ClusterMetrics,
        recent: Recent,
    ) -> std::io::Result<Cluster> {
        let connected = metrics.connected.clone();
        let mut options = ConnectOptions::new()
            .name("kuiperbelt")
            .retry_on_initial_connect()
            // A channel push reaches the members here locally; its NATS
            // copy is for the other nodes.
            .no_echo()
            .max_reconnects(None)
            .request_timeout(Some(config.request_timeout))
            // A session's subject sees a push at a time: a small buffer.
            .subscription_capacity(1024)
            .event_callback(move |event| {
                let connected = connected.clone();
                async move {
                    match event {
                        Event::Connected => {
                            connected.set(1);
                            tracing::info!("cluster: connected to NATS");
                        }
                        Event::Disconnected => {
                            connected.set(0);
                            tracing::warn!("cluster: lost NATS; pushes to other nodes' sessions fail until it is back");
                        }
                        other => tracing::debug!(event = %other, "cluster: NATS event"),
                    }
                }
            });
        options = match &config.auth {
            NatsAuth::None => options,
            NatsAuth::Token(t) => options.token(t.clone()),
            NatsAuth::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
            NatsAuth::CredentialsFile(path) => options.credentials_file(path).await?,
        };
        let urls: Vec<async_nats::ServerAddr> =
            config.urls.iter().filter_map(|u| u.parse().ok()).collect();
        let client = options
            .connect(urls)
            .await
            .map_err(|e| std::io::Error::other(format!("cluster: {e}")))?;
        Ok(Cluster {
            client,
            node: format!("{:016x}", fastrand::u64(..)),
            prefix: config.subject_prefix.clone(),
            request_timeout: config.request_timeout,
            metrics,
            recent,
        })
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Sends `request` to the holder of `id`: its answer, `None` when no
    /// node holds it, `Err` when the cluster cannot say.
    async fn ask(&self, id: &str, request: Bytes) -> Result<Option<Bytes>, ClusterError> {
        self.ask_on(wire::session_subject(&self.prefix, id), request)
            .await
    }

    /// Sends `request` on `subject`: the first answer, `None` when nobody
    /// listens, `Err` when the cluster cannot say.
    async fn ask_on(&self, subject: String, request: Bytes) -> Result<Option<Bytes>, ClusterError> {
        if !self.connected() {
            return Err(ClusterError::Unavailable);
        }
        let started = Instant::now();
        let answer = self.client.request(subject, request).await;
        self.metrics.request(started.elapsed().as_secs_f64());
        match answer {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                self.metrics.error(ClusterError::NoResponders);
                Ok(None)
            }
            Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(ClusterError::Timeout),
            Err(_) => Err(ClusterError::Unavailable),
        }
    }

    /// The remote half of a push: hands `push` to the holders of `ids`
    /// (none of them held here), all at once; one outcome each.
    pub(crate) async fn deliver(&self, ids: &[&str], push: &Push) -> Vec<Outcome> {
        let request = Request::Push(push.clone()).encode();
        let answers = join_all(ids.iter().map(|id| self.ask(id, request.clone()))).await;
        answers
            .into_iter()
            .map(|answer| match answer {
                Ok(Some(outcome)) => {
                    self.metrics.push_sent();
                    wire::decode_outcome(&outcome)
                }
                Ok(None) => Outcome::NotFound,
                Err(e) => {
                    self.metrics.error(e);
                    Outcome::Unavailable
                }
            })
            .collect()
    }

    /// For each of `ids`: `None` when another node holds it, else why it
    /// cannot be reached (`NotFound`, or `Unavailable` when the cluster
    /// cannot say).
    pub(crate) async fn unreachable(&self, ids: &[&str]) -> Vec<Option<Outcome>> {
        let request = Request::Exists.encode();
        let answers = join_all(ids.iter().map(|id| self.ask(id, request.clone()))).await;
        answers.into_iter().map(|a| self.reachable(a)).collect()
    }

    /// An existence check's answer: `None` when someone answered.
    fn reachable(&self, answer: Result<Option<Bytes>, ClusterError>) -> Option<Outcome> {
        match answer {
            Ok(Some(_)) => None,
            Ok(None) => Some(Outcome::NotFound),
            Err(e) => {
                self.metrics.error(e);
                Some(Outcome::Unavailable)
            }
        }
    }

    /// The remote half of a channel push: one request on the channel's
    /// subject, delivered by every other node with members (leaving out
    /// `skip` and the members of `covered`). The first node's count of
    /// members reached, `None` when no other node has a member.
    pub(crate) async fn broadcast(
        &self,
        name: &str,
        push: &Push,
        skip: &[&str],
        covered: &[&str],
    ) -> Result<Option<usize>, ClusterError> {
        let request = Request::encode_broadcast(push, skip, covered);
        match self
            .ask_on(wire::channel_subject(&self.prefix, name), request)
            .await
        {
            Ok(answer) => {
                self.metrics.push_sent();
                Ok(answer.map(|a| wire::decode_count(&a).unwrap_or(0)))
            }
            Err(e) => {
                self.metrics.error(e);
                Err(e)
            }
        }
    }

    /// For each of `names`: `None` when another node has a member, else
    /// why it cannot be reached (`NotFound`, or `Unavailable`).
    pub(crate) async fn channels_unreachable(&self, names: &[&str]) -> Vec<Option<Outcome>> {
        let request = Request::Exists.encode();
        let answers =
            join_all(names.iter().map(|name| {
                self.ask_on(wire::channel_subject(&self.prefix, name), request.clone())
            }))
            .await;
        answers.into_iter().map(|a| self.reachable(a)).collect()
    }

    /// Joins (or leaves) `names` for sessions `ids`, none held here, on the
    /// nodes holding them; one result each.
    pub(crate) async fn membership(
        &self,
        ids: &[&str],
        names: &[&str],
        join: bool,
    ) -> Vec<Result<(), Missed>> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let request = if join {
            Request::Join(names)
        } else {
            Request::Leave(names)
        }
        .encode();
        let answers = join_all(ids.iter().map(|id| self.ask(id, request.clone()))).await;
        answers
            .into_iter()
            .map(|answer| match answer {
                Ok(Some(answer)) => wire::decode_membership(&answer),
                Ok(None) => Err(Missed::NotFound),
                Err(e) => {
                    self.metrics.error(e);
                    Err(Missed::Unavailable)
                }
            })
            .collect()
    }

    /// Every node's `/stats` numbers, summed, `local` (this node's) included.
    pub(crate) async fn stats(&self, local: Stats) -> Result<(Stats, usize), ClusterError> {
        if !self.connected() {
            return Err(ClusterError::Unavailable);
        }
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|_| ClusterError::Unavailable)?;
        self.client
            .publish_with_reply(format!("{}.stats", self.prefix), inbox, Bytes::new())
            .await
            .map_err(|_| ClusterError::Unavailable)?;
        // The connection does not echo: this node answers itself here.
        let mut total = local;
        let mut nodes = 1;
        let window = tokio::time::sleep(STATS_WINDOW);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                answer = answers.next() => match answer {
                    Some(m) => {
                        if let Ok(stats) = serde_json::from_slice::<Stats>(&m.payload) {
                            total.add(&stats);
                            nodes += 1;
                        }
                    }
                    None => break,
                },
            }
        }
        Ok((total, nodes))
    }
}

/// What this node serves other nodes: its sessions core and its `/stats`.
#[derive(Clone)]
pub(crate) struct Local {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) metrics: Metrics,
}

/// Keeps this node's subscriptions in step with its sessions, and answers
/// what other nodes ask, until the server stops (the caller aborts it).
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    local: Local,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
) {
    let stats_task = tokio::spawn(answer_stats(cluster.clone(), local.metrics.clone()));
    let mut held: HashMap<Arc<str>, (u64, JoinHandle<()>)> = HashMap::new();
    let mut channels: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Barrier(done) => {
                // The server has every SUB sent so far once it answers.
                if cluster.connected() {
                    let _ =
                        tokio::time::timeout(cluster.request_timeout, cluster.client.flush()).await;
                }
                let _ = done.send(());
            }
            SessionEvent::Channel { name } => {
                // A hint: subscribed exactly while this node has members.
                let wanted = local.sessions.has_members(&name);
                if wanted == channels.contains_key(&name) {
                    continue;
                }
                if !wanted {
                    if let Some(task) = channels.remove(&name) {
                        task.abort();
                    }
                    continue;
                }
                let subject = wire::channel_subject(&cluster.prefix, &name);
                match cluster.client.subscribe(subject).await {
                    Ok(subscriber) => {
                        let task = tokio::spawn(serve_channel(
                            cluster.clone(),
                            local.sessions.clone(),
                            name.clone(),
                            subscriber,
                        ));
                        channels.insert(name, task);
                    }
                    Err(e) => {
                        tracing::warn!(channel = %name, error = %e, "cluster: cannot subscribe; pushes on other nodes cannot reach this channel's members here")
                    }
                }
            }
            SessionEvent::Registered { id, serial } => {
                let subject = wire::session_subject(&cluster.prefix, &id);
                // Other nodes holding this id close their connection.
                let notice = Request::Replace(cluster.node.clone()).encode();
                if let Err(e) = cluster.client.publish(subject.clone(), notice).await {
                    tracing::debug!(session = %id, error = %e, "cluster: replacement notice not sent");
                }
                match cluster.client.subscribe(subject).await {
                    Ok(subscriber) => {
                        let task = tokio::spawn(serve_session(
                            cluster.clone(),
                            local.sessions.clone(),
                            id.clone(),
                            subscriber,
                        ));
                        if let Some((_, old)) = held.insert(id, (serial, task)) {
                            old.abort();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "cluster: cannot subscribe; other nodes cannot reach this session")
                    }
                }
            }
            SessionEvent::Unregistered { id, serial } => {
                if held.get(&id).is_some_and(|(s, _)| *s == serial) {
                    if let Some((_, task)) = held.remove(&id) {
                        task.abort();
                    }
                }
            }
        }
    }
    stats_task.abort();
    for (_, (_, task)) in held {
        task.abort();
    }
    for (_, task) in channels {
        task.abort();
    }
}

/// Delivers other nodes' pushes to channel `name` to its members here, in
/// the order they arrive, and answers each at once with how many it
/// reached: a member whose queue is full is waited on beside the next
/// pushes (its place in its queue already taken), never ahead of them.
async fn serve_channel(
    cluster: Arc<Cluster>,
    sessions: Arc<Sessions>,
    name: Arc<str>,
    mut subscriber: Subscriber,
) {
    let mut waits = FuturesUnordered::new();
    loop {
        let message = tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
            Some(_) = waits.next(), if !waits.is_empty() => continue,
        };
        let answer = match Request::decode(message.payload) {
            Some(Request::Broadcast {
                push,
                skip,
                covered,
            }) => {
                cluster.metrics.push_received();
                let push = push.map_frame(|frame| cluster.recent.share(frame));
                let skip = skip.iter().map(String::as_str).collect();
                let offered = sessions.offer_channels(&[&*name], &skip, &covered, push);
                let reached = offered.reached();
                let mut settle = Box::pin(sessions.settle(offered));
                // Polled once now, so its waits queue up in arrival order.
                if (&mut settle).now_or_never().is_none() {
                    waits.push(settle);
                }
                Some(wire::encode_count(reached))
            }
            Some(Request::Exists) => Some(Bytes::from_static(b"Y")),
            _ => None,
        };
        if let (Some(answer), Some(reply)) = (answer, message.reply) {
            let _ = cluster.client.publish(reply, answer).await;
        }
    }
    // Unsubscribed: what still waits finishes.
    while waits.next().await.is_some() {}
}

/// Answers other nodes' requests for session `id`, one at a time (so one
/// caller's pushes arrive in the order they were answered).
async fn serve_session(
    cluster: Arc<Cluster>,
    sessions: Arc<Sessions>,
    id: Arc<str>,
    mut subscriber: Subscriber,
) {
    while let Some(message) = subscriber.next().await {
        let answer = match Request::decode(message.payload) {
            Some(Request::Push(push)) => {
                cluster.metrics.push_received();
                let push = push.map_frame(|frame| cluster.recent.share(frame));
                let outcome = sessions.deliver(&[&*id], push).await[0];
                Some(wire::encode_outcome(outcome))
            }
            Some(Request::Exists) => Some(Bytes::from_static(b"Y")),
            Some(Request::Replace(node)) => {
                if node != cluster.node {
                    sessions.stop(&id, StopReason::Replaced);
                }
                None
            }
            Some(Request::Join(names)) => {
                let joined = checked(&names).and_then(|names| sessions.join(&[&*id], &names)[0]);
                // Answered once other nodes' pushes can reach it.
                sessions.settled().await;
                Some(wire::encode_membership(joined))
            }
            Some(Request::Leave(names)) => Some(wire::encode_membership(
                checked(&names).and_then(|names| sessions.leave(&[&*id], &names)[0]),
            )),
            Some(Request::Broadcast { .. }) | None => None,
        };
        if let (Some(answer), Some(reply)) = (answer, message.reply) {
            let _ = cluster.client.publish(reply, answer).await;
        }
    }
}

/// Channel names from another node, held to the same rule as a header's;
/// a bad one makes the whole change unavailable.
fn checked(names: &[String]) -> Result<Vec<&str>, Missed> {
    names
        .iter()
        .map(|n| check_name(n.as_bytes()).map_err(|_| Missed::Unavailable))
        .collect()
}

/// Answers `/stats?scope=cluster` requests with this node's numbers.
async fn answer_stats(cluster: Arc<Cluster>, metrics: Metrics) {
    let Ok(mut requests) = cluster
        .client
        .subscribe(format!("{}.stats", cluster.prefix))
        .await
    else {
        tracing::warn!("cluster: cannot answer cluster-wide /stats");
        return;
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let stats = serde_json::to_vec(&metrics.stats()).expect("stats serialize");
        let _ = cluster.client.publish(reply, stats.into()).await;
    }
}
