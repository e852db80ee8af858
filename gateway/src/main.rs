//! `tcpnet-gateway`: the gateway with its default hooks, configured by
//! flags or environment variables.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use tcpnet_gateway::{Gateway, Limits, URL_META};

/// A WebSocket cluster server on a tcpnet mesh: start it on several hosts
/// of a LAN with the same cluster name.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The tcpnet cluster name (1 to 63 letters, digits or '-').
    #[arg(long, env = "GATEWAY_CLUSTER")]
    cluster: String,
    /// The HTTP (and WebSocket) address to listen on.
    #[arg(long, env = "GATEWAY_HTTP", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// The URL other nodes and clients reach this node's HTTP server at,
    /// advertised in its tcpnet metadata (default: http:// with the HTTP
    /// address; if that is unspecified, the mesh address, else this host's
    /// first non-loopback IPv4 address; and the HTTP port).
    #[arg(long, env = "GATEWAY_URL")]
    url: Option<String>,
    /// The tcpnet listen address.
    #[arg(long, env = "GATEWAY_MESH", default_value = "0.0.0.0")]
    mesh_addr: String,
    /// The tcpnet port (0: any free port).
    #[arg(long, env = "GATEWAY_MESH_PORT", default_value_t = 0)]
    mesh_port: u16,
    /// The cluster secret: keeps strangers out of the mesh and encrypts it.
    #[arg(long, env = "GATEWAY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Keep the node's key pair, so its id, in this file (made if missing;
    /// default: a new key and id every start).
    #[arg(long, env = "GATEWAY_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
    /// A static peer (host:port of its tcpnet port), dialed even where mDNS
    /// does not reach; repeat or separate with commas.
    #[arg(long = "peer", env = "GATEWAY_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// No mDNS: find peers only through --peer and `POST /peers` (for
    /// networks where multicast is unwanted or does not pass).
    #[arg(long, env = "GATEWAY_NO_MDNS")]
    no_mdns: bool,
    /// Heartbeat interval and timeout of the mesh, in milliseconds.
    #[arg(long, env = "GATEWAY_HEARTBEAT", value_parser = heartbeat, default_value = "1000,3000")]
    heartbeat: (Duration, Duration),
    /// The API token: every HTTP API route but /health then needs
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "GATEWAY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Without an API token, allow the API's changes (publish, close,
    /// disconnect, send) to anyone who reaches the HTTP port.
    #[arg(long, env = "GATEWAY_OPEN_API")]
    open_api: bool,
    /// An origin allowed to open WebSockets (repeat or separate with
    /// commas; default: any).
    #[arg(
        long = "allowed-origin",
        env = "GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Largest text frame taken, in bytes (larger: an error frame).
    #[arg(long, env = "GATEWAY_MAX_MESSAGE", default_value_t = Limits::default().max_message)]
    max_message: usize,
    /// Largest WebSocket message read at all (larger: the connection closes).
    #[arg(long, env = "GATEWAY_MAX_FRAME", default_value_t = Limits::default().max_frame)]
    max_frame: usize,
    /// Frames queued for one client at most (full: it is disconnected).
    #[arg(long, env = "GATEWAY_QUEUE_LEN", default_value_t = Limits::default().queue_len)]
    queue_len: usize,
    /// Bytes queued for one client at most (full: it is disconnected).
    #[arg(long, env = "GATEWAY_QUEUE_BYTES", default_value_t = Limits::default().queue_bytes)]
    queue_bytes: usize,
    /// Messages a second one client may send.
    #[arg(long, env = "GATEWAY_RATE", default_value_t = Limits::default().rate)]
    rate: f64,
    /// Messages one client may send in a burst.
    #[arg(long, env = "GATEWAY_BURST", default_value_t = Limits::default().burst)]
    burst: f64,
    /// Channels one connection may subscribe.
    #[arg(long, env = "GATEWAY_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Keys one connection may watch.
    #[arg(long, env = "GATEWAY_MAX_WATCHES", default_value_t = Limits::default().max_watches)]
    max_watches: usize,
    /// Calls one connection may have under way.
    #[arg(long, env = "GATEWAY_MAX_CALLS", default_value_t = Limits::default().max_calls)]
    max_calls: usize,
    /// Longest (and default) call timeout, in milliseconds.
    #[arg(long, env = "GATEWAY_CALL_TIMEOUT_MS", default_value_t = 10_000)]
    call_timeout_ms: u64,
    /// WebSocket connections this node holds at most.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Keys the cluster view holds at most for each other gateway node.
    #[arg(long, env = "GATEWAY_MAX_NODE_KEYS", default_value_t = Limits::default().max_node_keys)]
    max_node_keys: usize,
    /// Channel members the cluster view holds at most for each other
    /// gateway node.
    #[arg(long, env = "GATEWAY_MAX_NODE_MEMBERS", default_value_t = Limits::default().max_node_members)]
    max_node_members: usize,
    /// Messages queued for each of the node's channel readers and sync
    /// streams (the tcpnet queue length).
    #[arg(long, env = "GATEWAY_MESH_QUEUE", default_value_t = 16_384)]
    mesh_queue: usize,
}

fn heartbeat(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s.split_once(',').ok_or("expected INTERVAL_MS,TIMEOUT_MS")?;
    let ms = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("{x:?}: {e}"))
    };
    Ok((ms(a)?, ms(b)?))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("tcpnet-gateway: {e}");
        std::process::exit(1);
    }
}

/// The URL this node advertises: the HTTP address, with the mesh's address
/// or else this host's first non-loopback IPv4 address when it listens on
/// every interface.
fn default_url(http: SocketAddr, mesh_addr: &str) -> String {
    let ip = if !http.ip().is_unspecified() {
        http.ip()
    } else {
        match mesh_addr.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => {
                let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip())
                    .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
                    .collect();
                ips.sort();
                ips.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]))
            }
        }
    };
    format!("http://{}", SocketAddr::new(ip, http.port()))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let http = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
    let http_addr = http.local_addr()?;
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| default_url(http_addr, &args.mesh_addr));
    // The URL is in the node's metadata from the start, so the first hello
    // on every link carries it.
    let mut settings = tcpnet::Settings::new(args.cluster.clone())
        .heartbeat(args.heartbeat.0, args.heartbeat.1)
        .queue_len(args.mesh_queue)
        .mdns(!args.no_mdns)
        .meta(URL_META, url.clone());
    if let Some(path) = &args.key_file {
        settings = settings.key_file(path);
    }
    if let Some(secret) = &args.secret {
        settings = settings.secret(secret);
    }
    for p in &args.peers {
        settings = settings.peer(p.clone());
    }
    let service = tcpnet::tcpnet(settings)?;
    let limits = Limits {
        max_message: args.max_message,
        max_frame: args.max_frame,
        queue_len: args.queue_len,
        queue_bytes: args.queue_bytes,
        rate: args.rate,
        burst: args.burst,
        max_subscriptions: args.max_subscriptions,
        max_watches: args.max_watches,
        max_calls: args.max_calls,
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        max_connections: args.max_connections,
        max_node_keys: args.max_node_keys,
        max_node_members: args.max_node_members,
        allowed_origins: args.allowed_origins.clone(),
    };
    let mut builder = Gateway::builder(service.clone(), url.clone())
        .limits(limits)
        .open_api(args.open_api);
    if let Some(t) = &args.api_token {
        builder = builder.api_token(t.clone());
    }
    let gateway = builder.build()?;
    let mesh = service.listen(args.mesh_port, &args.mesh_addr).await?;
    if args.api_token.is_none() && !args.open_api {
        tracing::warn!(
            "no API token: the HTTP API's changes are refused (set --api-token or --open-api)"
        );
    }
    // One line on stdout saying where it is, for scripts and tests.
    println!(
        "{}",
        serde_json::json!({"node": gateway.id(), "url": url, "http": http_addr.to_string(), "mesh_port": mesh.port})
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // No Nagle: a frame for a client goes out when written, not when the
    // client acknowledged the one before (which its delayed ACK holds up
    // to 40 ms).
    let http = http.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set on a connection: {e}");
        }
    });
    axum::serve(http, gateway.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    service.close().await;
    Ok(())
}
