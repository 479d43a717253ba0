"""nginx as the benchmark's upstream (a fixed small JSON answer) and as the reference proxy.

Both run in the foreground (the upstream with one worker, the proxy with `workers`), from a private
prefix directory that holds their config, pid file, error log and temp paths, so that nothing
touches the system's nginx.
"""

import json
import re
import shutil
import subprocess
from abc import abstractmethod
from pathlib import Path

from bench import procstat
from bench.targets import ServerTarget, Target

# About 1 KB of JSON with fields to mask (the masking benchmark): MASK_FIELDS finds 7 values.
JSON_1K_PATH = "/json1k"
JSON_1K = json.dumps(
    {
        "id": 7,
        "owner": {"name": "Alice Example", "email": "alice@example.com", "phone": "+1-202-555-0143"},
        "ssn": "078-05-1120",
        "status": "active",
        "created": "2026-11-28T03:00:00Z",
        "items": [
            {"sku": f"SKU-{i:04d}", "qty": i, "price": 19.99 + i, "card": {"number": "4111111111111111"}}
            for i in range(5)
        ],
        "notes": "x" * 447,
    },
    separators=(",", ":"),
)
MASK_FIELDS = ["ssn", "owner.email", "items[*].card.number"]

# About 100 bytes, like a small API answer; single quotes would end the nginx string.
UPSTREAM_BODY = (
    '{"ok":true,"service":"bench-upstream","items":[1,2,3,4,5],"note":"fixed small body for benchmarks"}'
)

_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # nginx closes a client connection after 1000 requests by default; wrk would then pay for
    # reconnects that the other targets may not, so every connection lives for the whole run.
    keepalive_requests 1000000;
{body}
}}
"""

_STATIC_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{payload}';
        }}
        location = {json_1k_path} {{
            default_type application/json;
            return 200 '{json_1k}';
        }}
    }}"""

_PROXY_BODY = """\
    upstream bench_upstream {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def nginx_path() -> str | None:
    return shutil.which("nginx")


def nginx_version() -> str | None:
    path = nginx_path()
    if path is None:
        return None
    # nginx prints "nginx version: nginx/1.22.1" on stderr.
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"nginx/(\S+)", proc.stderr + proc.stdout)
    return match.group(1) if match else "unknown"


class NginxTarget(ServerTarget):
    """A foreground nginx master with `workers` worker processes; subclasses give the `http {}`
    contents."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.workers: int = 1

    @abstractmethod
    def http_body(self, port: int) -> str:
        """The contents of the `http {}` block after the shared settings."""

    def command(self, workdir: Path, port: int) -> list[str]:
        nginx = nginx_path()
        if nginx is None:
            raise FileNotFoundError("nginx is not installed")
        # Workers may run as an unprivileged user when started as root; they must reach the
        # temp paths under this directory.
        workdir.chmod(0o755)
        conf = workdir / "nginx.conf"
        conf.write_text(_CONF.format(prefix=workdir, workers=self.workers, body=self.http_body(port)))
        return [nginx, "-p", str(workdir), "-c", str(conf)]

    def worker_pids(self) -> list[int]:
        root = self.root_pid()
        if root is None:
            return []
        # nginx retitles its processes; only "worker process" ones serve traffic.
        return [
            pid
            for pid in procstat.children(root)
            if procstat.cmdline(pid).startswith("nginx: worker process")
        ]

    def expected_workers(self) -> int | None:
        return self.workers  # worker_processes


class NginxUpstream(NginxTarget):
    """The upstream every target shares: a fixed small JSON answer to any request."""

    def __init__(self) -> None:
        super().__init__("upstream-nginx")

    def http_body(self, port: int) -> str:
        return _STATIC_BODY.format(
            port=port, payload=UPSTREAM_BODY, json_1k_path=JSON_1K_PATH, json_1k=JSON_1K
        )


class NginxProxy(NginxTarget):
    """The reference: nginx as a plain, well-tuned reverse proxy, upstream connections pooled."""

    def __init__(self, upstream: Target, name: str = "nginx") -> None:
        super().__init__(name)
        self._upstream = upstream

    def http_body(self, port: int) -> str:
        authority = self._upstream.url.split("//", 1)[1].rstrip("/")
        return _PROXY_BODY.format(port=port, upstream=authority)
