//! The HTTP side: the JSON API (`/health`, `/nodes`, `/channels`,
//! `/connections`, `/keys`, `/peers`) and the WebSocket endpoint (`/ws`,
//! `/ws/<channel>`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use serde_json::value::RawValue;

use crate::cluster::wire::{Control, CONTROL_EVENT};
use crate::hooks::{Access, Client};
use crate::node::Node;
use crate::protocol::{check_key, check_name, Code, Origin, Problem};
use crate::session;

/// An API error: a status, a code and a message, as
/// `{"error": code, "message": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        let status = match p.code {
            Code::KeyOffline => StatusCode::NOT_FOUND,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, p.code.as_str(), p.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The routes, with the node as their state.
pub(crate) fn router(node: Arc<Node>) -> Router {
    let body_limit = node.limits.max_message;
    Router::new()
        .route("/health", get(health))
        .route(
            "/nodes",
            get(nodes).layer(map_response(crate::web::any_origin)),
        )
        .route("/channels", get(channels))
        .route(
            "/channels/{channel}",
            get(channel).post(publish).delete(close_channel),
        )
        .route("/connections", get(connections))
        .route("/connections/{id}", delete(kick))
        .route("/keys/{key}", get(key_status).post(send_to_key))
        .route("/peers", post(add_peer))
        .route("/ws", get(ws_root))
        .route("/ws/{channel}", get(ws_channel))
        .merge(crate::web::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// Checks the API token; without one, refuses the mutating routes unless
/// the API was opened.
fn allow(node: &Node, headers: &HeaderMap, mutating: bool) -> Result<(), ApiError> {
    match &node.api.token {
        Some(token) => {
            let given = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given == Some(token.as_str()) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this route needs the header `Authorization: Bearer <API token>`",
                ))
            }
        }
        None if mutating && !node.api.open => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "api-closed",
            "no API token is set, so changes through the API are refused; \
             set an API token, or start with --open-api",
        )),
        None => Ok(()),
    }
}

fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Box<RawValue>, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too-large"
        } else {
            "bad-body"
        };
        ApiError::new(status, code, e.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("the body is not JSON: {e}"),
        )
    })
}

fn channel_name(channel: &str) -> Result<(), ApiError> {
    check_name(channel, Code::BadChannel).map_err(ApiError::from)
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    Json(json!({
        "status": "ok",
        "node": node.me,
        "links": node.service.connections().len(),
        "connections": node.connection_count(),
    }))
    .into_response()
}

async fn nodes(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    allow(&node, &headers, false)?;
    Ok(Json(json!({ "nodes": crate::directory::nodes(&node.service) })).into_response())
}

async fn channels(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    allow(&node, &headers, false)?;
    let channels = crate::hooks::lock(&node.state).view.channels();
    Ok(Json(json!({ "channels": channels })).into_response())
}

async fn channel(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    allow(&node, &headers, false)?;
    channel_name(&channel)?;
    let members = node.members(&channel);
    Ok(Json(json!({ "channel": channel, "members": members })).into_response())
}

async fn publish(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    allow(&node, &headers, true)?;
    channel_name(&channel)?;
    let data = json_body(body)?;
    let nodes = node.publish(None, &channel, data).await?;
    Ok(Json(json!({ "channel": channel, "nodes": nodes })).into_response())
}

async fn close_channel(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    allow(&node, &headers, true)?;
    channel_name(&channel)?;
    let body = serde_json::to_vec(&Control::CloseChannel {
        channel: channel.clone(),
    })
    .expect("serializes");
    let nodes = node.service.emit(CONTROL_EVENT, body).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    let here = node.close_channel_local(&channel);
    Ok(Json(json!({
        "channel": channel,
        "unsubscribed_here": here,
        "other_nodes_told": nodes,
    }))
    .into_response())
}

async fn connections(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    allow(&node, &headers, false)?;
    let (connections, unanswered) = node.all_connections().await;
    Ok(Json(json!({ "connections": connections, "unanswered": unanswered })).into_response())
}

async fn kick(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    allow(&node, &headers, true)?;
    match node.kick(&id).await {
        Ok(true) => Ok(Json(json!({ "disconnected": id })).into_response()),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no connection {id:?} in the cluster"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e,
        )),
    }
}

async fn key_status(
    State(node): State<Arc<Node>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    allow(&node, &headers, false)?;
    check_key(&key)?;
    let nodes = crate::hooks::lock(&node.state).view.holders(&key);
    Ok(Json(json!({ "key": key, "online": !nodes.is_empty(), "nodes": nodes })).into_response())
}

async fn send_to_key(
    State(node): State<Arc<Node>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    allow(&node, &headers, true)?;
    check_key(&key)?;
    let data = json_body(body)?;
    let from = Origin {
        node: node.me.clone(),
        conn: None,
        key: None,
    };
    let nodes = node.send_to_key(&key, from, data).await?;
    Ok(Json(json!({ "key": key, "nodes": nodes })).into_response())
}

/// Adds a static peer at run time: the body is a JSON string, the
/// `host:port` of another node's mesh port, dialed now and whenever its
/// link breaks (as `--peer`).
async fn add_peer(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    allow(&node, &headers, true)?;
    let data = json_body(body)?;
    let Ok(peer) = serde_json::from_str::<String>(data.get()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-peer",
            "the body must be a JSON string: \"host:port\" of a node's mesh port",
        ));
    };
    match node.service.add_peer(&peer).await {
        Ok(()) => Ok(Json(json!({ "peer": peer })).into_response()),
        Err(e @ tcpnet::Error::InvalidAddress { .. }) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-peer",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}

async fn ws_root(State(node): State<Arc<Node>>, req: Request) -> Response {
    upgrade(node, None, req).await
}

async fn ws_channel(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    req: Request,
) -> Response {
    upgrade(node, Some(channel), req).await
}

/// Checks a WebSocket request (origin, room for it, the path's channel),
/// computes the key, and hands the upgraded socket to a session.
async fn upgrade(node: Arc<Node>, channel: Option<String>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let limits = &node.limits;
    let origin = parts.headers.get("origin").and_then(|o| o.to_str().ok());
    if !limits.origin_allowed(origin) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin-not-allowed",
            format!("origin {:?} is not allowed", origin.unwrap_or_default()),
        )
        .into_response();
    }
    if node.connection_count() >= limits.max_connections {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-connections",
            format!(
                "this node holds {} connections, its most",
                limits.max_connections
            ),
        )
        .into_response();
    }
    let conn = node.conn_id();
    let key = (node.hooks.key)(&parts).unwrap_or_else(|| conn.clone());
    let client = Client {
        conn,
        key,
        node: node.me.clone(),
    };
    if let Some(ch) = &channel {
        if let Err(e) = channel_name(ch) {
            return e.into_response();
        }
        if !node.hooks.allowed(&client, ch, Access::Subscribe) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("not allowed to subscribe to {ch:?}"),
            )
            .into_response();
        }
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(limits.max_frame)
        .max_frame_size(limits.max_frame)
        .read_buffer_size(4096)
        .write_buffer_size(8192)
        .on_upgrade(move |socket| session::run(node, socket, client, channel))
}
