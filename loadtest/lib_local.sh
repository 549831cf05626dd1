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

# A port below the kernel's ephemeral range, checked free: a port from
# bind(:0) can be taken by one of the load's own outgoing connections
# before the process meant to listen on it binds it.
free_port() {
    python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(10000, lo), lo - 10000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
}
wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}
