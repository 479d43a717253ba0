"""``fastproxy demo``: the built-in upstream and the proxy in front of it, ready to try with curl.

Each capability adds its part to the demo config and the printed commands as it lands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

__all__ = ["demo_config", "run_demo"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_config(port: int, admin_port: int, upstream_port: int) -> str:
    return f"""\
# The fastproxy demo configuration (written by `fastproxy demo`).
[server]
listen = ["127.0.0.1:{port}"]
workers = 2
admin_listen = "127.0.0.1:{admin_port}"

[limits]
max_body_bytes = 10485760
header_timeout = 10.0

[upstreams.demo]
url = "http://127.0.0.1:{upstream_port}"
pool_size = 64

[[routes]]
name = "hello"
methods = ["GET", "HEAD"]
path = "/hello"
upstream = "demo"
public = true

[[routes]]
name = "public-api"
path = "/api/public/*"
upstream = "demo"
public = true

[[routes]]
name = "echo"
path = "/echo"
upstream = "demo"
public = true

[[routes]]
name = "files"
methods = ["GET", "HEAD"]
path = "/bytes/*"
upstream = "demo"
public = true
"""


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(port: int) -> int:
    upstream_port = _free_port()
    admin_port = _free_port()
    workdir = tempfile.mkdtemp(prefix="fastproxy-demo-")
    config_path = os.path.join(workdir, "demo.toml")
    with open(config_path, "w") as f:
        f.write(demo_config(port, admin_port, upstream_port))

    upstream = subprocess.Popen(
        [sys.executable, "-m", "fastproxy.devserver", "--listen", f"127.0.0.1:{upstream_port}"]
    )
    proxy = subprocess.Popen([sys.executable, "-m", "fastproxy", "run", "--config", config_path])
    try:
        if not _wait_ready(f"http://127.0.0.1:{admin_port}/readyz", proxy):
            print("fastproxy demo: the proxy did not become ready (see the log above)", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{port}"
        print(
            f"""
fastproxy demo is running.
  proxy     {base}   (2 workers, config: {config_path})
  upstream  http://127.0.0.1:{upstream_port}   (built-in)
  admin     http://127.0.0.1:{admin_port}

Try:
  curl -i {base}/hello                        # proxied, with X-Request-Id
  curl -s {base}/echo -d 'hi'                 # what the upstream received (X-Forwarded-*)
  curl -s {base}/echo -H 'Connection: X-Secret' -H 'X-Secret: 1'   # hop-by-hop headers stripped
  curl -s -o /dev/null -w '%{{size_download}}\\n' {base}/bytes/5242880   # 5 MB streamed
  curl -i {base}/nowhere                      # 404 with a JSON error
  curl -i {base}/api/public/../../echo --path-as-is   # 400: dot segments refused
  curl -s http://127.0.0.1:{admin_port}/readyz
  kill -HUP {proxy.pid}                       # reload the config without dropping a connection

Ctrl-C stops the demo.""",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            proxy.wait()
        return 0
    finally:
        _stop(proxy)
        _stop(upstream)
