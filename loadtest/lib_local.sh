# Shared by the loopback load scripts (slow_clients.sh, soak_backends.sh):
# a work dir removed on exit, processes stopped by the PIDs recorded in
# PIDS, and port helpers. Source it after setting TAG.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/${TAG:-loadtest}.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}
