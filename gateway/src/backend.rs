//! Backends: plain tcpnet nodes (no HTTP) that serve the clients'
//! procedures and receive their events, for every gateway of the cluster.
//!
//! A backend subscribes to a tcpnet topic per procedure and per event it
//! serves, so the gateways find it by interest (`topic_members`) and send
//! to it only what it serves.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tcpnet::Service;

use crate::cluster::wire::{event_topic, procedure_name, FromClient};
use crate::hooks::{Call, Calls, Client, ClientEvent, ClientEvents, Reply};

/// The backend side of a tcpnet node.
///
/// ```no_run
/// use futures::StreamExt;
/// use tcpnet_gateway::Backend;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let service = tcpnet::tcpnet("my-cluster")?;
/// service.listen(0, "0.0.0.0").await?;
/// let backend = Backend::new(service);
/// let mut calls = backend.procedure("upper")?;
/// while let Some(call) = calls.next().await {
///     match serde_json::from_str::<String>(call.data.get()) {
///         Ok(s) => call.end(s.to_uppercase()).await?,
///         Err(_) => call.error("bad-input", "send a string").await?,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Backend {
    service: Service,
}

impl Backend {
    /// The backend side of `service`.
    pub fn new(service: Service) -> Self {
        Backend { service }
    }

    /// Serves a procedure for every gateway's clients. Dropping the stream
    /// stops serving it.
    pub fn procedure(&self, name: &str) -> tcpnet::Result<Calls> {
        let tcpnet_name = procedure_name(name);
        let interest = self.service.subscribe(&tcpnet_name)?;
        let requests = self.service.procedure(&tcpnet_name)?;
        Ok(Calls {
            inner: Box::pin(BackendCalls {
                requests,
                _interest: interest,
            }),
        })
    }

    /// Receives an event transmitted by every gateway's clients. Dropping
    /// the stream stops receiving it.
    pub fn receiver(&self, event: &str) -> tcpnet::Result<ClientEvents> {
        let messages = self.service.subscribe(&event_topic(event))?;
        Ok(ClientEvents {
            inner: Box::pin(BackendEvents { messages }),
        })
    }
}

impl Backend {
    /// Publishes to a channel of the gateways, as `POST /channels/{ch}`
    /// does: every subscriber on every gateway gets it, with this node as
    /// the sender and no connection. Returns how many nodes it went to.
    pub async fn publish(
        &self,
        channel: &str,
        data: impl serde::Serialize,
    ) -> Result<usize, crate::Problem> {
        use crate::protocol::{check_name, Code, Problem};
        check_name(channel, Code::BadChannel)?;
        let data = serde_json::value::to_raw_value(&data)
            .map_err(|e| Problem::new(Code::BadField, e.to_string()))?;
        let body = serde_json::to_vec(&crate::cluster::wire::ChannelMessage {
            conn: None,
            key: None,
            data,
        })
        .expect("serializes");
        self.service
            .publish(&crate::cluster::wire::channel_topic(channel), body)
            .await
            .map_err(|e| Problem::new(Code::Unavailable, e.to_string()))
    }
}

/// The named error a backend answers a call with when the calling node
/// claims a client that is not its own (another node, or another node's
/// connection): the call never reaches the backend's stream.
pub const FORGED_ORIGIN: &str = "forged-origin";

fn client_of(f: &FromClient) -> Client {
    Client {
        conn: f.conn.clone(),
        key: f.key.clone(),
        node: f.node.clone(),
    }
}

struct BackendCalls {
    requests: tcpnet::Requests,
    /// Keeps this node among the topic's members, which is how gateways
    /// find it.
    _interest: tcpnet::Messages,
}

impl Stream for BackendCalls {
    type Item = Call;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Call>> {
        loop {
            let Some(req) = futures::ready!(Pin::new(&mut self.requests).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            match serde_json::from_slice::<FromClient>(req.data()) {
                // The caller is the node the link's handshake proved; it
                // speaks only for its own clients.
                Ok(f) => match f.check_sender(req.from().as_str()) {
                    Ok(()) => {
                        return Poll::Ready(Some(Call {
                            client: client_of(&f),
                            procedure: f.name,
                            data: f.data,
                            reply: Reply::Remote(req),
                        }))
                    }
                    Err(e) => {
                        tracing::warn!("a call refused: {e}");
                        let message = e.to_string();
                        tokio::spawn(async move {
                            let _ = req.error(FORGED_ORIGIN, &message).await;
                        });
                    }
                },
                Err(e) => {
                    let message = format!("not a gateway call: {e}");
                    tokio::spawn(async move {
                        let _ = req.error("bad-request", &message).await;
                    });
                }
            }
        }
    }
}

struct BackendEvents {
    messages: tcpnet::Messages,
}

impl Stream for BackendEvents {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        loop {
            let Some(msg) = futures::ready!(Pin::new(&mut self.messages).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            match serde_json::from_slice::<FromClient>(msg.data()) {
                // The publisher is proven by the message's signature (or
                // the link it came on): it speaks only for its own clients.
                Ok(f) => match f.check_sender(msg.from().as_str()) {
                    Ok(()) => {
                        return Poll::Ready(Some(ClientEvent {
                            client: client_of(&f),
                            event: f.name,
                            data: f.data,
                        }))
                    }
                    Err(e) => tracing::warn!("a client event refused: {e}"),
                },
                Err(e) => tracing::warn!(from = %msg.from(), "not a client event: {e}"),
            }
        }
    }
}
