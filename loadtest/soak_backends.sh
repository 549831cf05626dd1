#!/usr/bin/env bash
# Soak: keep-alive load through ringlb for DURATION seconds while one of three
# backends is killed (SIGKILL) and restarted every 20 s and ringlb reloads
# (SIGHUP, with a changed config) every 30 s. Prints ringlb's RSS and open fds
# every 10 s, then the verdict: unexpected client errors (any non-2xx answer
# or socket error seen by wrk) must be zero, RSS and fds flat.
#
# Usage: bash loadtest/soak_backends.sh [DURATION]     (default 600 s)
# Env:   CONNS=16  RINGLB_BIN=target/release/ringlb  KILL_EVERY=20  RELOAD_EVERY=30
#
# Loopback only; every process is started here, bounded (wrk -d) and
# stopped by PID on exit. Exit status 1 if clients saw errors.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-600}
CONNS=${CONNS:-16}
KILL_EVERY=${KILL_EVERY:-20}
RELOAD_EVERY=${RELOAD_EVERY:-30}
BIN=${RINGLB_BIN:-$ROOT/target/release/ringlb}
command -v wrk >/dev/null || { echo "wrk not installed" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)

TAG=soak
# shellcheck source=lib_local.sh
source "$ROOT/loadtest/lib_local.sh"

BPORT=() BPID=()
for i in 0 1 2; do BPORT[i]=$(free_port); done
start_backend() { # index
    "$BIN" backend --listen "127.0.0.1:${BPORT[$1]}" --name "be$1" >>"$WORK/be$1.log" 2>&1 &
    BPID[$1]=$!
    PIDS+=("${BPID[$1]}")
}
for i in 0 1 2; do start_backend $i; done
for i in 0 1 2; do wait_port "${BPORT[i]}"; done

LPORT=$(free_port)
write_config() { # generation: server weights change so each reload differs
    local g=$1 i
    {
        printf '[runtime]\nworkers = 1\n\n[[listener]]\nlisten = "127.0.0.1:%s"\nupstream = "app"\n\n' "$LPORT"
        printf '[upstream.app]\nretries = 2\n\n'
        for i in 0 1 2; do
            printf '[[upstream.app.server]]\naddress = "127.0.0.1:%s"\nweight = %d\n\n' "${BPORT[i]}" $(((g + i) % 3 + 1))
        done
    } >"$WORK/ringlb.toml.new"
    mv "$WORK/ringlb.toml.new" "$WORK/ringlb.toml"
}
write_config 0
"$BIN" run -c "$WORK/ringlb.toml" >"$WORK/ringlb.log" 2>&1 &
RL=$!
PIDS+=("$RL")
wait_port "$LPORT"

sample() { # "t rss_kb fds"
    printf '%4ds  rss %6d KB  fds %4d\n' "$1" "$(awk '/VmRSS/{print $2}' "/proc/$RL/status")" "$(ls "/proc/$RL/fd" | wc -l)"
}

echo "soak: $(date -u +%FT%TZ), ${DURATION}s, wrk -t1 -c$CONNS, kill+restart a backend every ${KILL_EVERY}s, SIGHUP every ${RELOAD_EVERY}s"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s "http://127.0.0.1:$LPORT/" >"$WORK/wrk.txt" 2>&1 &
WRK=$!
PIDS+=("$WRK")
start=$SECONDS kills=0 reloads=0 victim=0
next_kill=$KILL_EVERY next_reload=$RELOAD_EVERY next_sample=0
: >"$WORK/samples.txt"
while kill -0 "$WRK" 2>/dev/null; do
    t=$((SECONDS - start))
    if ((t >= next_sample)); then
        next_sample=$((next_sample + 10))
        sample "$t" | tee -a "$WORK/samples.txt"
    fi
    if ((t >= next_kill)); then
        next_kill=$((next_kill + KILL_EVERY))
        kill -9 "${BPID[victim]}" 2>/dev/null || true
        wait "${BPID[victim]}" 2>/dev/null || true
        sleep 1
        start_backend $victim
        kills=$((kills + 1))
        victim=$(((victim + 1) % 3))
    fi
    if ((t >= next_reload)); then
        next_reload=$((next_reload + RELOAD_EVERY))
        reloads=$((reloads + 1))
        write_config $reloads
        kill -HUP "$RL"
    fi
    kill -0 "$RL" 2>/dev/null || { echo "ringlb died; log:"; tail -20 "$WORK/ringlb.log"; exit 1; }
    sleep 0.2
done
wait "$WRK" || true
sample $((SECONDS - start)) | tee -a "$WORK/samples.txt"
echo "--- wrk"
cat "$WORK/wrk.txt"
reqs=$(awk '/requests in/{print $1}' "$WORK/wrk.txt")
non2xx=$(awk '/Non-2xx/{print $NF}' "$WORK/wrk.txt")
sockerr=$(awk '/Socket errors/{gsub(",","");print $4+$6+$8+$10}' "$WORK/wrk.txt")
errors=$((${non2xx:-0} + ${sockerr:-0}))
first=$(head -1 "$WORK/samples.txt") last=$(tail -1 "$WORK/samples.txt")
echo "--- verdict"
echo "requests ${reqs:-?}, backend kills $kills, reloads $reloads"
echo "unexpected client errors: $errors (non-2xx ${non2xx:-0}, socket errors ${sockerr:-0})"
echo "ringlb first sample: $first"
echo "ringlb last sample:  $last"
echo "ringlb log: $(grep -c . "$WORK/ringlb.log" || true) lines, $(grep -ci 'panic' "$WORK/ringlb.log" || true) panics"
((errors == 0))
