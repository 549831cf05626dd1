#!/usr/bin/env bash
# The one test command: `bash tests/run.sh` (CI runs it through .ci/run).
#
# 1. Installs the system tools the tests use, if any is missing (Debian/Ubuntu:
#    apt-get update once, then apt-get install -y, non-interactively, with
#    service auto-start blocked: tests run nginx/haproxy/keepalived binaries
#    directly, never as services).
# 2. Ensures the rustfmt and clippy components, and a Python venv (.venv in
#    the repository, git-ignored) with the real application servers and
#    client libraries the tests drive (tests/requirements.txt).
# 3. cargo fmt --check, clippy -D warnings, release build, all tests (with the
#    test-only `fault-injection` feature, which the stalled-data-plane VRRP test needs).
# 4. Prints a summary; exits non-zero if any step failed.
#
# Environment: SKIP_INSTALL=1 skips step 1; TEST_TIMEOUT (default 20m) bounds
# `cargo test`; extra arguments are passed to `cargo test` (e.g. a filter).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TEST_TIMEOUT=${TEST_TIMEOUT:-20m}
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ringlb-tests.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

APT_PACKAGES=(wrk nginx haproxy keepalived curl openssl tcpdump tshark iproute2 iputils-ping python3-prometheus-client apache2-utils)

say() { printf '\n==> %s\n' "$*"; }

declare -a SUMMARY=()
FAILED=0

# step NAME CMD...: run, time, record; never aborts the script.
step() {
    local name=$1 start rc
    shift
    say "$name: $*"
    start=$SECONDS
    if "$@"; then rc=0; else rc=$?; fi
    if ((rc == 0)); then
        SUMMARY+=("$(printf '  %-8s %-36s %4ss' PASS "$name" $((SECONDS - start)))")
    else
        SUMMARY+=("$(printf '  %-8s %-36s %4ss  (exit %s)' FAIL "$name" $((SECONDS - start)) "$rc")")
        FAILED=1
    fi
}

# ---- 1. system packages -------------------------------------------------------
missing_packages() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || echo "$p"
    done
}

install_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        echo "not a Debian-like system: install by hand: ${APT_PACKAGES[*]}"
        return 0
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        echo "all present: ${APT_PACKAGES[*]}"
        return 0
    fi
    echo "missing: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "not root and no passwordless sudo: install them by hand"
            return 1
        fi
    fi
    # Keep packaged services (nginx, haproxy, keepalived) from starting:
    # invoke-rc.d consults policy-rc.d, and 101 means "action forbidden".
    local policy=/usr/sbin/policy-rc.d placed=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        placed=1
    fi
    local rc=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if ((rc == 0)); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" || rc=$?
    fi
    ((placed)) && "${sudo[@]}" rm -f "$policy"
    # Belt and braces for systemd hosts: stop anything that started anyway.
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        local svc
        for svc in nginx haproxy keepalived; do
            "${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
        done
    fi
    return "$rc"
}

# ---- 2. rust components ---------------------------------------------------------
rust_components() {
    command -v cargo >/dev/null || { echo "cargo not found (install rustup)"; return 1; }
    if ! command -v rustup >/dev/null; then
        echo "no rustup: relying on installed cargo-fmt / cargo-clippy"
        return 0
    fi
    local installed c
    installed=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do
        if ! grep -q "^$c" <<<"$installed"; then
            rustup component add "$c"
        fi
    done
    cargo --version
    rustc --version
}

# ---- 2b. python venv --------------------------------------------------------------
# Real peers: uvicorn/gunicorn as backends, requests/httpx/aiohttp as clients.
# Tests find the interpreter through RINGLB_PYTHON (tests/common::python()).
VENV="$ROOT/.venv"
python_venv() {
    local py
    py=$(command -v python3) || { echo "python3 not found"; return 1; }
    if [[ ! -x $VENV/bin/python ]]; then
        "$py" -m venv "$VENV" || return 1
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt || return 1
    "$VENV/bin/python" -c 'import uvicorn, gunicorn, requests, httpx, aiohttp, websockets; print("python venv ok:", uvicorn.__version__, gunicorn.__version__)'
}
export RINGLB_PYTHON="$VENV/bin/python"

# ---- 3. cargo -------------------------------------------------------------------
cargo_test() {
    timeout "$TEST_TIMEOUT" cargo test --release --features fault-injection --no-fail-fast "$@" 2>&1 | tee "$LOGDIR/test.log"
}

if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
    SUMMARY+=("$(printf '  %-8s %-36s' SKIP 'system packages')")
else
    step "system packages" install_packages
fi
step "rust components" rust_components
step "python venv" python_venv
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --all-targets --all-features -- -D warnings
step "cargo build --release" cargo build --release
step "cargo test --release" cargo_test "$@"

# ---- 4. summary -----------------------------------------------------------------
say "summary"
printf '%s\n' "${SUMMARY[@]}"
if [[ -s $LOGDIR/test.log ]]; then
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^ignored/) g += $(i - 1)
            }
         }
         END { printf "  tests: %d passed, %d failed, %d ignored\n", p, f, g }' "$LOGDIR/test.log"
    grep -E '^---- .* ----$' "$LOGDIR/test.log" | sed 's/^/  failed: /' | head -n 40 || true
fi
if ((FAILED)); then
    echo "RESULT: FAIL"
    exit 1
fi
echo "RESULT: PASS"
