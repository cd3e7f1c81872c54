"""Helpers shared by the e2e tests: kubectl, and waiting on conditions with deadlines."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flagops_dev.devcluster import ControlPlane

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    logs: Path | None  # None on a cluster this test run did not start
    plane: ControlPlane | None = None  # ours, to restart components in fault tests


class KubectlError(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        self.stderr = result.stderr
        self.returncode = result.returncode


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(list(args), result)
    return result


def kubectl_json(kubeconfig: Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)


def wait_until(what: str, probe: Callable[[], T | None], *, timeout: float = 90, interval: float = 0.25) -> T:
    """Poll until `probe` returns something truthy; fail with `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


class Endpoint:
    """A real HTTP server on loopback whose answers a test sets per path: what `http` and
    `invariant` checks probe, and what webhooks post to. Records what it served and received."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.hits: list[str] = []
        self.authorizations: list[str] = []  # every Authorization header received
        self.posts: list[tuple[str, Any]] = []
        self.delays: dict[str, float] = {}
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.hits.append(self.path)
                if self.headers.get("Authorization"):
                    endpoint.authorizations.append(self.headers["Authorization"])
                time.sleep(endpoint.delays.get(self.path, 0))
                status, body = endpoint.routes.get(self.path, (404, {"error": "no such route"}))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                time.sleep(endpoint.delays.get(self.path, 0))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                endpoint.posts.append((self.path, json.loads(body) if body else None))
                status, answer = endpoint.routes.get(self.path, (200, {"ok": True}))
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
