#!/usr/bin/env bash
# wgpy demo: two "hosts" (network namespaces) joined by a veth cable, a wgpy tunnel between them, ping and a
# 10 MB transfer through it, `wgpy show`, then a clean teardown.  Needs root; takes well under a minute.
#
#   ┌──────── ns A ────────┐                      ┌──────── ns B ────────┐
#   │ wgda… 10.88.0.1/24 ══╪════ WireGuard/UDP ═══╪══ 10.88.0.2/24 wgdb… │
#   │ vd…a  10.200.0.1/24 ─┼────── veth ──────────┼─ 10.200.0.2/24 vd…b  │
#   └──────────────────────┘                      └──────────────────────┘
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root: it creates namespaces and TUN devices" >&2; exit 1; }

bash scripts/setup.sh

WGPY="$REPO/.venv/bin/wgpy"
PY="$REPO/.venv/bin/python"
XFER="$REPO/tests/tools/xfer.py"
ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS_A="wgpydemo-$ID-a" NS_B="wgpydemo-$ID-b"
IF_A="wgda$ID" IF_B="wgdb$ID"
VETH_A="vd${ID}a" VETH_B="vd${ID}b"
PORT_A=51820 PORT_B=51821
NBYTES=$((10 * 1000 * 1000))
WORK=$(mktemp -d /tmp/wgpy-demo.XXXXXX)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for pair in "$NS_A:$IF_A" "$NS_B:$IF_B"; do
        local ns=${pair%%:*} ifc=${pair##*:}
        [[ -e /var/run/netns/$ns ]] || continue
        if [[ -S /var/run/wireguard/$ifc.sock ]] || in_ns "$ns" ip link show dev "$ifc" >/dev/null 2>&1; then
            timeout 15 ip netns exec "$ns" "$WGPY" down "$ifc" >/dev/null 2>&1
        fi
        local pids
        pids=$(ip netns pids "$ns" 2>/dev/null)
        if [[ -n $pids ]]; then
            kill -TERM $pids 2>/dev/null; sleep 1
            pids=$(ip netns pids "$ns" 2>/dev/null)
            [[ -z $pids ]] || kill -KILL $pids 2>/dev/null
        fi
        ip netns del "$ns" 2>/dev/null
        rm -f "/var/run/wireguard/$ifc.sock"
    done
    rm -rf "$WORK"
    if ((rc != 0)); then echo "demo.sh: FAILED (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "two namespaces joined by a veth pair"
ip netns add "$NS_A"
ip netns add "$NS_B"
in_ns "$NS_A" ip link set lo up
in_ns "$NS_B" ip link set lo up
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
in_ns "$NS_A" ip addr add 10.200.0.1/24 dev "$VETH_A"
in_ns "$NS_B" ip addr add 10.200.0.2/24 dev "$VETH_B"
in_ns "$NS_A" ip link set "$VETH_A" up
in_ns "$NS_B" ip link set "$VETH_B" up
echo "$NS_A ($VETH_A 10.200.0.1)  <->  $NS_B ($VETH_B 10.200.0.2)"

step "keys (wgpy genkey / wgpy pubkey)"
umask 077
"$WGPY" genkey >"$WORK/a.key"
"$WGPY" genkey >"$WORK/b.key"
PUB_A=$("$WGPY" pubkey <"$WORK/a.key")
PUB_B=$("$WGPY" pubkey <"$WORK/b.key")
echo "A: $PUB_A"
echo "B: $PUB_B"

step "configs"
cat >"$WORK/$IF_A.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/a.key")
ListenPort = $PORT_A
Address = 10.88.0.1/24

[Peer]
PublicKey = $PUB_B
Endpoint = 10.200.0.2:$PORT_B
AllowedIPs = 10.88.0.2/32
EOF
cat >"$WORK/$IF_B.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/b.key")
ListenPort = $PORT_B
Address = 10.88.0.2/24

[Peer]
PublicKey = $PUB_A
Endpoint = 10.200.0.1:$PORT_A
AllowedIPs = 10.88.0.1/32
EOF
sed 's/^PrivateKey = .*/PrivateKey = (hidden)/' "$WORK/$IF_A.conf"

step "wgpy up in both namespaces"
timeout 30 ip netns exec "$NS_A" "$WGPY" up "$WORK/$IF_A.conf"
timeout 30 ip netns exec "$NS_B" "$WGPY" up "$WORK/$IF_B.conf"
in_ns "$NS_A" ip -br addr show dev "$IF_A"
in_ns "$NS_B" ip -br addr show dev "$IF_B"

step "ping through the tunnel, both ways"
timeout 20 ip netns exec "$NS_A" ping -c 3 -i 0.2 -W 2 10.88.0.2
timeout 20 ip netns exec "$NS_B" ping -c 3 -i 0.2 -W 2 10.88.0.1

step "10 MB over TCP through the tunnel (A -> B), SHA-256 checked end to end"
timeout 40 ip netns exec "$NS_B" "$PY" "$XFER" serve 5201 --timeout 35 >"$WORK/server.json" &
SERVER=$!
for _ in $(seq 50); do grep -q listening "$WORK/server.json" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$WORK/server.json" || { echo "transfer server did not start" >&2; exit 1; }
timeout 40 ip netns exec "$NS_A" "$PY" "$XFER" send 10.88.0.2 5201 "$NBYTES" --timeout 35 >"$WORK/client.json"
wait "$SERVER"
"$PY" - "$WORK/server.json" "$WORK/client.json" "$NBYTES" <<'EOF'
import json, sys
server = json.loads(open(sys.argv[1]).read().splitlines()[-1])
client = json.loads(open(sys.argv[2]).read().splitlines()[-1])
want = int(sys.argv[3])
ok = server.get("sha256") == client.get("sha256") and server.get("bytes") == client.get("bytes") == want
rate = want / max(client["seconds"], 1e-6) / 1e6
print(f"sent     {client['bytes']} bytes  sha256 {client['sha256']}")
print(f"received {server['bytes']} bytes  sha256 {server['sha256']}")
print(f"{'OK' if ok else 'MISMATCH'}: {client['seconds']:.2f} s, {rate:.1f} MB/s")
sys.exit(0 if ok else 1)
EOF

step "wgpy show"
in_ns "$NS_A" "$WGPY" show "$IF_A"
echo
in_ns "$NS_B" "$WGPY" show "$IF_B"

step "wgpy down and remove the namespaces"
timeout 20 ip netns exec "$NS_A" "$WGPY" down "$IF_A"
timeout 20 ip netns exec "$NS_B" "$WGPY" down "$IF_B"
for pair in "$NS_A:$IF_A" "$NS_B:$IF_B"; do
    ns=${pair%%:*} ifc=${pair##*:}
    if in_ns "$ns" ip link show dev "$ifc" >/dev/null 2>&1; then echo "$ifc still exists after down" >&2; exit 1; fi
done
ip netns del "$NS_A"
ip netns del "$NS_B"
echo "done: tunnel removed, namespaces deleted"
