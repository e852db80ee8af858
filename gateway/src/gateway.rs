//! The embedding API: [`Gateway::builder`] over a running
//! [`tcpnet::Service`], hooks, and the axum [`Router`] to mount.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::request::Parts;
use axum::Router;
use futures::StreamExt;
use tcpnet::Service;
use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;

use crate::cluster;
use crate::directory::{self, NodeInfo};
use crate::hooks::{
    default_key, lock, Access, Action, AuthorizeFn, Calls, Client, ClientEvents, Disconnection,
    Events, Fanout, Hooks, KeyFn, MessageHook,
};
use crate::limits::Limits;
use crate::node::{ApiAccess, Node};
use crate::protocol::{check_name, Code, Problem};

/// The queue of each receiver and procedure stream.
const HOOK_QUEUE: usize = 1024;

/// This node's changes queued for the sync task at most; past it, the
/// other nodes get snapshots instead of the changes.
const OPS_QUEUE: usize = 65_536;

/// Builds a [`Gateway`]; from [`Gateway::builder`].
pub struct GatewayBuilder {
    service: Service,
    url: String,
    limits: Limits,
    api: ApiAccess,
    key: Arc<KeyFn>,
    authorize: Option<Arc<AuthorizeFn>>,
    on_message: Option<Arc<MessageHook>>,
}

impl GatewayBuilder {
    /// Limits on clients (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The API token: every HTTP API route but `/health` then needs
    /// `Authorization: Bearer <token>`.
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.api.token = Some(token.into());
        self
    }

    /// Without an API token, allow the mutating API routes (publish,
    /// close a channel, disconnect, send to a key) to anyone who can reach
    /// the HTTP port. Off by default.
    pub fn open_api(mut self, open: bool) -> Self {
        self.api.open = open;
        self
    }

    /// The key function: computes a connection's key from its HTTP request
    /// (default: [`default_key`]). A connection without one gets its
    /// connection id as its key.
    pub fn key(mut self, f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.key = Arc::new(f);
        self
    }

    /// Channel authorization: whether a client may subscribe to (or see the
    /// presence of) a channel, or publish to it. Default: every client may.
    pub fn authorize(
        mut self,
        f: impl Fn(&Client, &str, Access) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Arc::new(f));
        self
    }

    /// The message hook: runs on each publish, send, transmit and invoke of
    /// a client before it goes anywhere; `false` stops it (the client gets
    /// a `stopped` error).
    pub fn on_message(
        mut self,
        f: impl Fn(&Client, &Action<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.on_message = Some(Arc::new(f));
        self
    }

    /// Starts the gateway on the service (its tasks run on the current
    /// tokio runtime) and sets its URL in the service's metadata (under
    /// [`URL_META`](crate::URL_META)). Build it before
    /// [`Service::listen`](tcpnet::Service::listen), so that the node's
    /// hello carries the URL from its first link on (on a service already
    /// listening, the URL reaches linked peers as a metadata update).
    /// Fails if the service refuses a stream, or the URL
    /// ([`tcpnet::Error::InvalidMeta`]: longer than a metadata value may be).
    pub fn build(self) -> tcpnet::Result<Gateway> {
        let hooks = Hooks {
            key: self.key,
            authorize: self.authorize,
            on_message: self.on_message,
            connections: Fanout::new(),
            disconnections: Fanout::new(),
            receivers: Mutex::new(HashMap::new()),
            procedures: Mutex::new(HashMap::new()),
        };
        directory::announce(&self.service, &self.url)?;
        let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
        let node = Arc::new(Node::new(
            self.service,
            self.limits,
            hooks,
            self.api,
            ops_tx,
        ));
        cluster::inbox::start(&node)?;
        cluster::sync::start(node.clone(), ops_rx)?;
        Ok(Gateway { node })
    }
}

/// A WebSocket gateway on one tcpnet node. Mount [`router`](Self::router)
/// in an axum application; read the streams it offers.
///
/// ```no_run
/// use futures::StreamExt;
/// use tcpnet_gateway::Gateway;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let service = tcpnet::tcpnet("my-cluster")?;
/// let gateway = Gateway::builder(service.clone(), "http://10.0.0.5:8080")
///     .authorize(|client, channel, _access| !channel.starts_with("admin") || client.key == "root")
///     .on_message(|_client, action| !matches!(action, tcpnet_gateway::Action::Publish { channel: "quiet", .. }))
///     .build()?;
/// service.listen(0, "0.0.0.0").await?;
/// let mut calls = gateway.procedure("upper")?;
/// tokio::spawn(async move {
///     while let Some(call) = calls.next().await {
///         let text: String = serde_json::from_str(call.data.get()).unwrap_or_default();
///         let _ = call.end(text.to_uppercase()).await;
///     }
/// });
/// let app = axum::Router::new().merge(gateway.router());
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gateway {
    node: Arc<Node>,
}

impl Gateway {
    /// A builder over a tcpnet service whose gateway serves HTTP at `url`
    /// (advertised in the node's tcpnet metadata, so every node lists it in
    /// `GET /nodes`).
    pub fn builder(service: Service, url: impl Into<String>) -> GatewayBuilder {
        GatewayBuilder {
            service,
            url: url.into(),
            limits: Limits::default(),
            api: ApiAccess {
                token: None,
                open: false,
            },
            key: Arc::new(default_key),
            authorize: None,
            on_message: None,
        }
    }

    /// The routes: the HTTP API and the WebSocket endpoint.
    pub fn router(&self) -> Router {
        crate::http::router(self.node.clone())
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.node.me
    }

    /// The gateway nodes this one knows, itself first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        directory::nodes(&self.node.service)
    }

    /// Every new connection of this node.
    pub fn connections(&self) -> Events<Client> {
        self.node.hooks.connections.subscribe()
    }

    /// Every closed connection of this node, with the reason.
    pub fn disconnections(&self) -> Events<Disconnection> {
        self.node.hooks.disconnections.subscribe()
    }

    /// Events of this name transmitted by this node's clients. An event for
    /// a receiver whose queue (1024) is full is dropped for it.
    pub fn receiver(&self, event: &str) -> Result<ClientEvents, Problem> {
        check_name(event, Code::BadEvent)?;
        let (tx, rx) = mpsc::channel(HOOK_QUEUE);
        lock(&self.node.hooks.receivers)
            .entry(event.to_string())
            .or_default()
            .push(tx);
        Ok(ClientEvents {
            inner: ReceiverStream::new(rx).boxed(),
        })
    }

    /// Calls of this procedure by this node's clients (several streams share
    /// the calls, round robin; a call finding every queue full fails with
    /// `call-failed`).
    pub fn procedure(&self, name: &str) -> Result<Calls, Problem> {
        check_name(name, Code::BadProcedure)?;
        let (tx, rx) = mpsc::channel(HOOK_QUEUE);
        lock(&self.node.hooks.procedures)
            .entry(name.to_string())
            .or_default()
            .push(tx);
        Ok(Calls {
            inner: ReceiverStream::new(rx).boxed(),
        })
    }

    /// Publishes to a channel from the application (as `POST /channels/{ch}`).
    pub async fn publish(
        &self,
        channel: &str,
        data: impl serde::Serialize,
    ) -> Result<usize, Problem> {
        check_name(channel, Code::BadChannel)?;
        let raw = serde_json::value::to_raw_value(&data)
            .map_err(|e| Problem::new(Code::BadField, e.to_string()))?;
        self.node.publish(None, channel, raw).await
    }
}

/// A `Stream` over an mpsc receiver.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;

    pub(super) struct ReceiverStream<T>(mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub(super) fn new(rx: mpsc::Receiver<T>) -> Self {
            ReceiverStream(rx)
        }
    }

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
