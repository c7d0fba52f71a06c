"""A real OCI registry for tests: Debian's docker-registry (CNCF distribution 2.8) on a
free 127.0.0.1 port, plain HTTP, storage in a temporary folder, optionally with htpasswd
(bcrypt, made by apache2-utils' htpasswd) authentication.

    with RegistryServer(tmp_path / "reg") as reg:            # reg.url = http://127.0.0.1:PORT
    with RegistryServer(tmp_path / "reg", users={"ci": "secret"}) as reg:
    reg.blob_path("sha256:...")     # the stored blob (filesystem driver layout)
    reg.stop() / reg.start()        # same port, same storage
"""
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def available():
    return Path(BINARY).is_file()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RegistryServer:
    def __init__(self, root, users=None):
        self.root = Path(root)
        self.storage = self.root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.users = users or {}
        self.proc = None
        self.log = self.root / "registry.log"
        lines = ["version: 0.1", "log:", "  level: info", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}"]
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(
                subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                               capture_output=True, text=True).stdout.strip() + "\n"
                for user, password in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: dappdeps-test", f"    path: {htpasswd}"]
        self.config = self.root / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self):
        self.proc = subprocess.Popen([BINARY, "serve", str(self.config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=1)
                return self
            except urllib.error.HTTPError:      # 401 with auth: it answers
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.url}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def blob_path(self, digest):
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def tags(self, repository):
        """Tags of a repository, read from the storage folder (no HTTP, no auth)."""
        folder = self.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
