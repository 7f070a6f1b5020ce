"""JupyterLab works the way readers use it: `jupyter lab` from the venv serves the notebooks, and a
kernel started from it runs the venv's python and imports `cgt`.

The server is started headless on a free port with a random token and always terminated, even when
an assertion fails. Everything goes through its REST API and kernel websocket, as the browser does.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import websocket

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running the tests: its jupyter and its python
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A running `jupyter lab` rooted at notebooks/; yields (base_url, token); terminated afterwards."""
    port, token = free_port(), secrets.token_hex(16)
    jupyter = BIN / "jupyter"
    cmd = ([str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]) + [
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={REPO / 'notebooks'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root; the server refuses otherwise
    # Runtime/config in tmp_path: no connection files or settings written into the user's home.
    env = os.environ | {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                        "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {proc.returncode}:\n{_read(log)}")
            try:
                if requests.get(f"{base}/api/status", headers=_auth(token), timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {STARTUP_TIMEOUT:.0f} s:\n{_read(log)}")
            time.sleep(0.25)
        yield base, token
    finally:
        proc.terminate()  # SIGTERM: the server shuts its kernels down and exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-4000:]


def execute(base: str, token: str, kernel_id: str, code: str, timeout: float = 30.0) -> tuple[str, str]:
    """Run `code` through the kernel's websocket channel; return (stdout text, execute_reply status)."""
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
                                     f"?token={token}", timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "date": datetime.now(timezone.utc).isoformat(),
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        # The reply comes on the shell channel, the output on iopub: their order is not guaranteed, so
        # wait for both the reply and iopub's "idle" for this request (sent after all its output).
        stdout, status, idle, deadline = "", None, False, time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # status messages of the kernel's own start-up, and the like
            kind = msg["header"]["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout += msg["content"]["text"]
            elif kind == "error":
                stdout += "\n".join(msg["content"]["traceback"])
            elif kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            if status is not None and idle:
                return stdout, status
        raise TimeoutError(f"no execute_reply and idle status within {timeout} s; stdout so far: {stdout!r}")
    finally:
        ws.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jupyterlab_serves_notebooks_and_runs_the_venv_kernel(lab):
    base, token = lab
    auth = _auth(token)

    # The token is required: without it the contents API refuses.
    assert requests.get(f"{base}/api/contents/", timeout=10).status_code == 403

    contents = requests.get(f"{base}/api/contents/", headers=auth, timeout=10).json()
    names = [item["name"] for item in contents["content"]]
    assert "00_data.ipynb" in names, names

    specs = requests.get(f"{base}/api/kernelspecs", headers=auth, timeout=10).json()
    argv0 = [s["spec"]["argv"][0] for s in specs["kernelspecs"].values()]
    # "python" in a spec is replaced by the server's own interpreter (jupyter_client), i.e. the venv's.
    assert any(a in ("python", "python3") or Path(a).parent == BIN for a in argv0), argv0

    r = requests.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"}, timeout=30)
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        stdout, status = execute(base, token, kernel_id, "import cgt, sys; print(sys.executable)")
        assert status == "ok", stdout
        assert Path(stdout.strip()).parent == BIN, f"kernel runs {stdout.strip()}, not the venv in {BIN}"
    finally:
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=auth, timeout=10)
