"""Smoke test: the course opens in JupyterLab from the project's environment and its kernel imports the library.

Starts ``python -m jupyterlab`` headless on a free 127.0.0.1 port with a known token, the repository
as root and throwaway config/runtime/data folders; then, over the REST API and a kernel websocket:

1. ``GET /api/contents/notebooks`` lists the course notebooks;
2. ``POST /api/kernels`` starts a ``python3`` kernel;
3. an ``execute_request`` on ``/api/kernels/<id>/channels`` prints ``involution_edu.__version__``;
4. the kernel is deleted and the server shut down with ``POST /api/shutdown``.

Everything is bounded in time; the server process is killed in ``finally`` if it did not stop.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import websocket  # websocket-client, a dependency of jupyter_server

import involution_edu

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 40.0
REQUEST_TIMEOUT_S = 10.0
EXECUTE_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (bind to port 0 and let the OS choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """Talks to the running server at ``http://127.0.0.1:<port>`` with the token in every request."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://{HOST}:{port}"
        self.token = token

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            payload = response.read()
        return json.loads(payload) if payload else None


def wait_until_up(server: Server, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            status = server.request("GET", "/api/status")
            if isinstance(status, dict):
                return
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            last_error = error
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {STARTUP_TIMEOUT_S:.0f} s (last error: {last_error}):\n{log_path.read_text()[-3000:]}")


def execute_in_kernel(server: Server, kernel_id: str, code: str) -> str:
    """Run ``code`` through the kernel's websocket; return everything it printed to stdout."""
    url = f"ws://{HOST}:{server.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels?token={server.token}"
    connection = websocket.create_connection(url, timeout=EXECUTE_TIMEOUT_S)
    try:
        msg_id = uuid.uuid4().hex
        connection.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "smoke-test",
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                    "buffers": [],
                    "channel": "shell",
                }
            )
        )
        stdout, errors, replied, idle = [], [], False, False
        deadline = time.monotonic() + EXECUTE_TIMEOUT_S
        while not (replied and idle):
            assert time.monotonic() < deadline, f"no reply from the kernel within {EXECUTE_TIMEOUT_S:.0f} s"
            message = json.loads(connection.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content.get("name") == "stdout":
                stdout.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                replied = True
                assert content["status"] == "ok", f"execution failed: {content} {errors}"
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        assert not errors, errors
        return "".join(stdout)
    finally:
        connection.close()


def test_course_opens_in_jupyterlab_and_the_kernel_imports_the_library(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for variable, folder in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
        ("IPYTHONDIR", "ipython"),
    ):
        (tmp_path / folder).mkdir()
        env[variable] = str(tmp_path / folder)
    env.pop("JUPYTER_TOKEN", None)
    log_path = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={REPO}",
        "--ServerApp.open_browser=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI runners often run as root
        command.append("--allow-root")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    server = Server(port, token)
    try:
        wait_until_up(server, process, log_path)

        listing = server.request("GET", "/api/contents/notebooks")
        assert listing["type"] == "directory"
        listed = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
        on_disk = {path.name for path in (REPO / "notebooks").glob("*.ipynb")}
        assert on_disk, "no course notebooks on disk"
        assert on_disk <= listed, f"JupyterLab does not list {sorted(on_disk - listed)}"

        with pytest.raises(urllib.error.HTTPError) as refused:  # the token really is required
            urllib.request.urlopen(f"{server.base}/api/contents/notebooks", timeout=REQUEST_TIMEOUT_S)
        assert refused.value.code == 403

        kernel = server.request("POST", "/api/kernels", {"name": "python3"})
        assert kernel["name"] == "python3"
        try:
            printed = execute_in_kernel(server, kernel["id"], "import involution_edu\nprint(involution_edu.__version__)")
            assert printed.strip() == involution_edu.__version__
        finally:
            server.request("DELETE", f"/api/kernels/{kernel['id']}")
        assert all(k["id"] != kernel["id"] for k in server.request("GET", "/api/kernels"))

        server.request("POST", "/api/shutdown")
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        assert process.returncode == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
