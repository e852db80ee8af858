//! Client events and procedure calls: served by this node's application
//! (the hooks) first, else by backends, plain tcpnet nodes found by the
//! topics they subscribe to (see [`crate::Backend`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::Node;
use crate::cluster::wire::{event_topic, procedure_name, FromClient};
use crate::hooks::{Call, Client, ClientEvent, Reply};
use crate::protocol::{server, Code, Problem};

/// How a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The procedure's named error.
    Remote { name: String, message: String },
    /// Any other failure.
    Failed(Problem),
}

impl From<Problem> for CallError {
    fn from(p: Problem) -> Self {
        CallError::Failed(p)
    }
}

/// The `error` frame for a failed call.
pub(crate) fn error_frame(id: u64, e: CallError) -> String {
    match e {
        CallError::Remote { name, message } => server::remote_error(id, &name, &message),
        CallError::Failed(p) => server::error(Some(id), &p),
    }
}

fn failed(code: Code, message: impl Into<String>) -> CallError {
    CallError::Failed(Problem::new(code, message))
}

impl Node {
    /// The linked nodes serving a backend topic (a member known only
    /// through another node's relay cannot be called yet).
    fn backends(&self, topic: &str) -> Vec<tcpnet::NodeId> {
        let linked: Vec<tcpnet::NodeId> = self
            .service
            .connections()
            .iter()
            .map(|c| c.peer_id().clone())
            .collect();
        self.service
            .topic_members(topic)
            .into_iter()
            .filter(|n| linked.contains(n))
            .collect()
    }

    fn from_client(client: &Client, name: &str, data: Box<RawValue>) -> Vec<u8> {
        serde_json::to_vec(&FromClient {
            conn: client.conn.clone(),
            key: client.key.clone(),
            node: client.node.clone(),
            name: name.to_string(),
            data,
        })
        .expect("serializes")
    }

    /// Hands a client's event to this node's receivers and to every
    /// backend receiving it; `no-receiver` if there are none.
    pub(crate) async fn transmit(
        &self,
        client: &Client,
        event: &str,
        data: Box<RawValue>,
    ) -> Result<(), Problem> {
        let local = self.hooks.receive(ClientEvent {
            client: client.clone(),
            event: event.to_string(),
            data: data.clone(),
        });
        let topic = event_topic(event);
        let remote = !self.backends(&topic).is_empty();
        if remote {
            self.service
                .publish(&topic, Self::from_client(client, event, data))
                .await
                .map_err(|e| Problem::new(Code::Unavailable, e.to_string()))?;
        }
        if !local && !remote {
            return Err(Problem::new(
                Code::NoReceiver,
                format!("nothing receives the event {event:?}"),
            ));
        }
        Ok(())
    }

    /// Calls a procedure for a client: this node's handlers first, else a
    /// backend serving it (round robin).
    pub(crate) async fn invoke(
        &self,
        client: &Client,
        procedure: &str,
        data: Box<RawValue>,
        timeout: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            client: client.clone(),
            procedure: procedure.to_string(),
            data,
            reply: Reply::Local(tx),
        };
        let data = match self.hooks.call(call) {
            Ok(()) => {
                return match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(Ok(answer))) => Ok(answer),
                    Ok(Ok(Err((name, message)))) => Err(CallError::Remote { name, message }),
                    Ok(Err(_)) => Err(failed(
                        Code::CallFailed,
                        format!("the handler of {procedure:?} dropped the call unanswered"),
                    )),
                    Err(_) => Err(failed(
                        Code::Timeout,
                        format!("{procedure:?} did not answer within {timeout:?}"),
                    )),
                };
            }
            Err((_, true)) => {
                return Err(failed(
                    Code::CallFailed,
                    format!("every handler of {procedure:?} on this node is busy"),
                ))
            }
            Err((call, false)) => call.data,
        };
        let name = procedure_name(procedure);
        let backends = self.backends(&name);
        if backends.is_empty() {
            return Err(failed(
                Code::UnknownProcedure,
                format!("nothing serves the procedure {procedure:?}"),
            ));
        }
        let i = self.next_backend.fetch_add(1, Ordering::Relaxed) % backends.len();
        let peer = &backends[i];
        let body = Self::from_client(client, procedure, data);
        match self.service.request(peer, &name, body, timeout).await {
            Ok(answer) => serde_json::from_slice::<Box<RawValue>>(&answer).map_err(|e| {
                failed(
                    Code::CallFailed,
                    format!("the answer of {procedure:?} from {peer} is not JSON: {e}"),
                )
            }),
            Err(tcpnet::Error::Call { error, .. }) => match error {
                tcpnet::CallError::Remote { name, message } => {
                    Err(CallError::Remote { name, message })
                }
                tcpnet::CallError::Timeout(_) => Err(failed(
                    Code::Timeout,
                    format!("{procedure:?} did not answer within {timeout:?}"),
                )),
                tcpnet::CallError::NoProcedure => Err(failed(
                    Code::UnknownProcedure,
                    format!("the backend {peer} no longer serves {procedure:?}"),
                )),
                other => Err(failed(
                    Code::CallFailed,
                    format!("{procedure:?} on {peer}: {other}"),
                )),
            },
            Err(e) => Err(failed(Code::CallFailed, e.to_string())),
        }
    }
}
