"""``fnbus invoke --local``: the real runners as local processes, no platform.

Each test builds a project with ``fnbus init`` in a temporary directory and runs the
``fnbus`` command as a subprocess, as a developer would: secrets come from settings.json,
HTTP goes through the allowlist of settings.json to a server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

NODE_CODE = """\
async function lambda(input, callback) {
  const { Toolbelt } = require('lp-faas-toolbelt');
  const secret = await Toolbelt.SecretClient().readSecret('api-token');
  const http = Toolbelt.HTTPClient();
  const allowed = await http({ method: 'GET', uri: input.payload.allowed, json: true });
  let refused = null;
  try {
    await http({ method: 'GET', uri: input.payload.refused });
  } catch (err) {
    refused = String(err.message || err);
  }
  await Toolbelt.SecretClient().updateSecret({ key: 'counter', value: 'two' });
  console.info('called', input.payload.allowed);
  callback(null, { secret: secret.value, allowed, refused });
}
"""

PYTHON_CODE = '''\
from lp_faas_toolbelt import Toolbelt


async def handler(input):
    secret = await Toolbelt.secret_client().read_secret("api-token")
    http = Toolbelt.http_client()
    allowed = await http(input["payload"]["allowed"], json=True)
    try:
        await http(input["payload"]["refused"])
        refused = None
    except Exception as exc:
        refused = str(exc)
    await Toolbelt.secret_client().update_secret({"key": "counter", "value": "two"})
    print("called", input["payload"]["allowed"])
    return {"secret": secret["value"], "allowed": allowed, "refused": refused}
'''


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "from": "local server"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def fnbus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(cwd / ".config"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fnbus.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=50)


def make_project(tmp_path: Path, runtime: str, code: str) -> Path:
    r = fnbus(tmp_path, "init", "fn", "--runtime", runtime)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "functions" / "fn"
    (folder / ("index.js" if runtime == "nodejs" else "main.py")).write_text(code)
    settings = {"secrets": {"api-token": "s3cr3t", "counter": "one"}, "allowlist": ["127.0.0.1"]}
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    return tmp_path


def test_init_writes_the_layout_with_typings(tmp_path: Path) -> None:
    r = fnbus(tmp_path, "init", "hello")
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "functions" / "hello" / "config.json").read_text())
    assert config == {"name": "hello", "description": "", "event": None, "runtime": "nodejs",
                      "env": {}, "dependencies": {}}
    assert (tmp_path / "functions" / "hello" / "index.js").read_text().startswith(
        "function lambda(input, callback)")
    typings = tmp_path / "types" / "lp-faas-toolbelt" / "index.d.ts"
    assert "SecretClient" in typings.read_text()
    jsconfig = json.loads((tmp_path / "jsconfig.json").read_text())
    assert jsconfig["compilerOptions"]["paths"]["lp-faas-toolbelt"] == ["./types/lp-faas-toolbelt"]
    assert json.loads((tmp_path / "settings.json").read_text()) == {"secrets": {}, "allowlist": []}
    r = fnbus(tmp_path, "init", "hello")
    assert r.returncode == 2 and "exists already" in r.stderr


@pytest.mark.parametrize("runtime", [
    pytest.param("nodejs", marks=pytest.mark.skipif(shutil.which("node") is None,
                                                     reason="needs node on PATH")),
    "python",
])
def test_invoke_local_serves_secrets_and_the_allowlist(tmp_path: Path, server: int,
                                                        runtime: str) -> None:
    project = make_project(tmp_path, runtime, NODE_CODE if runtime == "nodejs" else PYTHON_CODE)
    payload = {"allowed": f"http://127.0.0.1:{server}/ping",
               "refused": f"http://localhost:{server}/ping"}
    r = fnbus(project, "invoke", "fn", "--local", "--json", "--payload", json.dumps(payload))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "SUCCEEDED"
    result = out["result"]
    assert result["secret"] == "s3cr3t"
    assert result["allowed"] == {"path": "/ping", "from": "local server"}
    assert result["refused"] is not None and "localhost" in result["refused"]
    assert any("called" in line["message"] for line in out["logs"])
    # the update went to the file
    assert json.loads((project / "settings.json").read_text())["secrets"]["counter"] == "two"


def test_invoke_local_failure_exits_6(tmp_path: Path) -> None:
    project = make_project(tmp_path, "python", "def handler(input):\n    raise ValueError('boom')\n")
    r = fnbus(project, "invoke", "fn", "--local")
    assert r.returncode == 6
    assert "boom" in r.stderr


def test_invoke_local_of_an_unknown_function_exits_3(tmp_path: Path) -> None:
    fnbus(tmp_path, "init")
    r = fnbus(tmp_path, "invoke", "nope", "--local")
    assert r.returncode == 3 and "no function 'nope'" in r.stderr


def test_exit_codes_without_a_platform(tmp_path: Path) -> None:
    assert fnbus(tmp_path, "no-such-command").returncode == 1
    fnbus(tmp_path, "init", "fn")
    r = fnbus(tmp_path, "invoke", "fn", "--local", "--payload", "{bad")
    assert r.returncode == 1 and "--payload is not valid JSON" in r.stderr
    r = fnbus(tmp_path, "get", "functions")
    assert r.returncode == 4 and "fnbus login" in r.stderr
    # nothing listens on port 9 of loopback: unreachable is exit 5
    r = fnbus(tmp_path, "login", "--url", "http://127.0.0.1:9", "--account", "a", "--api-key", "k")
    assert r.returncode == 5 and "cannot reach" in r.stderr
    assert not (tmp_path / ".config" / "fnbus" / "config.json").exists()


def test_operator_commands_keep_their_parser(tmp_path: Path) -> None:
    r = fnbus(tmp_path, "serve", "--help")
    assert r.returncode == 0 and "usage: fnbus serve" in r.stdout
    r = fnbus(tmp_path, "admin", "rotate-secrets-key", "--help")
    assert r.returncode == 0 and "--reseal-only" in r.stdout
    r = fnbus(tmp_path, "local", "--help")
    assert r.returncode == 0 and "{start,stop,status}" in r.stdout
