#!/usr/bin/env bash
# lan.sh SCENARIO DEMO [N]
#
# A private LAN of hosts, each running one DEMO process (examples/demo.rs):
# network namespaces h1..hN, each with one NIC on a bridge (10.99.0.I/24),
# all inside a fresh network and mount namespace of their own, so nothing
# reaches a real network and /run/netns stays private.
#
# Scenarios:
#   mesh N    N hosts: every demo prints messages from every other host, `ss`
#             on every host shows exactly N-1 established TCP links; then
#             every demo is stopped with SIGTERM and must exit cleanly.
#   restart   2 hosts; h2 vanishes without a word (its namespace is deleted,
#             so no FIN or RST ever reaches h1) and comes back with the same
#             key file (so node id; TCPNET_TEST_KEY_1 and TCPNET_TEST_KEY_2
#             are h1's and h2's): h1 must drop its stale link (replaced by the new
#             link, or reset when its heartbeat reaches h2's new network
#             stack), end with one link, and exchange messages with the new
#             process.
#   partition 4 hosts; h4's cable is cut (its bridge port set down): every
#             host must drop its links across the cut within the heartbeat
#             timeout (3 s by default) and say why; then the cable comes
#             back and the full mesh must come back by itself. Prints how
#             long detection and healing took.
#   hint      3 hosts on two segments that h2 routes between (h1 on one,
#             h3 on the other, h2 on both): mDNS is never routed, so h1 and
#             h3 never discover each other; both must still link, through
#             where h2 says the other listens (its list of links), to a
#             full mesh; then every demo is stopped as in `mesh`.
# Needs root (or a user namespace mapped to root) and iproute2.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: lan.sh mesh|restart|partition|hint DEMO [N]" >&2; exit 2; }
exec unshare --net --mount -- bash -c '
  set -euo pipefail
  scenario=$1 demo=$2 n=${3:-2}
  mount --make-rprivate /
  mkdir -p /run/netns && mount -t tmpfs tcpnet-lan /run/netns
  if ip -o link show | grep -qv ": lo:"; then
    echo "lan.sh: refusing: the namespace has an interface other than lo" >&2; exit 99
  fi
  out=$(mktemp -d)
  rmhost() {
    ip netns pids "h$1" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "h$1" 2>/dev/null || true
  }
  cleanup() {
    set +e
    for i in $(seq "$n"); do rmhost "$i"; done
    rm -rf "$out"
  }
  trap cleanup EXIT
  ip link set lo up
  ip link add br0 type bridge
  ip link set br0 up
  mkhost() {
    ip netns add "h$1"
    ip link add "veth$1" type veth peer name lan0 netns "h$1"
    ip link set "veth$1" master br0 up
    ip -n "h$1" link set lo up
    ip -n "h$1" addr add "10.99.0.$1/24" dev lan0
    ip -n "h$1" link set lan0 up
  }
  # run I [ENV...]: starts the demo on host I; output in $out/hI.{out,err}.
  run() {
    local i=$1; shift
    env NO_COLOR=1 "$@" ip netns exec "h$i" "$demo" lan-test >>"$out/h$i.out" 2>>"$out/h$i.err" &
    pids[$i]=$!
  }
  senders() { { grep -ho "^message from [0-9a-f]*" "$@" || true; } | sort -u | wc -l; }
  links() { ip netns exec "h$1" ss -Htn state established | wc -l; }
  # until DESCRIPTION CMD...: polls CMD every 0.1 s for up to 30 s.
  until_ok() {
    local what=$1; shift
    for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done
    for i in $(seq "$n"); do echo "--- h$i stderr"; tail -n 20 "$out/h$i.err" || true; done
    echo "lan.sh: FAILED: timed out waiting for $what" >&2; exit 1
  }
  full_mesh() {
    for i in $(seq "$n"); do
      [ "$(links "$i")" -eq $((n - 1)) ] && [ "$(senders "$out/h$i.out")" -eq $((n - 1)) ] || return 1
    done
  }
  report() {
    for i in $(seq "$n"); do
      echo "h$i: $(links "$i") links, messages from $(senders "$out/h$i.out") peers"
    done
  }
  # stop_all: SIGTERM to every demo; each must exit with 0 and log its
  # close.
  stop_all() {
    kill -TERM "${pids[@]}"
    local p rc
    for p in "${pids[@]}"; do
      rc=0
      wait "$p" || rc=$?
      [ "$rc" -eq 0 ] || { echo "lan.sh: FAILED: a demo exited with $rc" >&2; exit 1; }
    done
    if grep -L "closed" "$out"/h*.err | grep .; then
      echo "lan.sh: FAILED: a demo did not log its close" >&2; exit 1
    fi
  }
  declare -a pids

  case $scenario in
  mesh)
    for i in $(seq "$n"); do mkhost "$i"; done
    for i in $(seq "$n"); do run "$i"; done
    until_ok "a full mesh of $n" full_mesh
    report
    all=$(senders "$out"/h*.out)
    [ "$all" -eq "$n" ] || { echo "lan.sh: FAILED: $all distinct senders, expected $n" >&2; exit 1; }
    stop_all
    echo "lan.sh: ok: $n hosts, full mesh, clean shutdown"
    ;;
  hint)
    n=3
    # Two segments routed by h2: h1 on br0 (10.99.0.1/25), h3 on br1
    # (10.99.0.131/25), h2 on both (10.99.0.2, 10.99.0.130), forwarding.
    # mDNS is link-local, never routed: h1 and h3 never hear each other,
    # h2 hears both.
    mkhost 1; mkhost 2
    ip -n h1 addr flush dev lan0; ip -n h1 addr add 10.99.0.1/25 dev lan0
    ip -n h2 addr flush dev lan0; ip -n h2 addr add 10.99.0.2/25 dev lan0
    ip link add br1 type bridge
    ip link set br1 up
    ip netns add h3
    ip link add veth3 type veth peer name lan0 netns h3
    ip link set veth3 master br1 up
    ip -n h3 link set lo up
    ip -n h3 addr add 10.99.0.131/25 dev lan0
    ip -n h3 link set lan0 up
    ip link add veth2b type veth peer name lan1 netns h2
    ip link set veth2b master br1 up
    ip -n h2 addr add 10.99.0.130/25 dev lan1
    ip -n h2 link set lan1 up
    ip netns exec h2 sysctl -qw net.ipv4.ip_forward=1
    ip -n h1 route add 10.99.0.128/25 via 10.99.0.2
    ip -n h3 route add 10.99.0.0/25 via 10.99.0.130
    for i in $(seq "$n"); do run "$i"; done
    until_ok "a full mesh of $n" full_mesh
    report
    stop_all
    echo "lan.sh: ok: h1 and h3 linked, neither hearing the mDNS of the other; clean shutdown"
    ;;
  restart)
    n=2
    key1=${TCPNET_TEST_KEY_1:?set TCPNET_TEST_KEY_1 to h1 key file}
    key2=${TCPNET_TEST_KEY_2:?set TCPNET_TEST_KEY_2 to the restarting node key file}
    mkhost 1; mkhost 2
    # Heartbeats would drop the stale link too, given time; this scenario
    # is about the restart replacing it, so h1 waits long for silence.
    run 1 TCPNET_HEARTBEAT=1000,60000 TCPNET_KEY_FILE="$key1"; run 2 TCPNET_KEY_FILE="$key2"
    until_ok "the first link" full_mesh
    # h2 vanishes: its cable goes first, then its process and namespace, so
    # not a packet (no FIN, no RST) reaches h1.
    ip link del veth2
    rmhost 2
    wait "${pids[2]}" 2>/dev/null || true
    [ "$(links 1)" -eq 1 ] || { echo "lan.sh: FAILED: h1 lost its link at once" >&2; exit 1; }
    : >"$out/h1.out"
    mkhost 2
    run 2 TCPNET_KEY_FILE="$key2"
    until_ok "the new link" full_mesh
    # The stale link goes either way: replaced by the link of the new incarnation,
    # or reset by the new network stack of h2 when a heartbeat of h1 reaches it.
    until_ok "h1 to close the stale link" grep -Eq "replaced by a newer link|closed by the peer" "$out/h1.err"
    until_ok "one link on h1" test "$(links 1)" -eq 1
    report
    echo "lan.sh: ok: a restarted peer took over from its stale link"
    ;;
  partition)
    n=4
    for i in $(seq "$n"); do mkhost "$i"; done
    for i in $(seq "$n"); do run "$i"; done
    until_ok "a full mesh of $n" full_mesh
    ms() { echo $(( $(date +%s%N) / 1000000 )); }
    cut() {
      for i in 1 2 3; do [ "$(links "$i")" -eq 2 ] || return 1; done
      [ "$(links 4)" -eq 0 ]
    }
    t0=$(ms)
    ip link set veth4 down
    until_ok "the links across the cut to be dropped" cut
    t1=$(ms)
    for i in $(seq "$n"); do
      until_ok "h$i to say why" grep -q "nothing heard from the peer" "$out/h$i.err"
    done
    report
    for i in $(seq "$n"); do : >"$out/h$i.out"; done
    t2=$(ms)
    ip link set veth4 up
    until_ok "the full mesh back" full_mesh
    t3=$(ms)
    report
    echo "lan.sh: ok: cut noticed by every host in $((t1 - t0)) ms; full mesh back $((t3 - t2)) ms after the cable"
    ;;
  *) echo "lan.sh: unknown scenario $scenario" >&2; exit 2 ;;
  esac
' lan.sh "$@"
