"""``fnbus invoke --local``: the real runner as a local process, the toolbelt from settings.json.

The function runs in ``libs/runtimes/node/runner.js`` or ``libs/runtimes/python/runner.py``
— the same runner the platform's containers run — started here with a unix socket in a
temporary directory; this process is its host (:class:`fnbus.runner_protocol.RunnerConnection`)
and answers its toolbelt calls:

- ``secret.read`` / ``secret.update``: the ``secrets`` object of settings.json (an update
  is written back to the file);
- ``http.request``: the egress engine of the invoker (:mod:`fnbus.egress`) with the
  ``allowlist`` of settings.json; loopback addresses are exempt from the private-address
  rule so that a developer can call a server on their own machine — if it is allowlisted.

No sandbox: the code runs with the developer's rights, like ``node index.js`` would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import fnbus
from fnbus.devcli import project
from fnbus.devcli.errors import CliError, Exit
from fnbus.egress import Egress, EgressError, EgressPolicy
from fnbus.runner_protocol import RunnerConnection, RunnerError, RunnerInitError, ToolbeltCallError

RUNTIMES_DIR = Path(fnbus.__file__).resolve().parents[1] / "runtimes"
LOCAL_ACCOUNT = "local"
TIME_LIMIT_S = 30.0
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def runner_command(runtime: str) -> list[str]:
    if runtime == "python":
        return [sys.executable, str(RUNTIMES_DIR / "python" / "runner.py")]
    node = shutil.which("node")
    if node is None:
        raise CliError("`invoke --local` of a nodejs function needs node on PATH")
    return [node, str(RUNTIMES_DIR / "node" / "runner.js")]


class LocalToolbelt:
    """Serves one invocation's toolbelt calls from settings.json."""

    def __init__(self, root: Path, egress: Egress, deadline: float) -> None:
        self.root = root
        self.egress = egress
        self.deadline = deadline

    async def __call__(self, method: str, args: list[Any]) -> Any:
        from services.invoker.toolbelt_http import encode_response, parse_http_request

        if method == "ping":
            return {"pong": args}
        if method == "secret.read":
            key = args[0] if args else None
            secrets = project.load_settings(self.root)["secrets"]
            if not isinstance(key, str) or key not in secrets:
                raise ToolbeltCallError("secret_not_found",
                                        f"secret {key} not found in {project.SETTINGS}")
            return {"key": key, "value": str(secrets[key])}
        if method == "secret.update":
            item = args[0] if args and isinstance(args[0], dict) else {}
            key, value = item.get("key"), item.get("value")
            settings = project.load_settings(self.root)
            if not isinstance(key, str) or key not in settings["secrets"]:
                raise ToolbeltCallError("secret_not_found",
                                        f"secret {key} not found in {project.SETTINGS}")
            if not isinstance(value, str):
                raise ToolbeltCallError("bad_request", "the secret's value must be a string")
            settings["secrets"][key] = value
            project.write_json(self.root / project.SETTINGS, settings)
            return {"key": key, "value": value}
        if method == "http.request":
            request, encoding, _ = parse_http_request(args)
            allowlist = [str(d) for d in project.load_settings(self.root)["allowlist"]]
            try:
                response = await self.egress.fetch(request, allowlist=allowlist,
                                                   rate_key="local", deadline=self.deadline)
            except EgressError as exc:
                raise ToolbeltCallError(exc.code, exc.message) from None
            return encode_response(response.status, response.headers, response.body,
                                   response.url, encoding)
        raise ToolbeltCallError("not_available_locally",
                                f"toolbelt method {method!r} is not available in `invoke --local`")


async def invoke_local(root: Path, fn: project.LocalFunction, body: dict[str, Any], sock: str
                       ) -> dict[str, Any]:
    """Run ``fn`` once with ``body`` in the runner listening on ``sock``; the API's invoke shape."""
    activation = f"local-{uuid.uuid4().hex[:12]}"
    policy = EgressPolicy(exempt_cidrs=LOOPBACK)
    async with Egress(policy) as egress, RunnerConnection() as conn:
        await conn.connect(sock, timeout_s=10)
        env_vars = {str(k): str(v) for k, v in (fn.config.get("env") or {}).items()}
        env_vars["BRAND_ID"] = LOCAL_ACCOUNT
        try:
            init = await conn.init(code=fn.code, runtime="node" if fn.runtime == "nodejs" else
                                   "python", account_id=LOCAL_ACCOUNT, lambda_id=fn.name,
                                   env=env_vars)
        except RunnerInitError as exc:
            return {"activation_id": activation, "outcome": "CODING_FAILURE",
                    "logs": [_log(e) for e in exc.logs],
                    "error": {"code": "com.liveperson.faas.handler.runtime-exception",
                              "message": f"{exc.error_type}: {exc.message}"
                              + (f" (line {exc.line})" if exc.line else "")}}
        logs = [_log(e) for e in init.logs]
        deadline = time.monotonic() + TIME_LIMIT_S
        toolbelt = LocalToolbelt(root, egress, deadline)
        try:
            result = await asyncio.wait_for(
                conn.run(activation, body, toolbelt=toolbelt,
                         deadline_ms=int(time.time() * 1000 + TIME_LIMIT_S * 1000)),
                TIME_LIMIT_S)
        except TimeoutError:
            return {"activation_id": activation, "outcome": "TIMEOUT", "logs": logs,
                    "error": {"code": "com.liveperson.faas.handler.executiontime-exceeded",
                              "message": f"the function ran longer than {TIME_LIMIT_S:g} s"}}
        logs += [_log(e) for e in result.logs]
        answer: dict[str, Any] = {"activation_id": activation,
                                  "duration_ms": result.duration_ms, "logs": logs}
        if result.ok:
            return {**answer, "outcome": "SUCCEEDED", "result": result.value}
        error = result.error
        kind = error.kind.value if error else "runtime-exception"
        return {**answer, "outcome": "CODING_FAILURE",
                "error": {"code": f"com.liveperson.faas.handler.{kind}",
                          "message": error.message if error else "failed"}}


def _log(entry: Any) -> dict[str, Any]:
    return {"level": entry.level.value, "message": entry.message, "ts_ms": entry.ts_ms}


def run_local(root: Path, fn: project.LocalFunction, body: dict[str, Any]) -> dict[str, Any]:
    """Start the runner of ``fn``'s runtime with a socket in a temporary directory, invoke
    once, stop it."""
    workdir = Path(tempfile.mkdtemp(prefix="fnbus-local-"))
    sock = str(workdir / "runner.sock")
    stderr_path = workdir / "stderr"
    # `npm install` in the function's directory or the project's root is found by require().
    node_path = [str(fn.dir / "node_modules"), str(root / "node_modules")]
    if os.environ.get("NODE_PATH"):
        node_path.append(os.environ["NODE_PATH"])
    env = {**os.environ, "FNBUS_RUNNER_SOCKET": sock, "NODE_PATH": os.pathsep.join(node_path)}
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(runner_command(fn.runtime), env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, cwd=fn.dir)
    try:
        return asyncio.run(invoke_local(root, fn, body, sock))
    except RunnerError as exc:
        detail = stderr_path.read_text(errors="replace")[-2000:].strip()
        raise CliError(f"the {fn.runtime} runner failed: {exc}" + (f"\n{detail}" if detail else ""),
                       Exit.SERVER) from None
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
