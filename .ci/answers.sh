# Sourced by .ci/podman.sh and .ci/docker.sh: answers SOCK -> does a Docker-API engine
# answer /_ping on that unix socket? curl when installed, else Python.
answers() {
    if command -v curl >/dev/null 2>&1; then
        curl -sf --max-time 2 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
        return
    fi
    python3 - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
sys.exit(0 if b" 200 " in s.recv(200) else 1)
PY
}
