#!/usr/bin/env bash
# Client-visible outage when the VRRP master crashes: ringlb pair vs
# keepalived pair (keepalived + the built-in backend on :8080), at several
# advert intervals. See loadtest/README.md for the method and results.
#
# Usage: sudo bash loadtest/failover.sh [RUNS]          (default RUNS=3)
# Env:   ADVERTS="10ms 20ms 100ms"  IMPLS="ringlb keepalived"
#        RINGLB_BIN=path (default: target/release/ringlb, else target/debug/ringlb)
#
# Lab: namespaces rlf<pid>-{sw,a,b,c} on one bridge, 198.18.0.0/24 only,
# VIP 198.18.0.100. Node a (priority 200) is master, b (100) backup, c probes
# VIP:8080 every ~5 ms with a fresh TCP connection (20 ms timeout). The crash
# is `kill -9` of a's VRRP process plus a's link down (a killed process leaves
# its VIP configured). Outage = the longest gap between two successful probes.
# Every process is started by this script and stopped by PID; the namespaces
# are deleted on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/lab.sh
source "$ROOT/loadtest/lab.sh"
RUNS=${1:-3}
ADVERTS=${ADVERTS:-"10ms 20ms 100ms"}
IMPLS=${IMPLS:-"ringlb keepalived"}
lab_find_ringlb "$ROOT/target/release" "$ROOT/target/debug" || exit 1
command -v keepalived >/dev/null || [[ $IMPLS != *keepalived* ]] || { echo "keepalived not installed" >&2; exit 1; }

# fd 3: this script's own diagnostics; the runs' stderr (bash's "Killed"
# job notices) goes to /dev/null.
lab_init rlf
lab_up

# one IMPL ADVERT RUN: sets RESULT to the outage in ms (runs in this shell, so
# every PID it starts is in PIDS for the exit trap).
one() {
    local impl=$1 advert=$2 run=$3 d=$WORK/$1-$2-$3 node prio crash_pid="" crash_extra=""
    local -a mine=()
    mkdir -p "$d"
    for node in a b; do
        prio=$([[ $node == a ]] && echo 200 || echo 100)
        if [[ $impl == ringlb ]]; then
            start $node "$d/be-$node.log" "$RINGLB_BIN" backend --listen 127.0.0.1:9000 --name "node$node"
            mine+=("$LAST_PID")
            ringlb_conf $prio "$advert" >"$d/$node.toml"
            start $node "$d/rl-$node.log" "$RINGLB_BIN" run -c "$d/$node.toml"
            mine+=("$LAST_PID")
            [[ $node == a ]] && crash_pid=$LAST_PID
        else
            start $node "$d/be-$node.log" "$RINGLB_BIN" backend --listen 0.0.0.0:8080 --name "node$node"
            mine+=("$LAST_PID")
            keepalived_conf $prio "$(seconds "$advert")" >"$d/ka-$node.conf"
            start $node "$d/ka-$node.log" keepalived -P -n -l -G -f "$d/ka-$node.conf" \
                -p "$d/ka-$node.pid" -r "$d/ka-$node.vrrp.pid"
            mine+=("$LAST_PID")
            [[ $node == a ]] && crash_pid=$LAST_PID
        fi
    done
    if ! wait_for 10 only_a; then
        echo "run $impl $advert #$run: node a never became the only master" >&3
        return 1
    fi
    sleep 1
    only_a || { echo "run $impl $advert #$run: unstable before the crash" >&3; return 1; }
    ip netns exec "$P-c" python3 "$ROOT/loadtest/failover_probe.py" "$VIP" 8080 3 "${PROBE_STEP:-0.005}" "${PROBE_TIMEOUT:-0.02}" >"$d/probe.txt" &
    local prober=$!
    PIDS+=("$prober")
    sleep 1
    [[ -f $d/ka-a.vrrp.pid ]] && crash_extra=$(cat "$d/ka-a.vrrp.pid" 2>/dev/null || true)
    # keepalived: kill its VRRP child first; if the parent died first, the
    # child would get SIGTERM (parent-death signal) and resign gracefully.
    [[ -n $crash_extra ]] && kill -9 "$crash_extra" 2>/dev/null || true
    kill -9 "$crash_pid"
    ip -n "$P-a" link set eth0 down
    wait "$prober" || true
    RESULT=$(outage_ms "$d/probe.txt")
    has_vip b || echo "run $impl $advert #$run: warning: b does not hold the VIP" >&3
    stop_pids "${mine[@]}"
    ip -n "$P-a" link set eth0 up
    vip_clear
    sleep 0.3
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r) ringlb=$RINGLB_BIN keepalived=$(keepalived --version 2>&1 | head -1)"
printf '%-11s %-7s %-22s %s\n' impl advert "runs (ms)" "median (ms)"
for impl in $IMPLS; do
    for advert in $ADVERTS; do
        results=()
        for run in $(seq 1 "$RUNS"); do
            if one "$impl" "$advert" "$run" 2>/dev/null; then results+=("$RESULT"); fi
        done
        med=$(printf '%s\n' "${results[@]}" | median)
        printf '%-11s %-7s %-22s %s\n' "$impl" "$advert" "${results[*]}" "$med"
    done
done
