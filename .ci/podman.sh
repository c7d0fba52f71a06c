#!/usr/bin/env bash
# Install Podman (runc runtime) and serve its Docker-compatible API on a unix socket.
# Idempotent: safe to run again; the service is started only when the socket does not answer.
# Prints the DOCKER_HOST to use on its last line:  DOCKER_HOST=unix:///run/podman/podman.sock
#
#   eval "$(bash .ci/podman.sh | tail -n1 | sed 's/^/export /')"
set -euo pipefail

SOCK=${PODMAN_SOCK:-/run/podman/podman.sock}
LOG=${PODMAN_LOG:-/tmp/podman-service.log}

need=()
for pair in podman:podman runc:runc busybox:busybox-static; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# busybox must be the static one (it is copied into FROM-scratch test images)
if command -v busybox >/dev/null && ! dpkg -s busybox-static >/dev/null 2>&1; then
    need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "podman.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need[@]}" >&2
fi

# crun fails on these hosts (hybrid cgroups) and the default RLIMIT_NOFILE ulimit is refused.
mkdir -p /etc/containers
CONF=/etc/containers/containers.conf
WANT=$'[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "${WANT%$'\n'}" ]; then
    if [ -f "$CONF" ] && [ ! -f "$CONF.before-dappdeps" ]; then
        cp -p "$CONF" "$CONF.before-dappdeps"
    fi
    printf '%s' "$WANT" > "$CONF"
fi

. "$(dirname "$0")/answers.sh"

if ! answers "$SOCK"; then
    mkdir -p "$(dirname "$SOCK")"
    rm -f "$SOCK"
    echo "podman.sh: starting podman system service on $SOCK (log $LOG)" >&2
    nohup setsid podman system service --time=0 "unix://$SOCK" >>"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        answers "$SOCK" && break
        sleep 0.2
    done
    if ! answers "$SOCK"; then
        echo "podman.sh: the service does not answer on $SOCK; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
fi
echo "podman.sh: $(podman --version) answers on $SOCK" >&2
echo "DOCKER_HOST=unix://$SOCK"
