"""Escape attempts from inside a build step (docs/security.md): a real fixture build whose
script tries each one and records whether it worked; the host side checks that nothing
outside the sandbox changed. Plus: a build that writes a host path fails, clearly, and
is not counted as done."""
import http.server
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from conftest import run_doit
from fixtures import FixtureProject

MARK = f"dappdeps-escape-{uuid.uuid4().hex[:8]}"

# name -> shell that must FAIL inside the sandbox
PROBES = {
    "remount /usr read-write": "mount -o remount,bind,rw /usr",
    "mount a tmpfs": "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m",
    "mknod a device": "mknod /tmp/nod c 1 3",
    "mknod in the prefix": "mknod $PREFIX/nod c 1 3",
    "read /etc/shadow": "cat /etc/shadow",
    "read the host root home": "ls /root/",
    "write into /usr": f"touch /usr/{MARK}",
    "write /": f"touch /{MARK}",
    "write /etc/passwd": "echo 'x:x:0:0::/:/bin/sh' >> /etc/passwd",
    "write /proc/sys": "v=$(cat /proc/sys/vm/overcommit_memory) && echo $v > /proc/sys/vm/overcommit_memory",
    "kill a host process": "kill -9 $HOSTPID",
    "ptrace a host process": "python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None); "
                             "sys.exit(0 if libc.ptrace(16, int(sys.argv[1]), 0, 0) == 0 else 1)' $HOSTPID",
    "a nested user namespace": "unshare -Ur true",
    "a new mount namespace": "unshare -m true",
    "chroot": "chroot / true",
    "set the hostname": "hostname evil",
    "HTTP to 127.0.0.1 of the host": "python3 -c 'import urllib.request,os; urllib.request.urlopen("
                                    "\"http://127.0.0.1:%s/\" % os.environ[\"HTTPPORT\"], timeout=3)'",
}


class Counter(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    root = tmp_path_factory.mktemp("escape")
    server = Counter(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    victim = subprocess.Popen(["sleep", "600"])
    overcommit = Path("/proc/sys/vm/overcommit_memory").read_text()
    lines = ['mkdir -p "$PREFIX"', ': > "$PREFIX/probes.txt"']
    for name, probe in PROBES.items():
        lines.append(f"if ( {probe} ) >/dev/null 2>&1; then echo 'ESCAPE {name}'; "
                     f"else echo 'BLOCKED {name}'; fi >> \"$PREFIX/probes.txt\"")
    proj = FixtureProject(root / "proj")
    proj.add_package("prober", "1.0", {"README": "probes\n"}, build="script",
                     script="\n".join(lines) + "\n",
                     environment={"HOSTPID": str(victim.pid),
                                  "HTTPPORT": str(server.server_address[1])})
    proj.add_distribution("esc", ["prober"])
    config = proj.write_config()
    try:
        run = run_doit(config, "build:esc/prober", check=True)
        alive = victim.poll() is None
    finally:
        victim.kill()
        server.shutdown()
    probes = (proj.cache / "stage/esc/prober/tree/probes.txt").read_text().splitlines()
    return {"run": run, "probes": dict(line.split(" ", 1)[::-1] for line in probes),
            "alive": alive, "hits": server.hits, "overcommit": overcommit}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_escape_attempt_is_blocked(probed, name):
    assert probed["probes"].get(name) == "BLOCKED", (name, probed["probes"])


def test_the_host_saw_nothing(probed):
    assert probed["alive"], "the host process was killed from inside the sandbox"
    assert probed["hits"] == 0, "the sandbox reached a server on the host's 127.0.0.1"
    assert not Path(f"/usr/{MARK}").exists() and not Path(f"/{MARK}").exists()
    assert Path("/proc/sys/vm/overcommit_memory").read_text() == probed["overcommit"]
    assert "x:x:0:0" not in Path("/etc/passwd").read_text()


# Probes that are safe to run as root outside the sandbox (in a private mount and uts
# namespace, against a process and a server the test owns): there they must SUCCEED,
# so a probe that is blocked inside is blocked by the sandbox, not by a typo. The others
# (writing /usr, /, /etc/passwd, /proc/sys, remounting /usr) would change the host.
SAFE_ON_THE_HOST = ("mount a tmpfs", "mknod a device", "read /etc/shadow",
                    "read the host root home", "kill a host process", "ptrace a host process",
                    "a nested user namespace", "a new mount namespace", "chroot",
                    "set the hostname", "HTTP to 127.0.0.1 of the host")


@pytest.mark.parametrize("name", SAFE_ON_THE_HOST)
def test_the_probes_can_see_an_escape(name):
    server = Counter(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    victim = subprocess.Popen(["sleep", "600"])
    env = dict(os.environ, HOSTPID=str(victim.pid), HTTPPORT=str(server.server_address[1]))
    try:
        # a private /tmp: the probes' own files (a device node) never reach the host's
        proc = subprocess.run(["unshare", "-m", "-u", "--propagation", "private", "bash", "-c",
                               f"mount -t tmpfs probe /tmp && cd /tmp && ({PROBES[name]})"],
                              env=env, capture_output=True, text=True, timeout=60)
    finally:
        victim.kill()
        victim.wait()
        server.shutdown()
    assert proc.returncode == 0, (name, proc.stderr)


def test_a_recipe_that_declares_network_gets_it(tmp_path):
    server = Counter(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("online", "1.0", {"README": "x\n"}, build="script", network=True,
                     environment={"HTTPPORT": str(server.server_address[1])},
                     script="mkdir -p $PREFIX\n"
                            + PROBES["HTTP to 127.0.0.1 of the host"] + "\n")
    proj.add_distribution("esc", ["online"])
    try:
        run_doit(proj.write_config(), "build:esc/online", check=True)
    finally:
        server.shutdown()
    assert server.hits == 1


def test_a_build_writing_a_host_path_fails_and_is_not_done(tmp_path):
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("writer", "1.0", {"README": "x\n"}, build="script",
                     script=f"mkdir -p $PREFIX/bin\necho evil > /usr/local/{MARK}\n")
    proj.add_distribution("esc", ["writer"])
    config = proj.write_config()
    run = run_doit(config, "build:esc/writer")
    assert run.returncode != 0
    assert "Read-only file system" in run.text and "writer.log" in run.text, run.text[-2000:]
    assert not Path(f"/usr/local/{MARK}").exists()
    assert not (proj.cache / "stage/esc/writer/key.json").exists()


def test_a_hung_build_is_stopped_at_its_timeout(tmp_path):
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("hang", "1.0", {"README": "x\n"}, build="script", timeout=3,
                     script="sleep 3137 &\nsleep 3137\n")
    proj.add_distribution("esc", ["hang"])
    config = proj.write_config()
    run = run_doit(config, "build:esc/hang", timeout=120)
    assert run.returncode != 0
    assert "stopped after 3 s" in run.text and "'timeout'" in run.text, run.text[-2000:]
    assert "hang.log" in run.text
    assert not (proj.cache / "stage/esc/hang/key.json").exists()
    left = subprocess.run(["pgrep", "-f", "sleep 3137"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "processes of the stopped build are still running"
