//! Running a tcpnet node for the commands that join a cluster: settings
//! from the command line, the secret from its file, and the wait until the
//! cluster's nodes are linked.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tcpnet::{NodeId, Service, Settings};
use tokio::time::{timeout_at, Instant};

use crate::args::NodeArgs;
use crate::term::Progress;
use crate::Failure;

/// Reads the cluster secret: the file's first line, without its line end.
///
/// Warns on stderr when the file can be read by other users. The secret is
/// never taken on the command line: every user of the host can read a
/// process's arguments (`ps`, `/proc/PID/cmdline`), and shell history keeps
/// them.
pub(crate) fn read_secret(path: &Path) -> Result<String, Failure> {
    let bad = |why: String| Failure::Usage(format!("--secret-file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let secret = text.lines().next().unwrap_or_default().to_string();
    if secret.is_empty() {
        return Err(bad("the first line is empty".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                eprintln!(
                    "tcpnet: warning: {} can be read by other users (mode {:o}); \
                     chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
    Ok(secret)
}

/// The settings a command line asks for.
pub(crate) fn settings(args: &NodeArgs) -> Result<Settings, Failure> {
    let mut settings = Settings::new(args.cluster.as_str());
    if let Some(path) = &args.key_file {
        settings = settings.key_file(path);
    }
    if let Some(path) = &args.secret_file {
        settings = settings.secret(read_secret(path)?);
    }
    for peer in &args.peers {
        settings = settings.peer(peer.as_str());
    }
    Ok(settings)
}

/// The node a command line asks for, not started yet.
pub(crate) fn join(args: &NodeArgs) -> Result<Service, Failure> {
    tcpnet::tcpnet(settings(args)?).map_err(|e| Failure::Usage(e.to_string()))
}

/// Starts the node listening and waits (up to `--wait`) until discovery has
/// settled ([`Service::ready`]: the answers to its first mDNS query, the
/// dials of the nodes that found it, then every node found linked or
/// failed), and then until `ready` holds and nothing new was linked or
/// discovered for [`QUIET`]. Finding no node within the wait is not an
/// error here: the command decides.
pub(crate) async fn start(
    service: &Service,
    args: &NodeArgs,
    ready: impl Fn(&Service) -> bool,
) -> Result<(), Failure> {
    let mut progress = Progress::new();
    progress.show(&format!("joining {}", args.cluster));
    let mut linked = service.on_connection();
    service
        .listen(args.port, &args.listen.to_string())
        .await
        .map_err(|e| Failure::Error(e.to_string()))?;
    let deadline = Instant::now() + args.wait;
    let settled = service.ready();
    tokio::pin!(settled);
    let mut settled_done = false;
    let mut seen = mesh_state(service);
    let mut changed = Instant::now();
    loop {
        let now_seen = mesh_state(service);
        if now_seen != seen {
            seen = now_seen;
            changed = Instant::now();
        }
        let (links, known) = &seen;
        progress.show(&format!(
            "joining {}: linked to {} of {} nodes seen",
            args.cluster,
            links.len(),
            known.len().max(links.len())
        ));
        let now = Instant::now();
        if settled_done && ready(service) && now >= changed + QUIET {
            break;
        }
        if now >= deadline {
            break;
        }
        // Redraw on every new link, and every few milliseconds for nodes
        // discovered and for `ready` (they have no event on the service).
        let step = (now + Duration::from_millis(50)).min(deadline);
        tokio::select! {
            // A closed service fails `ready`: nothing more to wait for.
            r = &mut settled, if !settled_done => {
                settled_done = true;
                if r.is_err() {
                    break;
                }
            }
            _ = timeout_at(step, linked.next()) => {}
        }
    }
    progress.clear();
    Ok(())
}

/// How long nothing new must be linked or discovered after discovery
/// settled before a command goes on: on a starved host, answers to the
/// first mDNS query and the dials of the nodes that saw this one can come
/// later than [`Service::ready`] waits for, one after the other.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// The ids this node is linked to, and the ids it discovered over mDNS.
fn mesh_state(service: &Service) -> (HashSet<NodeId>, HashSet<NodeId>) {
    let links = service
        .connections()
        .iter()
        .map(|c| c.peer_id().clone())
        .collect();
    let known = service.advertised().into_iter().collect();
    (links, known)
}
