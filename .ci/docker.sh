#!/usr/bin/env bash
# Install Docker's engine from Debian (docker.io 20.10.24 on Debian 12) and run a PRIVATE
# dockerd on its own socket, next to Podman (.ci/podman.sh) and next to any system-wide Docker.
# Idempotent: safe to run again (and concurrently: a lock serialises runs); the daemon is
# started only when the socket does not answer.
# Prints the DOCKER_HOST to use on its last line:  DOCKER_HOST=unix:///run/dappdeps-docker/docker.sock
#
#   eval "$(bash .ci/docker.sh | tail -n1 | sed 's/^/export /')"
#
# What it changes on the host:
#   packages  docker.io, containerd, tini (and iptables, runc if missing), installed with
#             apt-get --no-install-recommends. Their postinst adds the group `docker` and
#             /etc/init.d/docker, /etc/systemd/system/*.wants/{docker,containerd}.* links; it
#             does NOT start a system dockerd: without a policy-rc.d a temporary
#             /usr/sbin/policy-rc.d (exit 101) denies every service start during the install,
#             and is removed right after. /usr/bin/docker (20.10 client) comes with docker.io;
#             a docker CLI earlier in PATH (e.g. /usr/local/bin/docker) still answers first.
#   folders   $DIR  (/run/dappdeps-docker: socket, pidfile, exec root, managed containerd's
#                    state and socket, daemon.json, lock)
#             $DATA (/var/lib/dappdeps-docker: images, containers, volumes, containerd's root).
#                    Persistent on purpose: loaded/imported images survive a restart of the
#                    daemon and a reboot (/run is a tmpfs on most machines), so `doit load:`
#                    need not run again.
#             $LOG  (/tmp/dappdeps-dockerd.log)
#   processes dockerd (pid in $DIR/docker.pid) and the containerd it supervises
#             (pid in $DIR/exec/containerd/containerd.pid), plus one containerd-shim per
#             running container. Containers' cgroups go under /dappdeps-docker.
#   network   nothing: --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
#             --bridge=none (no docker0, no iptables rules, net.ipv4.ip_forward untouched);
#             containers get only a loopback interface (say --network none to be explicit).
#   elsewhere nothing under /etc/docker or /var/lib/docker: the daemon's identity key goes to
#             $DATA/key.json (via $DIR/daemon.json, which dockerd reads instead of
#             /etc/docker/daemon.json).
#   containerd: dockerd 20.10 starts and supervises its own (state in $DIR/exec/containerd,
#             root in $DATA/containerd; no systemd needed), unless
#             /run/containerd/containerd.sock exists: then it uses that system containerd.
#             Our own namespaces (dappdeps, dappdeps-plugins) keep a system Docker's
#             containers ("moby") apart from ours even then.
#
# Undo:
#   kill "$(cat /run/dappdeps-docker/docker.pid)"   # dockerd stops its containerd too
#   # wait for it to exit, then
#   rm -rf /run/dappdeps-docker /var/lib/dappdeps-docker /tmp/dappdeps-dockerd.log
#   apt-get purge docker.io containerd tini         # only if nothing else needs them
set -euo pipefail

DIR=${DAPPDEPS_DOCKER_DIR:-/run/dappdeps-docker}
DATA=${DAPPDEPS_DOCKER_DATA:-/var/lib/dappdeps-docker}
SOCK=${DAPPDEPS_DOCKER_SOCK:-$DIR/docker.sock}
LOG=${DAPPDEPS_DOCKER_LOG:-/tmp/dappdeps-dockerd.log}
PIDFILE=$DIR/docker.pid

if [ "$(id -u)" != 0 ]; then
    echo "docker.sh: must run as root (sudo bash .ci/docker.sh)" >&2
    exit 1
fi

mkdir -p "$DIR"
chmod 0711 "$DIR"
# One run at a time: two concurrent runs must not start two daemons on one data root.
exec 9>"$DIR/lock"
flock -w 300 9

need=()
for pair in dockerd:docker.io containerd:containerd runc:runc; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "docker.sh: installing ${need[*]}" >&2
    # No service may start during the install (a system dockerd would add iptables rules and
    # set net.ipv4.ip_forward). Debian's invoke-rc.d asks /usr/sbin/policy-rc.d; 101 = denied.
    policy_tmp=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, from dappdeps .ci/docker.sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_tmp=/usr/sbin/policy-rc.d
        trap 'rm -f "$policy_tmp"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    if [ -n "$policy_tmp" ]; then rm -f "$policy_tmp"; trap - EXIT; fi
fi

. "$(dirname "$0")/answers.sh"

wait_answers() {  # up to $1 seconds
    local i
    for ((i = 0; i < $1 * 5; i++)); do
        answers "$SOCK" && return 0
        sleep 0.2
    done
    answers "$SOCK"
}

# Is the process of pidfile $1 alive and named $2? A killed one can linger as a zombie for a
# while (PID 1 here is not an init that reaps at once) and kill -0 still finds zombies.
alive() {
    local pid st
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ]
}
ours_alive() { alive "$PIDFILE" dockerd; }
CTRD_PIDFILE=$DIR/exec/containerd/containerd.pid

if ! answers "$SOCK" && ours_alive; then
    # Still starting (or stuck): never start a second one on the same data root.
    echo "docker.sh: dockerd (pid $(cat "$PIDFILE")) runs but $SOCK does not answer yet; waiting" >&2
    for _ in $(seq 1 300); do
        answers "$SOCK" && break
        ours_alive || break
        sleep 0.2
    done
    if ! answers "$SOCK" && ours_alive; then
        echo "docker.sh: dockerd (pid $(cat "$PIDFILE")) does not answer on $SOCK; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        echo "docker.sh: stop it with: kill $(cat "$PIDFILE")" >&2
        exit 1
    fi
fi
if ! answers "$SOCK"; then
    rm -f "$SOCK" "$PIDFILE"
    # dockerd reuses the containerd of a previous dockerd when its pid "exists" (a zombie
    # counts) and then times out waiting for its socket: forget a dead one.
    alive "$CTRD_PIDFILE" containerd || rm -f "$CTRD_PIDFILE"
    mkdir -p "$DATA" "$DIR/exec"
    chmod 0710 "$DATA"
    # Our own config file, so that a host's /etc/docker/daemon.json does not apply; the
    # daemon's identity key (flag-less option) goes to the data root instead of /etc/docker.
    printf '{\n  "deprecated-key-path": "%s/key.json"\n}\n' "$DATA" > "$DIR/daemon.json"
    echo "docker.sh: starting dockerd on $SOCK (data root $DATA, log $LOG)" >&2
    nohup setsid dockerd \
        --host "unix://$SOCK" \
        --config-file "$DIR/daemon.json" \
        --data-root "$DATA" \
        --exec-root "$DIR/exec" \
        --pidfile "$PIDFILE" \
        --containerd-namespace dappdeps \
        --containerd-plugins-namespace dappdeps-plugins \
        --cgroup-parent /dappdeps-docker \
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --bridge=none \
        >>"$LOG" 2>&1 </dev/null 9>&- &
    if ! wait_answers 60; then
        echo "docker.sh: dockerd does not answer on $SOCK; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
fi
echo "docker.sh: $(dockerd --version) answers on $SOCK" >&2
echo "DOCKER_HOST=unix://$SOCK"
