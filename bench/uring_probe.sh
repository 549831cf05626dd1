#!/usr/bin/env bash
# Runs bench/uring_probe.rs in every mode side by side under `Connection: close`
# clients and prints on-CPU time per request per mode (what multishot accept,
# registered descriptors and linked SEND+CLOSE would save per connection).
#
#   bash bench/uring_probe.sh           # ROUNDS=5 DURATION=4 CONNS=64
#   EXAMPLE=recv_probe bash bench/uring_probe.sh
#       bench/recv_probe.rs instead: keep-alive clients, modes single,
#       pollfirst and multishot (how requests are received), ratios to single
#
# Layout as in bench/compare.sh: wrk -t1 pinned on WRK_CPU, every probe on
# SUT_CPU, each on its own loopback port; rounds interleaved (the order rotates),
# medians over rounds, and each mode's ratio to `ringlike` per round (the
# pattern ringlb's runtime issues today).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
CONNS=${CONNS:-64}
WRK_CPU=${WRK_CPU:-0}
SUT_CPU=${SUT_CPU:-1}
EXAMPLE=${EXAMPLE:-uring_probe}
if [[ $EXAMPLE == recv_probe ]]; then
    MODES=${MODES:-"single pollfirst multishot"}
    BASE=single
    WRK_ARGS=()
else
    MODES=${MODES:-"ringlike single pollaccept multishot sidering fixed linked"}
    BASE=ringlike
    WRK_ARGS=(-H 'Connection: close')
fi
PROBE=${PROBE:-$ROOT/target/release/examples/$EXAMPLE}

die() { printf '[uring_probe] error: %s\n' "$*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found"
if [[ ${BUILD:-1} == 1 ]]; then
    (cd "$ROOT" && cargo build --release --example "$EXAMPLE") >&2 || die "build failed"
fi
[[ -x $PROBE ]] || die "$PROBE missing"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/uring-probe.XXXXXX")
declare -A PID=() PORT=()
cleanup() {
    for m in "${!PID[@]}"; do kill "${PID[$m]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_ns() { awk '{ s += $1 } END { printf "%.0f\n", s }' /proc/"$1"/task/*/schedstat; }

for m in $MODES; do
    PORT[$m]=$(free_port)
    taskset -c "$SUT_CPU" "$PROBE" "$m" "127.0.0.1:${PORT[$m]}" 2>"$TMP/$m.log" &
    PID[$m]=$!
done
for m in $MODES; do
    for _ in $(seq 50); do
        curl -fs -o /dev/null "http://127.0.0.1:${PORT[$m]}/" && break
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:${PORT[$m]}/" || die "$m did not start: $(cat "$TMP/$m.log")"
done

read -r -a order <<<"$MODES"
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < ${#order[@]}; k++)); do
        m=${order[$(((k + r - 1) % ${#order[@]}))]}
        before=$(cpu_ns "${PID[$m]}")
        taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION"s "${WRK_ARGS[@]}" \
            "http://127.0.0.1:${PORT[$m]}/" >"$TMP/r$r-$m.txt" 2>&1
        after=$(cpu_ns "${PID[$m]}")
        rps=$(awk '/^Requests\/sec/ { print $2 }' "$TMP/r$r-$m.txt")
        us=$(awk -v b="$before" -v a="$after" -v q="$rps" -v d="$DURATION" \
            'BEGIN { printf "%.2f", (a - b) / 1000 / (q * d) }')
        printf '%s %s %s %s\n' "$r" "$m" "$rps" "$us" >>"$TMP/results"
        printf '[uring_probe] round %d/%d %-9s %8.0f req/s  %s us/req\n' "$r" "$ROUNDS" "$m" "$rps" "$us" >&2
    done
done

printf '\n| mode | req/s | CPU µs/req per round | CPU µs/req (median) | vs %s (median of per-round ratios) |\n' "$BASE"
printf '|---|---:|---|---:|---:|\n'
for m in $MODES; do
    awk -v m="$m" -v b="$BASE" '
        $2 == b { base[$1] = $4 }
        $2 == m { rps[++n] = $3; us[n] = $4; round[n] = $1 }
        function median(a, k,   i, j, t) {
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        END {
            per = ""; for (i = 1; i <= n; i++) { per = per (i > 1 ? " / " : "") us[i]; ratio[i] = us[i] / base[round[i]]; u[i] = us[i]; q[i] = rps[i] }
            printf "| %s | %.0f | %s | %.2f | %.3f |\n", m, median(q, n), per, median(u, n), median(ratio, n)
        }' "$TMP/results"
done
