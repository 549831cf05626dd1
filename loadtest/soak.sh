#!/usr/bin/env bash
# "No spurious VRRP transitions at 10 ms adverts while both nodes run at full
# data-plane load": a two-node pair, each node's proxy under its own wrk load
# (from the client namespace to the node's own address, not only the VIP),
# for DURATION seconds per round; counts VRRP state transitions on both nodes
# and reports the advert gaps the backup saw. See loadtest/README.md.
#
# Usage: bash loadtest/soak.sh [DURATION] [ROUNDS]     (default 600 s, 1 round)
# Env:   IMPLS="ringlb keepalived"  ADVERT=10ms  CONNS=64
#        RINGLB_BIN=path (default target-fi/release/ringlb, else target/release/ringlb)
#
# ringlb pair: `ringlb run` + built-in backend (127.0.0.1:9000) per node,
# `[admin] listen = "127.0.0.1:9901"` in each namespace; transitions and the
# backup's advert-gap histogram (measured by ringlb when it receives an
# advert) come from `GET /stats` after `POST /reset` at the round's start,
# cross-checked against the state-change lines in the logs.
# keepalived pair: keepalived 2.2.7 (VRRPv3, with the seed's nginx check,
# interval 2, weight -20) + nginx on :8080 proxying to the built-in backend;
# transitions from the "Entering ... STATE" log lines.
# Both: tcpdump in b's namespace records the master's adverts as they arrive
# on b's interface (kernel timestamps), for the on-the-wire gap distribution.
#
# Lab: loadtest/lab.sh (namespaces rls<pid>-*, 198.18.0.0/24 only); a =
# 198.18.0.1 (priority 200 / 110), b = 198.18.0.2 (100), client c runs two
# `wrk -t1 -cCONNS -dDURATION` (one per node). Every process is bounded
# (wrk -d, timeout, tcpdump -c) and stopped by PID; namespaces deleted on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/lab.sh
source "$ROOT/loadtest/lab.sh"
DURATION=${1:-600}
ROUNDS=${2:-1}
IMPLS=${IMPLS:-"ringlb keepalived"}
ADVERT=${ADVERT:-10ms}
CONNS=${CONNS:-64}
lab_find_ringlb "$ROOT/target-fi/release" "$ROOT/target/release" || exit 1
for t in wrk tcpdump curl; do command -v $t >/dev/null || { echo "$t not installed" >&2; exit 1; }; done
if [[ $IMPLS == *keepalived* ]]; then
    for t in keepalived nginx; do command -v $t >/dev/null || { echo "$t not installed" >&2; exit 1; }; done
fi

lab_init rls
lab_up

admin() { ip netns exec "$P-$1" curl -s -m 2 "http://127.0.0.1:9901$2"; }
# reset NODE: a fresh /stats window (POST only; a refused reset stops the run
# instead of letting the next round report the windows of both).
reset() { ip netns exec "$P-$1" curl -sf -m 2 -X POST "http://127.0.0.1:9901/reset" >/dev/null || { echo "POST /reset on $1 failed" >&2; exit 1; }; }

# state_lines IMPL NODE DIR: state-change lines in NODE's log so far.
state_lines() {
    local f pat
    if [[ $1 == ringlb ]]; then f=$3/rl-$2.log pat='vrrp VI_1: [A-Z]* -> '; else f=$3/ka-$2.log pat='Entering [A-Z]* STATE'; fi
    grep -c "$pat" "$f" 2>/dev/null || true
}

# up IMPL DIR: start both nodes; sets NODE_PIDS.
up() {
    local impl=$1 d=$2 node prio
    NODE_PIDS=()
    for node in a b; do
        start $node "$d/be-$node.log" "$RINGLB_BIN" backend --listen 127.0.0.1:9000 --name "node$node"
        NODE_PIDS+=("$LAST_PID")
        if [[ $impl == ringlb ]]; then
            prio=$([[ $node == a ]] && echo 200 || echo 100)
            { ringlb_conf $prio "$ADVERT"; printf '[admin]\nlisten = "127.0.0.1:9901"\n'; } >"$d/$node.toml"
            start $node "$d/rl-$node.log" "$RINGLB_BIN" run -c "$d/$node.toml"
        else
            prio=$([[ $node == a ]] && echo 110 || echo 100)
            nginx_conf "$d/nginx-$node"
            start $node "$d/nginx-$node.log" nginx -p "$d/nginx-$node" -c "$d/nginx-$node/nginx.conf" -g 'daemon off;'
            NODE_PIDS+=("$LAST_PID")
            keepalived_for_nginx $node "$d" $prio
        fi
        NODE_PIDS+=("$LAST_PID")
    done
    wait_for 10 only_a && wait_for 5 serves 198.18.0.1 && wait_for 5 serves 198.18.0.2
}

# ringlb_summary NODE JSON_FILE: "role=R trans=N sent=S rx=R gap=p50/p99/p99.9/max(n)"
ringlb_summary() {
    python3 - "$2" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
i = v["vrrp"]["instances"][0] if isinstance(v.get("vrrp"), dict) else v["vrrp_instances"][0]
g = i["advert_gap"]
p = g["percentiles_us"]
ms = lambda us: "%.1f" % (us / 1000.0)
print("role=%s trans=%d sent=%d rx=%d gap_ms=%s/%s/%s/%s(n=%d)" % (
    i["role"], sum(i["transitions"].values()), i["adverts_sent"], i["adverts_received"],
    ms(p["50"]), ms(p["99"]), ms(p["99.9"]), ms(g["max_us"]), g["count"]))
PY
}

wrk_summary() { # FILE: "req/s p99 errors"
    awk '/Requests\/sec/ { r = $2 } / 99% / { p = $2 } /Non-2xx|Socket errors/ { e = e " " $0 }
         END { printf "%s req/s p99 %s%s", r, p, (e ? " |" e : "") }' "$1"
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r) nproc=$(nproc) load=$(host_load) advert=$ADVERT duration=${DURATION}s rounds=$ROUNDS conns=$CONNS ringlb=$RINGLB_BIN"
for impl in $IMPLS; do
    d=$WORK/$impl
    mkdir -p "$d"
    if ! up "$impl" "$d"; then
        echo "$impl: the pair did not come up (a the only master, both serving)" >&3
        stop_pids "${NODE_PIDS[@]}"; vip_clear
        continue
    fi
    sleep 1
    for r in $(seq 1 "$ROUNDS"); do
        rd=$d/round-$r
        mkdir -p "$rd"
        la=$(state_lines "$impl" a "$d")
        lb=$(state_lines "$impl" b "$d")
        if [[ $impl == ringlb ]]; then reset a; reset b; fi
        start b "$rd/adverts.txt" timeout $((DURATION + 30)) tcpdump -i eth0 -nn -tt -l \
            -c $((DURATION * 200 + 1000)) "ip proto 112 and src host 198.18.0.1"
        td=$LAST_PID
        sleep 0.5
        start c "$rd/wrk-a.txt" timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency http://198.18.0.1:8080/
        w1=$LAST_PID
        start c "$rd/wrk-b.txt" timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency http://198.18.0.2:8080/
        w2=$LAST_PID
        wait "$w1" "$w2" || true
        load=$(host_load)
        kill -TERM "$td" 2>/dev/null || true
        wait "$td" 2>/dev/null || true
        ta=$(($(state_lines "$impl" a "$d") - la))
        tb=$(($(state_lines "$impl" b "$d") - lb))
        holder=$(only_a && echo a || { only_b && echo b || echo "a+b/none"; })
        echo "$impl round $r/$ROUNDS (${DURATION}s, load after: $load): transitions in logs a=$ta b=$tb, VIP holder $holder"
        if [[ $impl == ringlb ]]; then
            admin a /stats >"$rd/stats-a.json"
            admin b /stats >"$rd/stats-b.json"
            echo "  a /stats: $(ringlb_summary a "$rd/stats-a.json")"
            echo "  b /stats: $(ringlb_summary b "$rd/stats-b.json")"
        fi
        echo "  adverts from a on b's wire: $(python3 "$ROOT/loadtest/gaps.py" <"$rd/adverts.txt")"
        echo "  wrk a: $(wrk_summary "$rd/wrk-a.txt")"
        echo "  wrk b: $(wrk_summary "$rd/wrk-b.txt")"
    done
    stop_pids "${NODE_PIDS[@]}"
    vip_clear
    sleep 0.3
done
