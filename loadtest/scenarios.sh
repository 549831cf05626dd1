#!/usr/bin/env bash
# HA scenarios, ringlb and nginx + keepalived in the same namespace lab, under
# open-loop load; a summary per run, plots, and a machine-readable last line.
#
# Usage:  sudo bash loadtest/scenarios.sh [SCENARIO...]     (default: all)
#   scenarios: steady crash proxy-dies planned planned-keepalive backend-down reload flap
# Env:    STACKS="ringlb keepalived"  ADVERT=10ms  RATE=1000
#         RESULTS=loadtest/results (where reports, plots and summary go)
#         LOGS=/tmp/ringlb-scenarios-logs (failed runs' process logs)
#         LATE_LIMIT_MS=20 (client lateness above which timing is "too loaded")
#         AUTOGROUP_NICE=-10 (raise the lab's session above other sessions'
#         builds on a shared host; see below)
#         MACHINE_NOTE="..." (written into results/README.md)
#         RINGLB_BIN=path (default target-fi/release/ringlb: the proxy-dies
#         scenario needs `--features fault-injection` for SIGUSR2)
# Build:  CARGO_TARGET_DIR=target-fi cargo build --release --features fault-injection
#
# Lab (lab.sh): namespaces rls<pid>-{sw,a,b,c}, bridge, a=198.18.0.1 (master),
# b=198.18.0.2, client c=198.18.0.3, VIP 198.18.0.100:8080. Each node runs
# three built-in backends on its loopback (a-1 :9000, a-2 :9001, a-3 :9002;
# the config lists :9000 and :9001, the reload scenario switches to :9001 and
# :9002) and its proxy + VRRP: `ringlb run` (priority 200 / 100), or nginx +
# keepalived 2.2.7 (priority 110 / 100, the seed's `vrrp_script check_nginx {
# interval 2 weight -20 }`). The client runs `ringlb loadgen`: RATE requests/s
# on fresh connections, 200 ms timeout, latency from the intended send time;
# faults come from its event thread at fixed offsets. planned-keepalive
# sends the same load from 20 keep-alive clients (`--keep-alive 20`: each
# reuses its connection, no retries), as application servers' client pools
# do. A crash takes a's link
# down first (from then on a neither serves nor advertises), then kill -9s
# its VRRP process (a killed process leaves its VIP configured). tcpdump on the bridge
# records every VRRP advert (two masters = their adverts interleave).
#
# Between runs the script waits for the host to settle (no task in D state,
# at most 10 s; it says so when that took longer than a second). Every run
# records the host's load average and how late the generator itself was
# (verdict.py: "HOST TOO LOADED" when the client was > LATE_LIMIT_MS late,
# default 20 ms: the timing of that run is not meaningful).
#
# The last line is `SUMMARY {json}`: every run's RESULT; all_pass (every
# check and every ringlb target met; the exit status is 0 only then);
# failed (runs that did not pass); host_too_loaded (runs whose timing is
# not meaningful).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/lab.sh
source "$ROOT/loadtest/lab.sh"
ALL="steady crash proxy-dies planned planned-keepalive backend-down reload flap"
SCENARIOS=${*:-$ALL}
STACKS=${STACKS:-"ringlb keepalived"}
ADVERT=${ADVERT:-10ms}
RATE=${RATE:-1000}
RESULTS=${RESULTS:-$ROOT/loadtest/results}
lab_find_ringlb "$ROOT/target-fi/release" || exit 1
for t in tcpdump python3; do command -v $t >/dev/null || { echo "$t not installed (apt-get install $t)" >&2; exit 1; }; done
if [[ $STACKS == *keepalived* ]]; then
    for t in keepalived nginx; do command -v $t >/dev/null || { echo "$t not installed (apt-get install $t)" >&2; exit 1; }; done
fi
for s in $SCENARIOS; do [[ " $ALL " == *" $s "* ]] || { echo "unknown scenario $s (one of: $ALL)" >&2; exit 1; }; done
mkdir -p "$RESULTS"
# Logs of failed runs (processes' output, adverts, the generator's summary).
LOGS=${LOGS:-${TMPDIR:-/tmp}/ringlb-scenarios-logs}
rm -rf "$LOGS" && mkdir -p "$LOGS"
ADVERT_MS=$(awk -v s="$(seconds "$ADVERT")" 'BEGIN { print s * 1000 }')

# The kernel shares CPU time between sessions (autogroups) first and by
# nice only within one, so other sessions' builds, even at nice 19, each
# get as much CPU as this whole lab. AUTOGROUP_NICE=-10 raises the lab's
# session above them (it is written to /proc/self/autogroup; recorded in
# the header). Unset: the lab competes like any other session.
autogroup_note=""
if [[ -n ${AUTOGROUP_NICE:-} && -z ${_LAB_OWN_SESSION:-} ]]; then
    # A session (and autogroup) of its own, gone when the run ends.
    _LAB_OWN_SESSION=1 exec setsid --wait bash "${BASH_SOURCE[0]}" "$@"
fi
if [[ -n ${AUTOGROUP_NICE:-} && -w /proc/self/autogroup ]]; then
    echo "$AUTOGROUP_NICE" >/proc/self/autogroup
    autogroup_note="; lab session at autogroup nice $AUTOGROUP_NICE"
fi

lab_init rls
lab_up

# Node setup per stack; sets VICTIM (a's proxy / VRRP process), KA_VRRP
# (keepalived's VRRP child pid file) and NGINX_A (a's nginx master).
setup() { # STACK DIR
    local stack=$1 d=$2 node prio i
    MINE=()
    for node in a b; do
        for i in 1 2 3; do
            # The backends on epoll, like the origin servers a proxy
            # usually fronts: a kill -9 then resets their connections at
            # once. On io_uring the kernel closes a killed process's
            # sockets only when its ring's exit work has run, which on a
            # busy host took ~90 ms: requests sent to the dead backend in
            # that time hung past the client's timeout.
            start $node "$d/be-$node$i.log" env RINGLB_DRIVER=epoll "$RINGLB_BIN" backend --listen "127.0.0.1:$((8999 + i))" --name "$node-$i"
            MINE+=("$LAST_PID")
        done
        if [[ $stack == ringlb ]]; then
            prio=$([[ $node == a ]] && echo 200 || echo 100)
            ringlb_conf $prio "$ADVERT" 127.0.0.1:9000 127.0.0.1:9001 >"$d/$node.toml"
            ringlb_conf $prio "$ADVERT" 127.0.0.1:9001 127.0.0.1:9002 >"$d/$node.reload.toml"
            start $node "$d/rl-$node.log" "$RINGLB_BIN" run -c "$d/$node.toml"
            MINE+=("$LAST_PID")
            [[ $node == a ]] && VICTIM=$LAST_PID
        else
            prio=$([[ $node == a ]] && echo 110 || echo 100)
            # The reload config: same paths (pid file!), other servers.
            nginx_conf "$d/nginx-$node" 127.0.0.1:9001 127.0.0.1:9002
            mv "$d/nginx-$node/nginx.conf" "$d/nginx-$node/nginx.reload.conf"
            nginx_conf "$d/nginx-$node" 127.0.0.1:9000 127.0.0.1:9001
            start $node "$d/nginx-$node.log" nginx -p "$d/nginx-$node" -c "$d/nginx-$node/nginx.conf" -g 'daemon off;'
            MINE+=("$LAST_PID")
            [[ $node == a ]] && NGINX_A=$LAST_PID
            keepalived_for_nginx $node "$d" $prio
            MINE+=("$LAST_PID")
            [[ $node == a ]] && VICTIM=$LAST_PID KA_VRRP=$d/ka-a.vrrp.pid
        fi
    done
}

# The fault of SCENARIO for STACK as --event arguments (EVENTS) and the run
# length (DURATION).
events() { # SCENARIO STACK DIR
    local sc=$1 stack=$2 d=$3 nsa=$P-a
    EVENTS=()
    LOADGEN_EXTRA=()
    DURATION=6s
    case $sc in
        steady) ;;
        crash)
            if [[ $stack == ringlb ]]; then
                EVENTS+=(--event "2s:a crashes:ip -n $nsa link set eth0 down; kill -9 $VICTIM")
            else
                # keepalived's VRRP child first, so it can't resign gracefully.
                EVENTS+=(--event "2s:a crashes:ip -n $nsa link set eth0 down; kill -9 \$(cat $KA_VRRP) $VICTIM")
            fi ;;
        proxy-dies)
            DURATION=7s
            if [[ $stack == ringlb ]]; then
                EVENTS+=(--event "2s:a's data plane stalls:kill -USR2 $VICTIM")
            else
                EVENTS+=(--event "2s:a's nginx dies:kill -9 $NGINX_A $(children "$NGINX_A" | tr '\n' ' ')")
            fi ;;
        planned)
            EVENTS+=(--event "2s:a stops (SIGTERM):kill -TERM $VICTIM") ;;
        planned-keepalive)
            LOADGEN_EXTRA=(--keep-alive 20)
            EVENTS+=(--event "2s:a stops (SIGTERM):kill -TERM $VICTIM") ;;
        backend-down)
            EVENTS+=(--event "2s:backend a-2 dies:kill -9 $BACKEND_A2") ;;
        reload)
            if [[ $stack == ringlb ]]; then
                EVENTS+=(--event "2s:reload (a-1,a-2 -> a-2,a-3):cp $d/a.reload.toml $d/a.toml && kill -HUP $VICTIM")
            else
                EVENTS+=(--event "2s:reload (a-1,a-2 -> a-2,a-3):cp $d/nginx-a/nginx.reload.conf $d/nginx-a/nginx.conf && kill -HUP $NGINX_A")
            fi ;;
        flap)
            DURATION=14s
            local t
            for t in 2 6 10; do
                EVENTS+=(--event "${t}s:a link down:ip -n $nsa link set eth0 down")
                EVENTS+=(--event "$((t + 2))s:a link up:ip -n $nsa link set eth0 up")
            done ;;
    esac
}

one() { # SCENARIO STACK -> RESULT_LINE, VERDICT_LINE; status 1 on failure
    local sc=$1 stack=$2 d=$WORK/$1-$2 dump load_start
    mkdir -p "$d"
    settle 10
    load_start=$(host_load)
    setup "$stack" "$d"
    # a's second backend (for backend-down): the 2nd PID started on a.
    BACKEND_A2=${MINE[1]}
    if ! wait_for 15 only_a || ! wait_for 5 serves 198.18.0.1 || ! wait_for 5 serves 198.18.0.2; then
        echo "$sc $stack: node a never became the only master, or a node does not serve :8080" >&3
        stop_pids "${MINE[@]}"; vip_clear
        return 1
    fi
    # Warm-up: 1 s of the same load, not recorded, so the measured run
    # starts with every process's code paged in and its pools warm (a
    # freshly started process on a busy host otherwise pays its page-ins
    # inside the measurement).
    ip netns exec "$P-c" "$RINGLB_BIN" loadgen --target "$VIP:8080" --rate "$RATE" --duration 1s \
        --timeout 200ms --label warm-up >"$d/warm-up.txt" 2>&1 || true
    sleep 0.3
    only_a || { echo "$sc $stack: unstable before the fault" >&3; stop_pids "${MINE[@]}"; vip_clear; return 1; }
    events "$sc" "$stack" "$d"
    dump=$d/adverts.pcap
    start sw "$d/tcpdump.log" tcpdump -i br0 -n -U -w "$dump" 'ip proto 112'
    local tcpd=$LAST_PID
    sleep 0.3
    local label
    label=$([[ $stack == ringlb ]] && echo "ringlb" || echo "nginx + keepalived")
    ip netns exec "$P-c" "$RINGLB_BIN" loadgen --target "$VIP:8080" --rate "$RATE" --duration "$DURATION" \
        --timeout 200ms --label "$label" --json "$RESULTS/$sc-$stack.json" "${LOADGEN_EXTRA[@]}" "${EVENTS[@]}" >"$d/loadgen.txt" 2>&1 || true
    sleep 0.2
    stop_pids "$tcpd"
    tcpdump -r "$dump" -tt -n 2>/dev/null >"$d/adverts.txt" || true
    local new=""
    [[ $sc == reload ]] && new=a-3
    {
        echo "## $sc, $label (advert $ADVERT, $RATE req/s)"
        grep -v '^RESULT ' "$d/loadgen.txt" || true
    } >"$RESULTS/$sc-$stack.txt"
    local rc=0
    # ringlb says when the kernel kept its shards waiting for a CPU (its
    # data-plane tracking: "starved of CPU"): the host, not the proxy.
    local starved
    starved=$(cat "$d"/rl-*.log 2>/dev/null | grep -c 'starved of CPU' || true)
    STARVED=$starved LOAD_START=$load_start LOAD_END=$(host_load) python3 "$ROOT/loadtest/verdict.py" "$sc" "$stack" "$ADVERT_MS" "$RESULTS/$sc-$stack.json" "$d/adverts.txt" "$new" >"$d/verdict.txt" || rc=$?
    cat "$d/verdict.txt" >>"$RESULTS/$sc-$stack.txt"
    VERDICT_LINE=$(head -1 "$d/verdict.txt")
    RESULT_LINE=$(tail -1 "$d/verdict.txt")
    if ((rc != 0)); then
        # Keep what a failed run's processes said (the work dir goes at exit).
        rm -rf "${LOGS:?}/$sc-$stack"
        cp -r "$d" "$LOGS/$sc-$stack" 2>/dev/null || true
        [[ -z ${KEEP_LOGS:-} ]] || tail -n 20 "$d"/*.log >&3 || true
    fi
    stop_pids "${MINE[@]}"
    ip -n "$P-a" link set eth0 up
    vip_clear
    sleep 0.3
    return $rc
}

header="$(date -u +%Y-%m-%dT%H:%MZ) host $(uname -n) $(nproc) cores, kernel $(uname -r), load $(host_load) at start; advert $ADVERT, $RATE req/s; ringlb $RINGLB_BIN; $(keepalived --version 2>&1 | head -1); nginx $(nginx -v 2>&1 | sed 's/.*\///')$autogroup_note"
echo "# $header"
results=()
all_pass=true
for sc in $SCENARIOS; do
    for stack in $STACKS; do
        if one "$sc" "$stack" 2>/dev/null; then :; else all_pass=false; fi
        if [[ -n ${RESULT_LINE:-} ]]; then
            echo "$VERDICT_LINE"
            results+=("${RESULT_LINE#RESULT }")
        else
            echo "$sc $stack FAIL (did not run: see above)"
            results+=("{\"scenario\": \"$sc\", \"stack\": \"$stack\", \"pass\": false}")
        fi
        RESULT_LINE=""
    done
    # One plot per scenario: every stack on the same axes.
    reports=()
    for stack in $STACKS; do [[ -f $RESULTS/$sc-$stack.json ]] && reports+=("$RESULTS/$sc-$stack.json"); done
    if ((${#reports[@]})); then
        "$RINGLB_BIN" plot --out "$RESULTS/$sc.svg" --title "$sc: ringlb vs nginx + keepalived (advert $ADVERT, $RATE req/s open loop)" "${reports[@]}" >/dev/null
    fi
done
end_load=$(host_load)
echo "# load at the end: $end_load"
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
name = lambda r: r["scenario"] + "/" + r["stack"]
failed = [name(r) for r in runs if not r["pass"]]
loaded = [name(r) for r in runs if not r.get("timing_valid", True)]
print("SUMMARY " + json.dumps({"header": sys.argv[1], "end_load": sys.argv[2], "all_pass": not failed and bool(runs),
                               "failed": failed, "host_too_loaded": loaded, "runs": runs}, sort_keys=True))
' "$header" "$end_load" >"$RESULTS/summary.json.line"
python3 "$ROOT/loadtest/results_md.py" "$RESULTS/summary.json.line" "$RESULTS/README.md" "${MACHINE_NOTE:-}" "$end_load"
echo "results: $RESULTS/README.md"
python3 -c '
import json, sys
d = json.loads(open(sys.argv[1]).read().split(" ", 1)[1])
if d["all_pass"]:
    print("# ALL PASS: every scenario for both stacks, every ringlb target met")
else:
    print("# FAILED: " + " ".join(d["failed"]))
if d["failed"]:
    print("# logs of the failed runs: " + sys.argv[2])
if d["host_too_loaded"]:
    print("# host too loaded for the timing to mean anything in: " + " ".join(d["host_too_loaded"])
          + " (the client itself fell behind its schedule; rerun on a quiet host)")
' "$RESULTS/summary.json.line" "$LOGS"
cat "$RESULTS/summary.json.line"
$all_pass
