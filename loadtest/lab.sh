# shellcheck shell=bash
# Shared lab for the loadtest scripts (sourced, not run): a two-node VRRP lab
# in network namespaces, plus the helpers every scenario needs.
#
#   source "$ROOT/loadtest/lab.sh"
#   lab_init PREFIX        # P=PREFIX<pid>, WORK dir, exit trap, fd 3 = diagnostics
#   lab_up                 # namespaces $P-{sw,a,b,c}: bridge, a=198.18.0.1,
#                          # b=198.18.0.2, c=198.18.0.3 (client); VIP 198.18.0.100
#   start NODE LOG CMD...  # background in NODE's namespace; LAST_PID, PIDS
#   stop_pids PID...       # kill -9 + reap, only the PIDs given
#
# Rules (ARCHITECTURE.md, "Test networks"): addresses in 198.18.0.0/24 only, namespaces with a
# per-run unique prefix, always deleted on exit, every process this shell
# started is in PIDS and is killed by PID on exit, never by name.

VIP=198.18.0.100
PIDS=()

# lab_find_ringlb DIR...: sets RINGLB_BIN (unless set) to the first
# DIR/ringlb that exists, else fails.
lab_find_ringlb() {
    local d
    if [[ -z ${RINGLB_BIN:-} ]]; then
        for d in "$@"; do
            if [[ -x $d/ringlb ]]; then
                RINGLB_BIN=$d/ringlb
                break
            fi
        done
    fi
    [[ -n ${RINGLB_BIN:-} && -x $RINGLB_BIN ]] || { echo "ringlb binary not found in: $* (build it first)" >&2; return 1; }
}

# Teardown in the order the kernel handles cheaply: processes first (and
# reaped: their sockets and io_uring instances are gone before the
# namespace is), then the veths and the bridge, then the (now empty)
# namespaces, whose deletion is otherwise finished asynchronously by the
# kernel's cleanup_net worker.
lab_cleanup() {
    local n
    set +e
    stop_pids "${PIDS[@]}"
    for n in a b c; do ip -n "$P-sw" link del "$P$n" 2>/dev/null || true; done
    ip -n "$P-sw" link del br0 2>/dev/null || true
    for n in c b a sw; do ip netns del "$P-$n" 2>/dev/null || true; done
    [[ -n ${KEEP_WORK:-} ]] && echo "work dir kept: $WORK" >&3 || rm -rf "$WORK"
}

lab_init() { # PREFIX
    ((EUID == 0)) || { echo "needs root (network namespaces)" >&2; exit 1; }
    exec 3>&2
    P=$1$$
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringlb-$1.XXXXXX")
    trap lab_cleanup EXIT
    trap 'exit 130' INT TERM
}

lab_up() {
    local i=1 n
    ip netns add "$P-sw"
    ip -n "$P-sw" link add br0 type bridge
    ip -n "$P-sw" link set br0 up
    for n in a b c; do
        ip netns add "$P-$n"
        ip link add "$P$n" netns "$P-sw" type veth peer name eth0 netns "$P-$n"
        ip -n "$P-sw" link set "$P$n" master br0 up
        ip -n "$P-$n" link set lo up
        ip -n "$P-$n" link set eth0 up
        ip -n "$P-$n" addr add "198.18.0.$i/24" dev eth0
        ip netns exec "$P-$n" sysctl -qw net.ipv4.ip_nonlocal_bind=1
        i=$((i + 1))
    done
    # The client opens a fresh connection per request (1000/s): the whole
    # port range, and reuse of ports in TIME_WAIT for new connections
    # (tuning/60-ringlb.conf says why), so connect() never searches a
    # nearly full range (see src/cli/lab/loadgen.rs).
    ip netns exec "$P-c" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
}

# start NODE LOG CMD... : background in NODE's namespace; sets LAST_PID.
# (`ip netns exec` execs CMD, so LAST_PID is CMD's own PID.)
start() {
    local node=$1 log=$2
    shift 2
    ip netns exec "$P-$node" "$@" >"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# The direct children of the PIDs (nginx workers, keepalived's VRRP child)
# are collected first and killed after their parents (so no master can
# respawn a worker): a killed nginx master would otherwise leave its workers
# running, still bound to :8080 in a namespace that outlives the run.
stop_pids() {
    local p
    local -a kids=()
    for p in "$@"; do
        # shellcheck disable=SC2207
        kids+=($(children "$p"))
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${kids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

has_vip() { ip -n "$P-$1" -4 -o addr show dev eth0 | grep -q " $VIP/"; }
only_a() { has_vip a && ! has_vip b; }
only_b() { has_vip b && ! has_vip a; }

# wait_for SECONDS CMD...: poll every 20 ms.
wait_for() {
    local limit=$1 t=0
    shift
    while ! "$@"; do
        sleep 0.02
        t=$((t + 1))
        ((t < limit * 50)) || return 1
    done
}

# Remove the VIP from both nodes (a killed VRRP process leaves it configured).
vip_clear() {
    local n
    for n in a b; do ip -n "$P-$n" addr del "$VIP/24" dev eth0 2>/dev/null || true; done
}

ringlb_conf() { # PRIORITY ADVERT [SERVER...]  (append more TOML tables after it)
    local prio=$1 advert=$2 s
    shift 2
    (($#)) || set -- 127.0.0.1:9000
    cat <<CONF
[runtime]
workers = 1
shutdown_timeout = "2s"
[[listener]]
listen = "0.0.0.0:8080"
upstream = "app"
[upstream.app]
connect_timeout = "200ms"
CONF
    for s in "$@"; do printf '[[upstream.app.server]]\naddress = "%s"\n' "$s"; done
    set -- "$prio" "$advert"
    cat <<CONF
[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = $1
advert_interval = "$2"
virtual_ipaddress = ["$VIP/24"]
CONF
}

# keepalived_conf PRIORITY ADVERT_SECONDS [CHECK_SCRIPT INTERVAL WEIGHT]
# With a check script: a `vrrp_script check_nginx` (fall/rise defaults)
# tracked by the instance, as in the seed's configuration.
keepalived_conf() {
    local script=${3:-}
    cat <<CONF
global_defs {
  router_id ka
  vrrp_version 3
  script_user root
}
CONF
    [[ -n $script ]] && cat <<CONF
vrrp_script check_nginx {
  script "$script"
  interval $4
  weight $5
}
CONF
    cat <<CONF
vrrp_instance VI_1 {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority $1
  advert_int $2
  virtual_ipaddress {
    $VIP/24
  }
CONF
    [[ -n $script ]] && printf '  track_script {\n    check_nginx\n  }\n'
    echo "}"
}

# keepalived_for_nginx NODE DIR PRIO: keepalived on NODE guarding the nginx
# started from DIR/nginx-NODE (priority PRIO, the lab's advert interval);
# sets LAST_PID. The seed's check is `pidof nginx`; namespaces share the
# host's PID namespace, where pidof would also see the other node's nginx,
# so each node checks its own nginx master by pid file.
keepalived_for_nginx() {
    local node=$1 d=$2 prio=$3
    cat >"$d/check-$node.sh" <<CHK
#!/bin/sh
pid=\$(cat "$d/nginx-$node/nginx.pid" 2>/dev/null) || exit 1
grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/\$pid/status" 2>/dev/null
CHK
    chmod 755 "$d/check-$node.sh"
    keepalived_conf "$prio" "$(seconds "$ADVERT")" "$d/check-$node.sh" 2 -20 >"$d/ka-$node.conf"
    start "$node" "$d/ka-$node.log" keepalived -P -n -l -G -f "$d/ka-$node.conf" \
        -p "$d/ka-$node.pid" -r "$d/ka-$node.vrrp.pid"
}

# nginx_conf DIR [SERVER...]: writes DIR/nginx.conf: nginx on 0.0.0.0:8080
# proxying to the servers (default 127.0.0.1:9000) with upstream keep-alive,
# everything (pid, logs, temp files) under DIR.
nginx_conf() {
    local d=$1 servers="" s
    shift
    (($#)) || set -- 127.0.0.1:9000
    for s in "$@"; do servers+="    server $s;"$'\n'; done
    mkdir -p "$d/tmp" "$d/logs"
    cat >"$d/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  upstream backend {
$servers    keepalive 64;
  }
  server {
    listen 0.0.0.0:8080;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}

# children PID: the direct children of PID (e.g. nginx workers), one a line.
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

seconds() { # 10ms -> 0.01
    local v=$1
    case $v in
        *ms) awk -v m="${v%ms}" 'BEGIN { printf "%g", m / 1000 }' ;;
        *s) echo "${v%s}" ;;
    esac
}

median() { sort -n | awk 'NF { v[++n] = $1 } END { if (n == 0) print "-"; else if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'; }

# outage_ms PROBE_FILE: longest gap between two successful probes, in ms;
# "fail" (and status 1) when the probe never succeeded after a failure.
outage_ms() {
    awk 'BEGIN { prev = -1; gap = 0; bad = 0 }
         $2 == 0 { bad = 1 }
         $2 == 1 { if (prev >= 0 && $1 - prev > gap) gap = $1 - prev; prev = $1; if (bad) rec = 1 }
         END { if (!rec) { print "fail"; exit 1 } printf "%.0f\n", gap * 1000 }' "$1"
}

# serves NODE_IP: one GET from the client namespace to NODE_IP:8080 answers 200.
serves() { ip netns exec "$P-c" curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$1:8080/" | grep -q 200; }

host_load() { cut -d' ' -f1-3 /proc/loadavg; }

# Tasks in uninterruptible sleep (D), host-wide.
d_tasks() { ps -eLo stat= | grep -c '^D' || true; }

# settle MAX_SECONDS: wait until the host has no task in uninterruptible
# sleep for 0.5 s running (what a previous run's teardown leaves behind:
# socket and io_uring cleanup, namespace deletion), at most MAX_SECONDS.
# Prints how long it waited when that was more than a second (fd 3).
settle() {
    local limit=$1 t0 quiet=0 waited
    t0=$(date +%s%N)
    while ((quiet < 5)); do
        if (($(d_tasks) == 0)); then quiet=$((quiet + 1)); else quiet=0; fi
        waited=$((($(date +%s%N) - t0) / 1000000))
        if ((waited > limit * 1000)); then
            echo "host did not settle in ${limit} s ($(d_tasks) tasks in D state, load $(host_load)); going on" >&3
            return 0
        fi
        sleep 0.1
    done
    ((waited < 1500)) || echo "waited ${waited} ms for the host to settle (load $(host_load))" >&3
}
