#!/usr/bin/env bash
# Idle keep-alive memory: ringlb vs nginx vs haproxy, same backend, loopback.
#
#   bash bench/memory.sh              # N=9000 ROUNDS=3
#
# For each target (a fresh process per round, rounds interleaved): start it,
# send a few requests, read its RSS ("start"); open N client connections that
# each do one GET on keep-alive and then stay idle (bench/idle_clients.py,
# one asyncio loop), read RSS again ("idle"); send one more request on 10 of
# them (must still be answered), close them all, wait SETTLE seconds and read
# RSS a last time ("closed"). RSS is the sum over the process and its
# children (nginx master + worker). KiB/conn = (idle - start) / N.
# Medians over rounds.
#
# Environment (all optional):
#   N=9000 ROUNDS=3 SETTLE=3 TARGETS="ringlb nginx haproxy" (also ringlb-tls,
#   nginx-tls: the same client over TLS 1.3, one self-signed ECDSA cert)
#   BUILD=0|1 (1: cargo build --release first)  RESULTS= (a file to append
#   the table to; default: print only)
# Needs: nginx, haproxy, openssl (tls), python3, an fd limit above N + 100
# for the client and for the proxy (ringlb: two descriptors per client
# connection are budgeted, so with a 20 000 limit max_connections per shard
# is lowered to about 9 990 — see its log line).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-9000}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-3}
TARGETS=${TARGETS:-"ringlb nginx haproxy"}
BUILD=${BUILD:-0}
RESULTS=${RESULTS:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGLB_BIN=${RINGLB_BIN:-$TARGET_DIR/release/ringlb}
BACKEND_BIN=${BACKEND_BIN:-$TARGET_DIR/release/ringlb-backend}
PY=${RINGLB_PYTHON:-python3}

log() { printf '[memory] %s\n' "$*" >&2 || true; }
die() { log "error: $*"; exit 1; }

ulimit -n 20000 2>/dev/null || true
(($(ulimit -n) > N + 100)) || die "fd limit $(ulimit -n) too low for N=$N"
if [[ $BUILD == 1 ]]; then
    (cd "$ROOT" && cargo build --release --bins) || die "build failed"
fi
[[ -x $RINGLB_BIN && -x $BACKEND_BIN ]] || die "build ringlb first (cargo build --release)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringlb-memory.XXXXXX")
declare -a PIDS=()
cleanup() {
    local pid c
    trap '' PIPE
    for pid in "${PIDS[@]}"; do
        for c in $(pgrep -P "$pid" 2>/dev/null || true); do kill -TERM "$c" 2>/dev/null || true; done
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# rss_kib PID: VmRSS of PID and its children, KiB
rss_kib() {
    local total=0 p v
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

wait_up() { # PID PORT SCHEME
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || return 1
        curl -ks -m 2 -o /dev/null "$3://127.0.0.1:$2/" && return 0
        sleep 0.1
    done
    return 1
}

if [[ " $TARGETS " == *-tls\ * ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/bench.key" \
        -out "$TMP/bench.pem" -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -days 2 \
        >"$TMP/openssl.log" 2>&1 || die "openssl failed"
fi

BACKEND_PORT=$(free_port)
"$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --body-size 6 --name bench >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_up $! "$BACKEND_PORT" http || die "backend did not start"
USER_LINE=""
[[ $EUID == 0 ]] && USER_LINE="user root;"

# start_target NAME PORT → sets TPID, SCHEME
start_target() {
    local t=$1 port=$2 conf=$TMP/$1.conf
    SCHEME=http
    [[ $t == *-tls ]] && SCHEME=https
    case $t in
    ringlb | ringlb-tls)
        cat >"$conf" <<CONF
[runtime]
workers = 1
[[listener]]
listen = "127.0.0.1:$port"
upstream = "app"
CONF
        [[ $t == ringlb-tls ]] &&
            printf '[listener.tls]\ncertificate = "%s"\nkey = "%s"\nprotocols = ["TLSv1.3"]\n' \
                "$TMP/bench.pem" "$TMP/bench.key" >>"$conf"
        printf '[upstream.app]\nkeepalive = 64\n[[upstream.app.server]]\naddress = "127.0.0.1:%s"\n' \
            "$BACKEND_PORT" >>"$conf"
        "$RINGLB_BIN" run --config "$conf" >"$TMP/$t.log" 2>&1 &
        ;;
    nginx | nginx-tls)
        local ssl="" certs=""
        [[ $t == nginx-tls ]] && ssl=" ssl" &&
            certs="ssl_certificate $TMP/bench.pem; ssl_certificate_key $TMP/bench.key; ssl_protocols TLSv1.3; ssl_session_cache shared:SSL:10m;"
        mkdir -p "$TMP/ngx"
        cat >"$conf" <<CONF
$USER_LINE
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $TMP/ngx/$t.pid;
error_log $TMP/ngx/$t-error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $TMP/ngx/body; proxy_temp_path $TMP/ngx/proxy;
    fastcgi_temp_path $TMP/ngx/fcgi; uwsgi_temp_path $TMP/ngx/uwsgi; scgi_temp_path $TMP/ngx/scgi;
    keepalive_timeout 300s;
    upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$port backlog=4096$ssl;
        $certs
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
        nginx -c "$conf" >"$TMP/$t.log" 2>&1 &
        ;;
    haproxy)
        cat >"$conf" <<CONF
global
    nbthread 1
    maxconn $((N + 200))
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$port
    maxconn $((N + 200))
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
CONF
        haproxy -f "$conf" >"$TMP/$t.log" 2>&1 &
        ;;
    *) die "unknown target $t" ;;
    esac
    TPID=$!
    PIDS+=("$TPID")
}

declare -A START=() IDLE=() CLOSED=() PER=()
for ((round = 1; round <= ROUNDS; round++)); do
    read -ra order <<<"$TARGETS"
    # rotate the order each round
    for ((k = 0; k < ${#order[@]}; k++)); do
        t=${order[$(((k + round - 1) % ${#order[@]}))]}
        port=$(free_port)
        start_target "$t" "$port"
        wait_up "$TPID" "$port" "$SCHEME" || die "$t did not start (log: $(tail -n 3 "$TMP/$t.log"))"
        for ((i = 0; i < 20; i++)); do curl -ks -o /dev/null "$SCHEME://127.0.0.1:$port/"; done
        sleep 1
        s=$(rss_kib "$TPID")
        coproc CLIENT { "$PY" "$ROOT/bench/idle_clients.py" 127.0.0.1 "$port" "$N" ${SCHEME/https/tls} 2>"$TMP/client.err"; }
        read -r -u "${CLIENT[0]}" word ok failed || die "$t: client died ($(cat "$TMP/client.err"))"
        [[ $word == ready && $failed == 0 ]] || die "$t: $failed of $N connections failed: $(cat "$TMP/client.err")"
        sleep 2
        idle=$(rss_kib "$TPID")
        echo >&"${CLIENT[1]}"
        read -r -u "${CLIENT[0]}" word late || die "$t: client died while closing"
        [[ $late == late_ok=10/10 ]] || die "$t: request after idle not answered ($late)"
        wait "$CLIENT_PID" 2>/dev/null || true
        sleep "$SETTLE"
        closed=$(rss_kib "$TPID")
        per=$(awk -v a="$s" -v b="$idle" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n }')
        log "round $round $t: start ${s} KiB, $N idle ${idle} KiB (${per} KiB/conn), closed ${closed} KiB"
        START[$t]+="$s "
        IDLE[$t]+="$idle "
        CLOSED[$t]+="$closed "
        PER[$t]+="$per "
        for c in $(pgrep -P "$TPID" 2>/dev/null || true); do kill -TERM "$c" 2>/dev/null || true; done
        kill -TERM "$TPID" 2>/dev/null || true
        wait "$TPID" 2>/dev/null || true
        sleep 0.5
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
{
    echo "| target | RSS start (KiB) | RSS with $N idle (KiB) | KiB/conn | RSS after close (KiB) | per-round KiB/conn |"
    echo "|---|---:|---:|---:|---:|---|"
    for t in $TARGETS; do
        echo "| $t | $(median <<<"${START[$t]}") | $(median <<<"${IDLE[$t]}") | **$(median <<<"${PER[$t]}")** | $(median <<<"${CLOSED[$t]}") | ${PER[$t]% } |"
    done
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg); N=$N ROUNDS=$ROUNDS; medians over rounds"
    echo "- command: \`N=$N ROUNDS=$ROUNDS TARGETS=\"$TARGETS\" bash bench/memory.sh\`"
} | tee "$TMP/table.md"
[[ -z $RESULTS ]] || cat "$TMP/table.md" >>"$RESULTS"
