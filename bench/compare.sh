#!/usr/bin/env bash
# Side-by-side HTTP/1.1 proxy benchmark: ringlb vs nginx vs haproxy, plus a
# plain TCP relay (haproxy mode tcp) as the practical ceiling.
#
#   bash bench/compare.sh            # ROUNDS=3 DURATION=5, the default shape
#   SHAPES="default c1000 close 16k 1m" bash bench/compare.sh   # several shapes
#
# Shapes (SHAPES runs this script once per named shape, building only once):
#   default  64 keep-alive clients, 6-byte bodies
#   c1000    1000 keep-alive clients
#   close    64 clients sending `Connection: close` (a TCP connection per request)
#   16k      64 clients, 16 KiB bodies
#   1m       16 clients, 1 MiB bodies
# Every row also shows CPU time per request of the proxy (all its threads and
# child processes) and of the backend behind it, from /proc/PID/task/*/schedstat
# deltas over each wrk run, the p99 of every round, and TCP connects/s
# (/proc/net/snmp ActiveOpens: host-wide, so wrk's and anyone else's count).
# The log line of every round adds what a p99 jump needs to be explained:
# p99.9 and max, the share of requests per latency band (bench/tail.lua: a
# second hump means starved connections), accept-queue overflows and SYN
# retransmits (host-wide: a dropped SYN costs its client 1 s), the CPU time
# everything else took from SUT_CPU and SUT_CPU's ksoftirqd (per request),
# and how long the proxy waited for the CPU.
#
# Layout (ARCHITECTURE.md, "Measured"): wrk -t1 -cCONNS --latency pinned on WRK_CPU; the
# backend (ringlb-backend) and every proxy under test pinned on SUT_CPU, one
# worker/thread each, each proxy on its own loopback port. Rounds are
# interleaved (the order rotates each round) and the table shows medians over
# rounds; "vs nginx" columns are medians of per-round ratios, because runs on
# shared machines vary ±20% and only ratios measured side by side compare.
#
# Environment (all optional):
#   ROUNDS=3 DURATION=5 CONNS=64 BODY_SIZE=6 CLOSE=0 WARMUP=1
#   (CLOSE=1: wrk sends `Connection: close`; SHAPE names the row set in RESULTS)
#   TARGETS="ringlb nginx haproxy relay"  (also: ringlb-nohist, ringlb-alog,
#                      ringlb-defer (DEFER_TASKRUN ring), ringlb-base (RINGLB_BASE_BIN=…,
#                      e.g. a wrapper script that sets RINGLB_RING_ENTRIES=256 and
#                      execs the same binary: a ring-size A/B in one run;
#                      ringlb-base-tls: that build over HTTPS, like ringlb-tls),
#                      and the HTTPS shape ringlb-tls nginx-tls haproxy-tls: the same ECDSA
#                      P-256 certificate for all, TLS 1.3, nginx with
#                      ssl_session_cache; wrk over https keep-alive; their
#                      "vs nginx" columns compare with nginx-tls);
#                      haproxy-tls: haproxy with "ssl crt" on the same
#                      certificate, ssl-min-ver TLSv1.3, alpn http/1.1
#                      ("vs haproxy" of -tls targets compares with it)
#   WRK_CPU=0 SUT_CPU=1 CONTROL_CPU=0
#   BUILD=auto|1|0     auto: cargo build --release if cargo is present (failure
#                      is not fatal: targets whose binary is missing are skipped)
#   RESULTS=bench/RESULTS.md   (RESULTS= to not write one)
#   KEEP_TMP=1         keep the temp dir (configs, logs, raw wrk output)
# Exit status: 0 if at least nginx or ringlb produced numbers, 1 otherwise.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

# ---- several shapes: one run of this script per shape ------------------------
if [[ -n ${SHAPES:-} ]]; then
    build=${BUILD:-auto}
    status=0
    for shape in $SHAPES; do
        case $shape in
        default) vars=(CONNS=64 BODY_SIZE=6 CLOSE=0) ;;
        c1000) vars=(CONNS=1000 BODY_SIZE=6 CLOSE=0) ;;
        close) vars=(CONNS=64 BODY_SIZE=6 CLOSE=1) ;;
        16k) vars=(CONNS=64 BODY_SIZE=16384 CLOSE=0) ;;
        1m) vars=(CONNS=16 BODY_SIZE=1048576 CLOSE=0) ;;
        *) printf '[compare] error: unknown shape %s\n' "$shape" >&2; exit 1 ;;
        esac
        printf '[compare] === shape %s: %s ===\n' "$shape" "${vars[*]}" >&2
        env -u SHAPES "${vars[@]}" SHAPE="$shape" BUILD="$build" bash "${BASH_SOURCE[0]}" || status=1
        build=0
    done
    exit $status
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
BODY_SIZE=${BODY_SIZE:-6}
CLOSE=${CLOSE:-0}
SHAPE=${SHAPE:-custom}
WARMUP=${WARMUP:-1}
TARGETS=${TARGETS:-"ringlb nginx haproxy relay"}
WRK_CPU=${WRK_CPU:-0}
SUT_CPU=${SUT_CPU:-1}
CONTROL_CPU=${CONTROL_CPU:-0}
BUILD=${BUILD:-auto}
RESULTS=${RESULTS-$BENCH/RESULTS.md}
KEEP_TMP=${KEEP_TMP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGLB_BIN=${RINGLB_BIN:-$TARGET_DIR/release/ringlb}
BACKEND_BIN=${BACKEND_BIN:-$TARGET_DIR/release/ringlb-backend}

log() { printf '[compare] %s\n' "$*" >&2 || true; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringlb-bench.XXXXXX")
declare -a PIDS=()

cleanup() {
    local pid i
    # stderr may be a closed pipe (`compare.sh | head`): never die mid-cleanup.
    trap '' PIPE
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            # Children first (nginx workers), then the process itself.
            for c in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$c" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'log "aborted: line $LINENO: $BASH_COMMAND"' ERR
# Fatal signals must go through `exit` so the EXIT trap stops what we started.
trap 'exit 130' INT TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || die "$tool not found (bash tests/run.sh installs it)"
done
NCPU=$(nproc)
((WRK_CPU < NCPU && SUT_CPU < NCPU)) || die "need CPUs $WRK_CPU and $SUT_CPU; this host has $NCPU"

# ---- build -----------------------------------------------------------------
if [[ $BUILD == 1 || ($BUILD == auto && -n $(command -v cargo || true)) ]]; then
    log "cargo build --release"
    if ! (cd "$ROOT" && cargo build --release --bins >"$TMP/build.log" 2>&1); then
        log "build failed (see below); continuing with whatever binaries exist"
        tail -n 15 "$TMP/build.log" >&2
    fi
fi
[[ -x $BACKEND_BIN ]] || die "backend binary $BACKEND_BIN missing (cargo build --release)"

# ---- helpers -----------------------------------------------------------------
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 30000))
            [[ -z $(ss -Htln "sport = :$p") ]] && { echo "$p"; return; }
        done
    fi
}

# render TEMPLATE OUT PORT
render() {
    sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$3|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@SUT_CPU@|$SUT_CPU|g" -e "s|@CONTROL_CPU@|$CONTROL_CPU|g" \
        -e "s|@NGINX_CPU_MASK@|$NGINX_CPU_MASK|g" -e "s|@NGINX_USER@|$NGINX_USER|g" \
        "$1" >"$2"
}

# start NAME CMD...: run pinned on SUT_CPU, output to $TMP/NAME.log; sets LAST_PID
start() {
    local name=$1
    shift
    taskset -c "$SUT_CPU" "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_http NAME PID PORT [SCHEME]: 200 with an X-Backend header within 10 s
wait_http() {
    local name=$1 pid=$2 port=$3 scheme=${4:-http} i headers
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during startup"
            return 1
        fi
        if headers=$(curl -k -s -m 2 -D - -o /dev/null "$scheme://127.0.0.1:$port/" 2>/dev/null) &&
            grep -q '^HTTP/1.[01] 200' <<<"$headers" && grep -qi '^x-backend:' <<<"$headers"; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not answer 200 with X-Backend on port $port within 10 s"
    return 1
}

# wrk output → "rps p50_ms p99_ms errors"
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END {
            if (rps == "") exit 1
            printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err
        }'
}

# cpu_ns PID: on-CPU nanoseconds of every thread of PID and of its children
# (nginx's worker), from schedstat (finer than utime+stime's clock ticks).
cpu_ns() {
    local p pids
    pids="$1 $(pgrep -P "$1" 2>/dev/null | tr '\n' ' ' || true)"
    for p in $pids; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
        awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# sched_stats PID: "RUN_NS WAIT_NS VOLUNTARY INVOLUNTARY" summed over every
# thread of PID and of its children: on-CPU time, time spent runnable but
# waiting for the CPU, and context switches of either kind.
sched_stats() {
    local p pids
    pids="$1 $(pgrep -P "$1" 2>/dev/null | tr '\n' ' ' || true)"
    for p in $pids; do
        for t in /proc/"$p"/task/*; do
            cat "$t/schedstat" "$t/status" 2>/dev/null || true
        done
    done | awk 'NF == 3 && $1 ~ /^[0-9]+$/ { run += $1; wait += $2 }
        /^voluntary_ctxt_switches/ { vol += $2 } /^nonvoluntary_ctxt_switches/ { inv += $2 }
        END { printf "%.0f %.0f %d %d\n", run, wait, vol, inv }'
}

# busy_ns CPU: nanoseconds CPU has spent busy (not idle/iowait) so far, from
# /proc/stat (USER_HZ ticks). Minus what the proxy and the backend ran, it is
# what everything else took from the CPU under test during a round.
busy_ns() {
    awk -v c="cpu$1" -v hz="$(getconf CLK_TCK)" '$1 == c { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8) * 1e9 / hz }' /proc/stat
}

# softirq_ns: on-CPU nanoseconds of SUT_CPU's ksoftirqd so far. Loopback
# network work the sender's context did not finish (softirqs deferred)
# runs there, charged to nobody's process: a proxy that causes it costs
# that much more CPU per request than its own column shows.
KSOFTIRQD=$(pgrep -x "ksoftirqd/$SUT_CPU" 2>/dev/null | head -n 1 || true)
softirq_ns() { awk '{ print $1 }' /proc/"${KSOFTIRQD:-0}"/schedstat 2>/dev/null || echo 0; }

# TCP active opens (connect()s) host-wide so far: upstream churn shows here.
active_opens() { awk '$1 == "Tcp:" && $6 ~ /^[0-9]+$/ { print $6 }' /proc/net/snmp; }

# Host-wide TcpExt counters "ListenOverflows TCPSynRetrans": a full accept
# queue drops a SYN and the client retries it only after 1 s, which lands in
# the latency tail of whoever was connecting.
syn_trouble() {
    awk '$1 == "TcpExt:" { if (!h) { for (i = 2; i <= NF; i++) k[$i] = i; h = 1 }
        else print $k["ListenOverflows"], $k["TCPSynRetrans"] }' /proc/net/netstat
}

median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" -v n="$NCPU" 'BEGIN { exit !(l > n / 2) }'; then
    log "warning: load average $LOAD_BEFORE on $NCPU CPUs before starting: expect noisy numbers"
fi

# ---- the HTTPS shape's certificate (one ECDSA P-256 self-signed leaf) --------
if [[ " $TARGETS " == *-tls\ * ]]; then
    command -v openssl >/dev/null || die "openssl not found (needed for the -tls targets)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/bench.key" \
        -out "$TMP/bench.pem" -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -days 2 \
        >"$TMP/openssl.log" 2>&1 || die "openssl failed: $(tail -n 2 "$TMP/openssl.log")"
fi

# ---- start everything --------------------------------------------------------
NGINX_CPU_MASK=1$(printf '0%.0s' $(seq 1 "$SUT_CPU"))
NGINX_USER=""
[[ $EUID == 0 ]] && NGINX_USER="user root;"
BACKEND_PORT=$(free_port)
start backend "$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --body-size "$BODY_SIZE" --name bench
BACKEND_PID=$LAST_PID
wait_http backend "$BACKEND_PID" "$BACKEND_PORT" || die "backend did not start"
log "backend on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"

declare -A PORT=() PID=() VERSION=() SCHEME=()
declare -a READY=() SKIPPED=()

skip() {
    SKIPPED+=("$1: $2")
    log "skipping $1: $2"
}

for t in $TARGETS; do
    port=$(free_port)
    case $t in
    ringlb | ringlb-nohist | ringlb-alog | ringlb-tls | ringlb-defer | ringlb-base | ringlb-base-tls)
        # Variants: ringlb-nohist = latency histograms off (their cost);
        # ringlb-alog = access log on (combined format, to a file in $TMP);
        # ringlb-defer = the ring with DEFER_TASKRUN (RINGLB_DRIVER=uring-defer);
        # ringlb-base = another build, $RINGLB_BASE_BIN (before/after in one run).
        bin=$RINGLB_BIN
        [[ $t == ringlb-base* ]] && bin=${RINGLB_BASE_BIN:-}
        [[ -x $bin ]] || { skip "$t" "binary '$bin' missing"; continue; }
        render "$BENCH/ringlb.toml.in" "$TMP/$t.toml" "$port"
        case $t in
        ringlb-nohist) printf '\n[log]\nlatency_histograms = false\n' >>"$TMP/$t.toml" ;;
        ringlb-alog) printf '\n[log]\naccess_log = "%s"\n' "$TMP/access.log" >>"$TMP/$t.toml" ;;
        ringlb-tls | ringlb-base-tls)
            # Applies to the last [[listener]] (the only one).
            printf '\n[listener.tls]\ncertificate = "%s"\nkey = "%s"\nprotocols = ["TLSv1.3"]\n' \
                "$TMP/bench.pem" "$TMP/bench.key" >>"$TMP/$t.toml"
            SCHEME[$t]=https
            ;;
        esac
        if ! "$bin" check -c "$TMP/$t.toml" >"$TMP/$t-check.log" 2>&1; then
            skip "$t" "ringlb check failed: $(head -n 3 "$TMP/$t-check.log" | tr '\n' ' ')"
            continue
        fi
        VERSION[$t]=$("$bin" --version 2>/dev/null | awk 'NR == 1' || true)
        driver=${RINGLB_DRIVER:-}
        [[ $t == ringlb-defer ]] && driver=uring-defer
        start "$t" env RINGLB_DRIVER="$driver" "$bin" run -c "$TMP/$t.toml"
        ;;
    nginx | nginx-tls)
        command -v nginx >/dev/null || { skip "$t" "nginx not installed"; continue; }
        mkdir -p "$TMP/nginx-tmp"
        render "$BENCH/nginx.conf.in" "$TMP/$t.conf" "$port"
        if [[ $t == nginx-tls ]]; then
            sed -i -e "s|^\( *listen .*\) backlog=4096;|\1 backlog=4096 ssl;\n        ssl_certificate $TMP/bench.pem;\n        ssl_certificate_key $TMP/bench.key;\n        ssl_protocols TLSv1.3;\n        ssl_session_cache shared:SSL:10m;|" \
                -e "s|nginx.pid|nginx-tls.pid|" "$TMP/$t.conf"
            SCHEME[$t]=https
        fi
        VERSION[$t]=$(nginx -v 2>&1 | sed 's/.*version: //' || true)
        start "$t" nginx -p "$TMP" -c "$TMP/$t.conf"
        ;;
    haproxy | haproxy-tls | relay)
        command -v haproxy >/dev/null || { skip "$t" "haproxy not installed"; continue; }
        tmpl=haproxy.cfg.in
        [[ $t == relay ]] && tmpl=relay.cfg.in
        render "$BENCH/$tmpl" "$TMP/$t.cfg" "$port"
        if [[ $t == haproxy-tls ]]; then
            # Same certificate and protocol as the other -tls targets; haproxy
            # reads the key from the same PEM. Its session cache (shared,
            # 20000 entries) and tickets are on by default, like nginx-tls's.
            cat "$TMP/bench.pem" "$TMP/bench.key" >"$TMP/bench-haproxy.pem"
            sed -i "s|^\( *bind .*\)$|\1 ssl crt $TMP/bench-haproxy.pem alpn http/1.1 ssl-min-ver TLSv1.3|" "$TMP/$t.cfg"
            grep -q ' ssl crt ' "$TMP/$t.cfg" || die "haproxy-tls: no bind line in $tmpl"
            SCHEME[$t]=https
        fi
        VERSION[$t]=$(haproxy -v 2>&1 | awk 'NR == 1 { print "haproxy/" $3 }' || true)
        [[ $t == relay ]] && VERSION[$t]="${VERSION[$t]} mode tcp"
        start "$t" haproxy -db -f "$TMP/$t.cfg"
        ;;
    *)
        skip "$t" "unknown target"
        continue
        ;;
    esac
    PORT[$t]=$port
    PID[$t]=$LAST_PID
    if wait_http "$t" "$LAST_PID" "$port" "${SCHEME[$t]:-http}"; then
        READY+=("$t")
        log "$t on 127.0.0.1:$port (pid $LAST_PID)"
    else
        skip "$t" "not serving: $(tail -n 2 "$TMP/$t.log" | tr '\n' ' ')"
    fi
done
((${#READY[@]} > 0)) || die "nothing to benchmark"

# ---- rounds ------------------------------------------------------------------
WRK_ARGS=(-t1 -c"$CONNS" --latency -s "$BENCH/tail.lua")
[[ $CLOSE == 1 ]] && WRK_ARGS+=(-H "Connection: close")
run_wrk() { # TARGET SECONDS OUTFILE
    taskset -c "$WRK_CPU" wrk "${WRK_ARGS[@]}" -d"$2"s "${SCHEME[$1]:-http}://127.0.0.1:${PORT[$1]}/" >"$3" 2>&1
}

if ((WARMUP > 0)); then
    for t in "${READY[@]}"; do run_wrk "$t" "$WARMUP" "$TMP/warmup-$t.txt" || true; done
fi

: >"$TMP/results.tsv"
declare -A DEAD=()
n=${#READY[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${READY[$(((i + r - 1) % n))]}"); done
    for t in "${order[@]}"; do
        [[ -n ${DEAD[$t]:-} ]] && continue
        out="$TMP/r$r-$t.txt"
        if ! kill -0 "${PID[$t]}" 2>/dev/null; then
            DEAD[$t]=1
            skip "$t" "process died before round $r"
            continue
        fi
        p0=$(cpu_ns "${PID[$t]}")
        b0=$(cpu_ns "$BACKEND_PID")
        o0=$(active_opens)
        read -r lo0 sr0 <<<"$(syn_trouble)"
        read -r _ pw0 pv0 pi0 <<<"$(sched_stats "${PID[$t]}")"
        s0=$(busy_ns "$SUT_CPU")
        k0=$(softirq_ns)
        if run_wrk "$t" "$DURATION" "$out" && line=$(parse_wrk <"$out"); then
            p1=$(cpu_ns "${PID[$t]}")
            b1=$(cpu_ns "$BACKEND_PID")
            opens=$(($(active_opens) - o0))
            nreq=$(awk '/requests in/ { print $1; exit }' "$out")
            cpu=$(awk -v a="$p0" -v b="$p1" -v n="${nreq:-0}" 'BEGIN { printf "%.2f", (n > 0 ? (b - a) / n / 1000 : 0) }')
            bcpu=$(awk -v a="$b0" -v b="$b1" -v n="${nreq:-0}" 'BEGIN { printf "%.2f", (n > 0 ? (b - a) / n / 1000 : 0) }')
            ops=$(awk -v o="$opens" -v d="$DURATION" 'BEGIN { printf "%.0f", o / d }')
            echo "$r $t $line $cpu $bcpu $ops" >>"$TMP/results.tsv"
            read -r rps p50 p99 err <<<"$line"
            read -r lo1 sr1 <<<"$(syn_trouble)"
            read -r _ pw1 pv1 pi1 <<<"$(sched_stats "${PID[$t]}")"
            s1=$(busy_ns "$SUT_CPU")
            k1=$(softirq_ns)
            # Interference: CPU time others took on SUT_CPU (busy minus proxy
            # and backend), the proxy's wait for the CPU and its switches.
            sched=$(awk -v s0="$s0" -v s1="$s1" -v p="$((p1 - p0))" -v b="$((b1 - b0))" \
                -v w="$((pw1 - pw0))" -v v="$((pv1 - pv0))" -v i="$((pi1 - pi0))" -v n="${nreq:-0}" -v d="$DURATION" \
                -v k="$((k1 - k0))" \
                'BEGIN { o = (s1 - s0 - p - b - k) / 1e6; if (o < 0) o = 0
                    printf "others on CPU %s: %.0f ms/s  ksoftirqd %.2f us/req  proxy waited %.2f us/req for the CPU, switches %.3f/%.3f per req (voluntary/not)",
                        '"$SUT_CPU"', o / d, (n > 0 ? k / n / 1000 : 0), (n > 0 ? w / n / 1000 : 0), (n > 0 ? v / n : 0), (n > 0 ? i / n : 0) }')
            tail=$(awk '/^TAIL/ { printf "p99.9 %s ms  max %s ms", $3, $5 }' "$out")
            log "round $r/$ROUNDS $(printf '%-8s' "$t") ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  ${tail}  errors ${err}  cpu ${cpu} us/req  backend ${bcpu} us/req  connects ${ops}/s  listen overflows $((lo1 - lo0))  SYN retransmits $((sr1 - sr0))"
            log "    latency bands:$(awk '/^BANDS/ { $1 = ""; print }' "$out")"
            log "    $sched"
        else
            log "round $r $t: wrk failed: $(tail -n 2 "$out" | tr '\n' ' ')"
        fi
    done
done

# ---- table -------------------------------------------------------------------
col() { awk -v t="$1" -v c="$2" '$2 == t { print $c }' "$TMP/results.tsv"; }
ratio() { # TARGET COLUMN [BASE]: median over rounds of target/BASE in that round (default
    # nginx; HTTPS targets: nginx-tls)
    local b=${3:-nginx}
    [[ $1 == *-tls && ($b == nginx || $b == haproxy) ]] && b=$b-tls
    awk -v t="$1" -v c="$2" -v b="$b" '
        $2 == b { base[$1] = $c }
        $2 == t { val[$1] = $c }
        END { for (r in val) if ((r in base) && base[r] > 0) printf "%.3f\n", val[r] / base[r] }' \
        "$TMP/results.tsv" | median
}

fmt() { awk -v d="$1" '{ if ($1 == "-") print "-"; else printf "%.*f\n", d, $1 }'; }

per_round() { # TARGET COLUMN [BASE]: the value (or its ratio to BASE) of every round, r1/r2/…
    awk -v t="$1" -v c="$2" -v b="${3:-}" '
        $2 == b { base[$1] = $c }
        $2 == t { val[$1] = $c; if ($1 > n) n = $1 }
        END {
            s = ""
            for (r = 1; r <= n; r++) {
                if (!(r in val)) v = "-"
                else if (b == "") v = sprintf("%.2f", val[r])
                else if ((r in base) && base[r] > 0) v = sprintf("%.2f", val[r] / base[r])
                else v = "-"
                s = s (s == "" ? "" : "/") v
            }
            print s
        }' "$TMP/results.tsv"
}

TABLE="$TMP/table.md"
{
    echo "| target | req/s | p50 ms | p99 ms | req/s vs nginx | vs haproxy | vs relay | p99 vs nginx | p99 per round (ms) | p99 vs nginx per round | CPU µs/req | CPU vs nginx | backend µs/req | backend vs nginx | TCP connects/s | errors | rounds |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${READY[@]}"; do
        rounds=$(col "$t" 1 | wc -l)
        ((rounds > 0)) || continue
        base=nginx
        [[ $t == *-tls ]] && base=nginx-tls
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" \
            "$(col "$t" 3 | median | fmt 0)" "$(col "$t" 4 | median | fmt 2)" \
            "$(col "$t" 5 | median | fmt 2)" "$(ratio "$t" 3 | fmt 2)" \
            "$(ratio "$t" 3 haproxy | fmt 2)" "$(ratio "$t" 3 relay | fmt 2)" "$(ratio "$t" 5 | fmt 2)" \
            "$(per_round "$t" 5)" "$(per_round "$t" 5 "$base")" \
            "$(col "$t" 7 | median | fmt 2)" "$(ratio "$t" 7 | fmt 2)" \
            "$(col "$t" 8 | median | fmt 2)" "$(ratio "$t" 8 | fmt 2)" "$(col "$t" 9 | median | fmt 0)" \
            "$(col "$t" 6 | awk '{ s += $1 } END { print s + 0 }')" "$rounds"
    done
} >"$TABLE"

echo
cat "$TABLE"
for s in "${SKIPPED[@]}"; do echo "skipped: $s"; done

if [[ -n $RESULTS ]]; then
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null || true) ]] && commit="$commit (dirty)"
    versions=""
    for t in "${READY[@]}"; do versions+="$t=${VERSION[$t]:-?}; "; done
    {
        [[ -s $RESULTS ]] || printf '# Benchmark results\n\nAppended by `bench/compare.sh`. Compare ratios within one run, not absolute numbers across runs.\n'
        echo
        echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — shape $SHAPE — commit $commit"
        echo
        echo "- host: $(uname -sr), $NCPU CPUs; wrk -t1 on CPU $WRK_CPU; backend + proxies on CPU $SUT_CPU"
        echo "- command: \`ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS BODY_SIZE=$BODY_SIZE CLOSE=$CLOSE TARGETS=\"$TARGETS\" bash bench/compare.sh\`"
        echo "- wrk: \`wrk ${WRK_ARGS[*]} -d${DURATION}s\`; medians of $ROUNDS interleaved rounds; ratios are medians of per-round ratios; CPU = on-CPU time (schedstat) of the process (and children) per request; TCP connects/s = host-wide ActiveOpens (wrk's own connects included)"
        echo "- versions: ${versions%; }"
        echo "- load average (1/5/15 min): before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        cat "$TABLE"
        for s in "${SKIPPED[@]}"; do echo; echo "skipped: $s"; done
    } >>"$RESULTS"
    log "appended to $RESULTS"
fi

# (no `| grep -q`: with pipefail, an early-exiting reader can fail the pipeline)
awk '$2 == "nginx" || $2 == "ringlb" { ok = 1 } END { exit !ok }' "$TMP/results.tsv" || exit 1
