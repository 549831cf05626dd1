#!/usr/bin/env bash
# Slow clients: N connections trickling request heads (or bodies) one byte a
# second while a normal client (wrk -t1 -c8) measures latency; the same run
# against nginx for comparison. Figures: loadtest/README.md ("Slow clients").
#
# Usage: bash loadtest/slow_clients.sh [MODE...]     (default: heads bodies)
# Env:   N=9800 (slow connections: under a 20 000 fd limit ringlb's fd budget
#        allows 9 839 connections on one shard, two fds each in the worst
#        case; the normal client needs a few more)  NBODIES=$N
#        WRK_SECS=20  IMPLS="ringlb nginx"  RINGLB_BIN=target/release/ringlb
#        IMPLS may name "ringlb-stream": ringlb with request_buffering = false
#        (every body streamed upstream as it arrives).
#
# Everything on loopback; each process is started here, bounded (wrk -d,
# slow_clients.py DURATION) and stopped by PID on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(heads bodies)
N=${N:-9800}
NBODIES=${NBODIES:-$N}
WRK_SECS=${WRK_SECS:-20}
IMPLS=${IMPLS:-"ringlb nginx"}
BIN=${RINGLB_BIN:-$ROOT/target/release/ringlb}
for t in wrk python3; do command -v $t >/dev/null || { echo "$t not installed" >&2; exit 1; }; done
[[ $IMPLS != *nginx* ]] || [ -x /usr/sbin/nginx ] || { echo "nginx not installed" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)
ulimit -n 20000

TAG=slowclients
# shellcheck source=lib_local.sh
source "$ROOT/loadtest/lib_local.sh"

BE=$(free_port)
"$BIN" backend --listen "127.0.0.1:$BE" --name be >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BE"

start_proxy() { # IMPL PORT -> PROXY_PID
    local impl=$1 port=$2 d=$WORK/$1
    mkdir -p "$d"
    if [[ $impl == ringlb* ]]; then
        local buffering=true
        [[ $impl == ringlb-stream ]] && buffering=false
        cat >"$d/ringlb.toml" <<CONF
[runtime]
workers = 1
[http]
request_buffering = $buffering
client_max_body_size = 0
max_connections = 19000
client_header_timeout = "60s"
client_body_timeout = "60s"
[[listener]]
listen = "127.0.0.1:$port"
upstream = "app"
backlog = 4096
[upstream.app]
keepalive = 64
[[upstream.app.server]]
address = "127.0.0.1:$BE"
CONF
        "$BIN" run -c "$d/ringlb.toml" >"$d/log" 2>&1 &
    else
        cat >"$d/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/error.log crit;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
    client_header_timeout 60s;
    client_body_timeout 60s;
    client_max_body_size 0;
    upstream app { server 127.0.0.1:$BE; keepalive 64; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
        /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -g 'daemon off;' >"$d/log" 2>&1 &
    fi
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$port"
}

# wrk_line FILE: "p50 p99 req/s errors"
wrk_line() {
    awk '/^ +50%/{p50=$2} /^ +99%/{p99=$2} /^Requests\/sec/{rps=$2}
         /Non-2xx/{n=$NF} /Socket errors/{gsub(",","");c=$4;r=$6;w=$8;t=$10}
         END{printf "p50 %s  p99 %s  %s req/s  errors: non-2xx %d, connect %d, read %d, write %d, timeout %d", p50, p99, rps, n, c, r, w, t}' "$1"
}
proc_line() { # PID: fds and RSS of the proxy (nginx: the worker)
    local pid=$1 w
    w=$(pgrep -P "$pid" | head -1 || true)
    [ -n "$w" ] && pid=$w
    printf "fds %s  rss %s MB" "$(ls "/proc/$pid/fd" | wc -l)" "$(awk '/VmRSS/{printf "%d", $2/1024}' "/proc/$pid/status")"
}

echo "slow clients: $(date -u +%FT%TZ), $(nproc) cores, $(uptime)"
for mode in "${MODES[@]}"; do
    n=$N
    [[ $mode == bodies ]] && n=$NBODIES
    for impl in $IMPLS; do
        port=$(free_port)
        start_proxy "$impl" "$port"
        d=$WORK/$impl
        wrk -t1 -c8 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$port/" >"$d/wrk-base.txt" 2>&1
        python3 "$ROOT/loadtest/slow_clients.py" 127.0.0.1 "$port" "$n" "$mode" $((WRK_SECS + 90)) 1 >"$d/slow.txt" 2>&1 &
        slow=$!
        PIDS+=("$slow")
        for _ in $(seq 1 120); do grep -q '^connected' "$d/slow.txt" && break; sleep 1; done
        connected=$(grep '^connected' "$d/slow.txt" || echo "connected ? (not within 120 s)")
        sleep 3
        during=$(proc_line "$PROXY_PID")
        wrk -t1 -c8 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$port/" >"$d/wrk-slow.txt" 2>&1
        still=$(tail -1 "$d/slow.txt")
        kill "$slow" 2>/dev/null || true
        wait "$slow" 2>/dev/null || true
        kill -9 "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        printf '%-7s %-6s N=%-5s %s\n' "$impl" "$mode" "$n" "$connected"
        printf '    normal client alone:         %s\n' "$(wrk_line "$d/wrk-base.txt")"
        printf '    with %5s slow %-6s:      %s\n' "$n" "$mode" "$(wrk_line "$d/wrk-slow.txt")"
        printf '    proxy with slow clients: %s; slow clients at the end: %s; load: %s\n' "$during" "$still" "$(cut -d' ' -f1-3 /proc/loadavg)"
        grep -o 'serving at most [0-9]* connections per shard' "$d/log" | sed 's/^/    fd budget: /' || true
    done
done
