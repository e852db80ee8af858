#!/usr/bin/env bash
# lan.sh N DEMO
#
# A private LAN of N hosts, each running one DEMO process (examples/demo.rs):
# network namespaces h1..hN, each with one NIC on a bridge (10.99.0.I/24),
# all inside a fresh network and mount namespace of their own, so nothing
# reaches a real network and /run/netns stays private. Checks that
#   - every host's demo prints messages from every other host, and
#   - `ss` on every host shows exactly N-1 established TCP links,
# then stops every demo with SIGTERM and checks each exited cleanly.
# Needs root (or a user namespace mapped to root) and iproute2.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: lan.sh N DEMO" >&2; exit 2; }
n=$1 demo=$2
exec unshare --net --mount -- bash -c '
  set -euo pipefail
  n=$1 demo=$2
  mount --make-rprivate /
  mkdir -p /run/netns && mount -t tmpfs tcpnet-lan /run/netns
  if ip -o link show | grep -qv ": lo:"; then
    echo "lan.sh: refusing: the namespace has an interface other than lo" >&2; exit 99
  fi
  out=$(mktemp -d)
  cleanup() {
    set +e
    for i in $(seq "$n"); do
      ip netns pids "h$i" 2>/dev/null | xargs -r kill -9 2>/dev/null
      ip netns del "h$i" 2>/dev/null
    done
    rm -rf "$out"
  }
  trap cleanup EXIT
  ip link set lo up
  ip link add br0 type bridge
  ip link set br0 up
  for i in $(seq "$n"); do
    ip netns add "h$i"
    ip link add "veth$i" type veth peer name lan0 netns "h$i"
    ip link set "veth$i" master br0 up
    ip -n "h$i" link set lo up
    ip -n "h$i" addr add "10.99.0.$i/24" dev lan0
    ip -n "h$i" link set lan0 up
  done

  senders() { { grep -ho "^message from [0-9a-f]*" "$@" || true; } | sort -u | wc -l; }
  links() { ip netns exec "h$1" ss -Htn state established | wc -l; }

  pids=()
  for i in $(seq "$n"); do
    NO_COLOR=1 ip netns exec "h$i" "$demo" lan-test >"$out/h$i.out" 2>"$out/h$i.err" &
    pids+=($!)
  done

  # Poll with a deadline until the mesh is whole (not a fixed sleep).
  ok=0
  for _ in $(seq 300); do
    ok=1
    for i in $(seq "$n"); do
      links=$(links "$i")
      peers=$(senders "$out/h$i.out")
      if [ "$links" -ne $((n - 1)) ] || [ "$peers" -ne $((n - 1)) ]; then ok=0; fi
    done
    [ $ok = 1 ] && break
    sleep 0.1
  done
  for i in $(seq "$n"); do
    echo "h$i: $(links "$i") links, messages from $(senders "$out/h$i.out") peers"
  done
  if [ $ok != 1 ]; then
    for i in $(seq "$n"); do echo "--- h$i stderr"; tail -n 20 "$out/h$i.err"; done
    echo "lan.sh: FAILED: the mesh did not form" >&2; exit 1
  fi
  # Every id seen is a node: N distinct ids in all.
  all=$(senders "$out"/h*.out)
  [ "$all" -eq "$n" ] || { echo "lan.sh: FAILED: $all distinct senders, expected $n" >&2; exit 1; }

  kill -TERM "${pids[@]}"
  for p in "${pids[@]}"; do
    wait "$p" || { echo "lan.sh: FAILED: a demo exited with $?" >&2; exit 1; }
  done
  if grep -L "closed" "$out"/h*.err | grep .; then
    echo "lan.sh: FAILED: a demo did not log its close" >&2; exit 1
  fi
  echo "lan.sh: ok: $n hosts, full mesh, clean shutdown"
' lan.sh "$n" "$demo"
