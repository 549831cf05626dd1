#!/usr/bin/env bash
# Client-visible outage when the DATA PLANE of the VRRP master fails while
# its VRRP process keeps running: ringlb pair (SIGUSR2 stalls every shard of
# the master, its VRRP driver's liveness check must fault the instance) vs
# nginx + keepalived pair (kill -9 of the master's nginx, keepalived's
# vrrp_script must notice). See loadtest/README.md for method and results.
#
# Usage: sudo bash loadtest/dataplane.sh [RUNS]          (default RUNS=3)
# Env:   CASES="ringlb ka-i2 ka-i1"   ka-iN = keepalived, check interval N s
#        ADVERT=10ms
#        RINGLB_BIN=path (default: target-fi/release/ringlb; it must be built
#        with `--features fault-injection`, else SIGUSR2 just kills it)
#
# Lab: loadtest/lab.sh (namespaces rld<pid>-{sw,a,b,c}, 198.18.0.0/24 only,
# VIP 198.18.0.100). Node a (priority 200 ringlb / 110 keepalived) is
# master, b (100) backup; c probes VIP:8080 every ~5 ms with a fresh TCP
# connection (20 ms timeout; after a failed probe the next one follows 1 ms
# later); the failure comes 1 s + U(0, check period) later (period: 0.1 s for
# ringlb, the vrrp_script interval for keepalived). Outage = the longest gap
# between two successful probes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/lab.sh
source "$ROOT/loadtest/lab.sh"
RUNS=${1:-3}
CASES=${CASES:-"ringlb ka-i2 ka-i1"}
ADVERT=${ADVERT:-10ms}
lab_find_ringlb "$ROOT/target-fi/release" || exit 1
if [[ $CASES == *ka-* ]]; then
    for t in keepalived nginx; do command -v $t >/dev/null || { echo "$t not installed" >&2; exit 1; }; done
fi

lab_init rld
lab_up

# one CASE RUN: sets RESULT (outage ms) and NOTE; runs in this shell, so every
# PID it starts is in PIDS for the exit trap.
one() {
    local case=$1 run=$2 d=$WORK/$1-$2 node prio victim="" dur
    local -a mine=()
    mkdir -p "$d"
    NOTE=""
    for node in a b; do
        start $node "$d/be-$node.log" "$RINGLB_BIN" backend --listen 127.0.0.1:9000 --name "node$node"
        mine+=("$LAST_PID")
        if [[ $case == ringlb ]]; then
            prio=$([[ $node == a ]] && echo 200 || echo 100)
            ringlb_conf $prio "$ADVERT" >"$d/$node.toml"
            start $node "$d/rl-$node.log" "$RINGLB_BIN" run -c "$d/$node.toml"
            mine+=("$LAST_PID")
            [[ $node == a ]] && victim=$LAST_PID
        else
            prio=$([[ $node == a ]] && echo 110 || echo 100)
            nginx_conf "$d/nginx-$node"
            start $node "$d/nginx-$node.log" nginx -p "$d/nginx-$node" -c "$d/nginx-$node/nginx.conf" -g 'daemon off;'
            mine+=("$LAST_PID")
            [[ $node == a ]] && victim=$LAST_PID
            # The seed's check is `pidof nginx`; in namespaces that share the
            # host's PID namespace pidof would also see the other node's
            # nginx, so each node checks its own nginx master by pid file.
            cat >"$d/check-$node.sh" <<CHK
#!/bin/sh
pid=\$(cat "$d/nginx-$node/nginx.pid" 2>/dev/null) || exit 1
grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/\$pid/status" 2>/dev/null
CHK
            chmod 755 "$d/check-$node.sh"
            keepalived_conf $prio "$(seconds "$ADVERT")" "$d/check-$node.sh" "${case#ka-i}" -20 >"$d/ka-$node.conf"
            start $node "$d/ka-$node.log" keepalived -P -n -l -G -f "$d/ka-$node.conf" \
                -p "$d/ka-$node.pid" -r "$d/ka-$node.vrrp.pid"
            mine+=("$LAST_PID")
        fi
    done
    if ! wait_for 10 only_a || ! wait_for 5 serves 198.18.0.1 || ! wait_for 5 serves 198.18.0.2; then
        echo "run $case #$run: node a never became the only master, or a node does not serve :8080" >&3
        stop_pids "${mine[@]}"; vip_clear
        return 1
    fi
    sleep 1
    if ! only_a; then
        echo "run $case #$run: unstable before the failure" >&3
        stop_pids "${mine[@]}"; vip_clear
        return 1
    fi
    # keepalived's check interval bounds the detection: probe long enough.
    # The failure comes 1 s + a random part of the check period after the
    # probe starts, so that it lands at a random phase of keepalived's
    # script timer (which otherwise runs in lockstep with this script).
    local period=0.1 jitter
    dur=3
    if [[ $case == ka-i* ]]; then
        period=${case#ka-i}
        dur=$((2 + 3 * period))
    fi
    jitter=$(awk -v r="$RANDOM" -v p="$period" 'BEGIN { printf "%.3f", r / 32768 * p }')
    ip netns exec "$P-c" python3 "$ROOT/loadtest/failover_probe.py" "$VIP" 8080 "$dur" "${PROBE_STEP:-0.005}" "${PROBE_TIMEOUT:-0.02}" 0.001 >"$d/probe.txt" &
    local prober=$!
    PIDS+=("$prober")
    sleep 1
    sleep "$jitter"
    if [[ $case == ringlb ]]; then
        kill -USR2 "$victim"
    else
        # nginx master and its workers at once (the workers are the master's
        # children; keepalived keeps running).
        # shellcheck disable=SC2046
        kill -9 "$victim" $(children "$victim")
    fi
    wait "$prober" || true
    RESULT=$(outage_ms "$d/probe.txt") || { echo "run $case #$run: the client never recovered" >&3; stop_pids "${mine[@]}"; vip_clear; return 1; }
    only_b || NOTE="warning: b is not the only VIP holder after the failure"
    if [[ $case == ringlb ]]; then
        # Resume the shards: a must leave Fault and take the VIP back.
        kill -USR2 "$victim"
        if wait_for 5 only_a; then NOTE=${NOTE:-"a recovered the VIP after resume"}; else NOTE="$NOTE; a did NOT recover the VIP within 5 s of resume"; fi
    fi
    if [[ $case == ringlb ]]; then
        # Detection (stall -> FAULT on a) and takeover (-> MASTER on b) from
        # the logs' millisecond timestamps.
        NOTE="$(awk '
            function ms(l) { split(l, f, /[T:Z ]/); return ((f[2] * 60 + f[3]) * 60 + f[4]) * 1000 }
            /shards stalled/ && !s { s = ms($0) }
            /MASTER -> FAULT/ && !x { x = ms($0) }
            FILENAME ~ /rl-b/ && /BACKUP -> MASTER/ && !m { m = ms($0) }
            END { if (s && x) printf "stall->FAULT %d ms, ", x - s; if (x && m) printf "FAULT->b MASTER %d ms, ", m - x }' "$d/rl-a.log" "$d/rl-b.log")$NOTE"
        # A clean run has exactly one FAULT (a, after the stall) and one
        # BACKUP -> MASTER on b; anything else is printed in full.
        if [[ $(grep -c "MASTER -> FAULT\|BACKUP -> FAULT" "$d/rl-a.log") != 1 || $(grep -c "BACKUP -> MASTER" "$d/rl-b.log") != 1 ]]; then
            NOTE="$NOTE; ANOMALY, state changes:"$'\n'"$(grep -h "fault\|stall\|resumed\| -> " "$d/rl-a.log" | sed 's/^/      a /')"$'\n'"$(grep -h " -> " "$d/rl-b.log" | sed 's/^/      b /')"
        fi
    fi
    stop_pids "${mine[@]}"
    vip_clear
    sleep 0.3
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r) load=$(host_load) advert=$ADVERT ringlb=$RINGLB_BIN keepalived=$(keepalived --version 2>&1 | head -1) nginx=$(nginx -v 2>&1 | sed 's/.*\///')"
printf '%-8s %-26s %s\n' case "runs (ms)" "median (ms)"
for case in $CASES; do
    results=()
    notes=()
    for run in $(seq 1 "$RUNS"); do
        if one "$case" "$run" 2>/dev/null; then
            results+=("$RESULT")
            [[ -n $NOTE ]] && notes+=("#$run: $NOTE")
        fi
    done
    med=$(printf '%s\n' "${results[@]}" | median)
    printf '%-8s %-26s %s\n' "$case" "${results[*]}" "$med"
    for n in "${notes[@]}"; do echo "    $n"; done
done
