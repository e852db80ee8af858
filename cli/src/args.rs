//! The command line: subcommands, their options, and the examples `--help`
//! shows.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The `tcpnet` command.
#[derive(Debug, Parser)]
#[command(
    name = "tcpnet",
    version,
    about = "See, join and check tcpnet clusters on this LAN",
    long_about = "See, join and check tcpnet clusters on this LAN.\n\n\
        tcpnet nodes find each other by mDNS (service type _tcpnet._tcp.local.) and keep \
        one TCP link to every other node of their cluster. This command browses those \
        announcements, joins a cluster as a node, and diagnoses why nodes do not see \
        each other.",
    after_help = "Examples:\n  \
        tcpnet browse                  every node on the LAN, live\n  \
        tcpnet browse my-cluster --once --json\n  \
        tcpnet join my-cluster         lines typed go to every node\n  \
        tcpnet members my-cluster      who is in the cluster, as a member sees it\n  \
        tcpnet ping my-cluster         round trips to every node: min, p50, p99\n  \
        tcpnet doctor my-cluster       why don't my nodes see each other?\n  \
        tcpnet completions bash > /etc/bash_completion.d/tcpnet"
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the tcpnet nodes announced on the LAN, grouped by cluster.
    #[command(after_help = "Examples:\n  \
        tcpnet browse                       live table on a terminal (Ctrl-C ends it)\n  \
        tcpnet browse my-cluster --once     one table after a 3 s browse\n  \
        tcpnet browse --once --for 10s      a longer browse\n  \
        tcpnet browse --json | jq .         one JSON object a line, as nodes come and go\n\n\
        On a terminal the table redraws as nodes come and go. Piped, each change prints \
        as one line (or one JSON object with --json). Bad records are listed too, with \
        what is wrong with them.")]
    Browse(BrowseArgs),

    /// Join a cluster as a node: lines on stdin go out, messages received print.
    #[command(after_help = "Examples:\n  \
        tcpnet join my-cluster                     each line to every node\n  \
        tcpnet join my-cluster --topic news        lines published to a topic, and its messages\n  \
        tcpnet join my-cluster --to 3f9c...        lines to one node\n  \
        tcpnet join my-cluster --raw               raw link frames (what examples/demo sends)\n  \
        tcpnet join my-cluster --secret-file ~/.tcpnet-secret\n\n\
        Each message received prints as `<sender id>: <text>`. Before reading stdin the \
        node waits (up to --wait) until discovery has settled (linked to every node it found, then nothing new for 1 s) \
        (with --topic: and until another node subscribes to the topic). \
        It ends on end of input or Ctrl-C: the lines already read are delivered, the \
        mDNS goodbye goes out and every link is closed. The exit status is 1 if a line \
        could not be sent (no node linked, or --to a node that is not linked).")]
    Join(JoinArgs),

    /// Measure round trips to a cluster's nodes, like ping.
    #[command(after_help = "Examples:\n  \
        tcpnet ping my-cluster                  every node, 10 rounds\n  \
        tcpnet ping my-cluster 3f9c... 8b21...  these nodes only\n  \
        tcpnet ping my-cluster -c 100 -i 50ms   more rounds, closer together\n  \
        tcpnet ping my-cluster --json           one JSON object a node\n\n\
        The command's node joins, waits (up to --wait) until discovery has settled \
        (linked to every node it found, then nothing new for 1 s) (or to the ones named), then pings every node once a round, \
        all at once, each over its own link, and prints min, p50, p99 and max per node \
        with the losses and errors. A ping waits behind what is queued on its link, as \
        a message would. On a terminal a counter shows the rounds; piped, only the \
        summary prints. Ctrl-C ends early with the summary. The exit status is 1 when \
        a node never answered.")]
    Ping(PingArgs),

    /// Join a cluster for a moment and print its membership view.
    #[command(after_help = "Examples:\n  \
        tcpnet members my-cluster                 a table of the members\n  \
        tcpnet members my-cluster --json | jq .   one JSON object a member\n  \
        tcpnet members my-cluster --wait 10s      a slow or large cluster\n\n\
        The command's node joins, waits (up to --wait) until discovery has settled \
        (linked to every node it found, then nothing new for 1 s), prints what it sees of each member (state, addresses, \
        metadata, round-trip time, link age, start time) and leaves with a goodbye. \
        The exit status is 1 when no other node was linked.")]
    Members(MembersArgs),

    /// Check this host for what stops tcpnet nodes finding each other.
    #[command(after_help = "Examples:\n  \
        tcpnet doctor                 interfaces, mDNS port, own announcement, clock\n  \
        tcpnet doctor my-cluster      also: its nodes answer, dial, link, clocks in step?\n  \
        tcpnet doctor my-cluster --secret-file ~/.tcpnet-secret\n\n\
        Prints each check with the fix for every problem found. Exit status: 0 when \
        healthy, 1 when a problem was found (hints do not count).")]
    Doctor(DoctorArgs),

    /// Print a shell completion script to stdout.
    #[command(after_help = "Examples:\n  \
        tcpnet completions bash > ~/.local/share/bash-completion/completions/tcpnet\n  \
        tcpnet completions zsh > ~/.zfunc/_tcpnet\n  \
        tcpnet completions fish > ~/.config/fish/completions/tcpnet.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `tcpnet browse`.
#[derive(Debug, Args)]
pub(crate) struct BrowseArgs {
    /// Only this cluster (default: every cluster).
    pub(crate) cluster: Option<String>,
    /// Print once after a short browse, then exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// How long `--once` browses.
    #[arg(long = "for", value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub(crate) duration: Duration,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How a command that joins a cluster runs its node.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The cluster to join.
    pub(crate) cluster: String,
    /// Read the cluster secret from this file (its first line). Not taken on
    /// the command line, where every user of the host sees it (ps,
    /// /proc/PID/cmdline) and shell history keeps it.
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Keep this node's key pair, so its id, in this file (made, readable
    /// by its owner only, if missing; default: a new key and id every run).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// The address to listen on: 0.0.0.0 (every IPv4 interface), :: (every
    /// interface), or one address of this host.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) listen: IpAddr,
    /// The TCP port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub(crate) port: u16,
    /// A static peer, HOST:PORT, dialed even where multicast does not reach
    /// (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub(crate) peers: Vec<String>,
    /// How long to wait for the cluster's nodes to link before starting.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub(crate) wait: Duration,
}

/// `tcpnet join`.
#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// The node to run.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Publish lines to this topic, and print its messages.
    #[arg(long, conflicts_with_all = ["to", "raw"])]
    pub(crate) topic: Option<String>,
    /// Send lines to this node only (its id).
    #[arg(long, value_name = "ID", conflicts_with = "raw")]
    pub(crate) to: Option<String>,
    /// Send each line as a raw link frame, and print the raw frames received,
    /// instead of messages.
    #[arg(long)]
    pub(crate) raw: bool,
}

/// `tcpnet members`.
#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    /// The node to run.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// One JSON object a member instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `tcpnet ping`.
#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    /// The node to run.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Only these nodes (their ids; default: every node linked).
    #[arg(value_name = "ID")]
    pub(crate) ids: Vec<String>,
    /// How many rounds.
    #[arg(short, long, value_name = "COUNT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) count: u32,
    /// The time from one round's start to the next's.
    #[arg(short, long, value_name = "DURATION", default_value = "200ms", value_parser = duration)]
    pub(crate) interval: Duration,
    /// One JSON object a node instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `tcpnet doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Also check this cluster's nodes: do they answer, can they be dialed,
    /// do they link, are their clocks in step with this host's?
    pub(crate) cluster: Option<String>,
    /// The cluster's secret, from this file (its first line), to link with
    /// its nodes (see `tcpnet help join`).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub(crate) secret_file: Option<PathBuf>,
    /// How long to wait for mDNS answers.
    #[arg(long = "for", value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub(crate) duration: Duration,
}

/// Parses `3s`, `500ms`, `2m` or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: want e.g. 3s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(duration("3h").unwrap_err().contains("unknown unit"));
        assert!(duration("soon").unwrap_err().contains("not a duration"));
    }
}
