//! `tcpnet browse`: every tcpnet node announced on the LAN, grouped by
//! cluster, and every bad record with what is wrong with it.
//!
//! Three ways to show it: a table after a short browse (`--once`); on a
//! terminal, a live table redrawn as nodes come and go; piped (or with
//! `--json`), one line per change as it happens.

pub(crate) mod view;

use std::io::Write;
use std::time::{Duration, SystemTime};

use crossterm::{cursor, terminal, QueueableCommand};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use tcpnet::SERVICE_TYPE;

use crate::args::BrowseArgs;
use crate::table::count;
use crate::term::{stdout_is_terminal, Progress};
use crate::Failure;
use view::{Change, View};

/// How often the live table is redrawn when nothing changes (its "seen"
/// times move on).
const REDRAW: Duration = Duration::from_secs(1);

/// Runs `tcpnet browse`.
pub(crate) async fn run(args: BrowseArgs) -> Result<bool, Failure> {
    if let Some(cluster) = &args.cluster {
        // The cluster name rules are tcpnet's; a service that never listens
        // checks them without touching the network.
        tcpnet::tcpnet(cluster.as_str()).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let browser = Browser::start(args.cluster.clone())?;
    let done = if args.once {
        browser.once(args.duration, args.json).await
    } else if args.json || !stdout_is_terminal() {
        browser.stream(args.json).await
    } else {
        browser.live().await
    };
    Ok(done)
}

/// An mDNS browse of the tcpnet service type and what it has seen.
pub(crate) struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    view: View,
}

impl Browser {
    /// Starts browsing for `cluster`'s nodes, or every cluster's.
    pub(crate) fn start(cluster: Option<String>) -> Result<Browser, Failure> {
        let mdns = |e: mdns_sd::Error| Failure::Error(format!("mDNS: {e}"));
        let daemon = ServiceDaemon::new().map_err(mdns)?;
        let events = daemon.browse(SERVICE_TYPE).map_err(mdns)?;
        Ok(Browser {
            daemon,
            events,
            view: View::new(cluster),
        })
    }

    /// What has been seen so far.
    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    /// Counts instances unresolved past the grace time as bad records.
    pub(crate) fn expire_unresolved(&mut self) -> Vec<Change> {
        self.view.expire_unresolved(SystemTime::now())
    }

    /// Waits for the next mDNS event and applies it; `None` when the
    /// daemon stopped.
    pub(crate) async fn next(&mut self) -> Option<Vec<Change>> {
        let event = self.events.recv_async().await.ok()?;
        let now = SystemTime::now();
        let change = match event {
            ServiceEvent::ServiceFound(_, instance) => {
                self.view.found(&instance, now);
                None
            }
            ServiceEvent::ServiceResolved(rec) => self.view.resolved(&rec, now),
            ServiceEvent::ServiceRemoved(_, instance) => self.view.removed(&instance),
            _ => None,
        };
        Some(change.into_iter().collect())
    }

    /// Browses for `how_long`, then prints the table (or JSON lines).
    async fn once(mut self, how_long: Duration, json: bool) -> bool {
        let mut progress = Progress::new();
        let deadline = tokio::time::Instant::now() + how_long;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    let nodes = self.view.nodes();
                    progress.show(&format!("browsing {SERVICE_TYPE}: {nodes} nodes seen"));
                }
                event = self.next() => if event.is_none() { break },
            }
        }
        progress.clear();
        let now = SystemTime::now();
        self.view.expire_unresolved(now);
        let mut out = std::io::stdout().lock();
        if json {
            for v in self.view.json() {
                let _ = writeln!(out, "{v}");
            }
        } else {
            for line in self.view.table(now, None) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        self.stop();
        true
    }

    /// Prints each change as it happens, until Ctrl-C or SIGTERM.
    async fn stream(mut self, json: bool) -> bool {
        let mut tick = tokio::time::interval(REDRAW);
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        loop {
            let changes = tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => self.view.expire_unresolved(SystemTime::now()),
                event = self.next() => match event {
                    Some(changes) => changes,
                    None => break,
                },
            };
            let mut out = std::io::stdout().lock();
            for c in &changes {
                let line = if json {
                    view::change_json(c).to_string()
                } else {
                    view::change_line(c)
                };
                // A closed pipe ends the browse.
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    self.stop();
                    return true;
                }
            }
        }
        self.stop();
        true
    }

    /// The live table on a terminal's alternate screen, redrawn on every
    /// change and every second, until Ctrl-C or SIGTERM; then the last
    /// table is printed on the normal screen.
    async fn live(mut self) -> bool {
        let mut out = std::io::stdout();
        let _ = out
            .queue(terminal::EnterAlternateScreen)
            .and_then(|o| o.queue(cursor::Hide))
            .and_then(|o| o.flush());
        let mut tick = tokio::time::interval(REDRAW);
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    self.expire_unresolved();
                }
                event = self.next() => if event.is_none() { break },
            }
            self.draw();
        }
        let _ = out
            .queue(cursor::Show)
            .and_then(|o| o.queue(terminal::LeaveAlternateScreen))
            .and_then(|o| o.flush());
        for line in self.view.table(SystemTime::now(), None) {
            println!("{line}");
        }
        self.stop();
        true
    }

    /// Redraws the screen: a title line, then the table cut to the
    /// terminal's size.
    fn draw(&self) {
        // A terminal that does not say its size (0 x 0) gets a usual one.
        let (cols, rows) = match terminal::size() {
            Ok((c, r)) if c > 0 && r > 0 => (c, r),
            _ => (80, 24),
        };
        let mut lines = vec![format!(
            "tcpnet browse: {} on {SERVICE_TYPE} (Ctrl-C to quit)",
            count(self.view.nodes(), "node")
        )];
        lines.push(String::new());
        lines.extend(self.view.table(SystemTime::now(), Some(cols as usize)));
        let mut out = std::io::stdout().lock();
        let _ = out.queue(cursor::MoveTo(0, 0));
        // One row stays free: a line end on the last row would scroll.
        for line in lines.iter().take((rows as usize).saturating_sub(1)) {
            // Each line erases what was left of the previous frame's.
            let _ = write!(out, "{line}\x1b[K\r\n");
        }
        let _ = write!(out, "\x1b[J");
        let _ = out.flush();
    }

    /// Stops browsing and the daemon.
    pub(crate) fn stop(self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}
