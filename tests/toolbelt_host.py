"""A stand-in for the invoker's toolbelt dispatcher, for the runtimes' toolbelt unit tests.

It speaks the wire contract of docs/runner-protocol.md ("Toolbelt methods") and records
every call, so a test can assert exactly what a lambda's client sent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fnbus.runner_protocol import RunnerConnection, RunResult, ToolbeltCallError


class FakeHost:
    """Answers toolbelt calls like the host would and records them.

    http.request: the URL path picks the answer — ``/status/<n>`` that status
    with a JSON body, ``/text`` a non-JSON body, ``/empty`` no body,
    ``/binary`` bytes 00 ff 10 (base64 on the wire), ``/redirected`` a final
    URL other than the requested one; any other path echoes the request as
    JSON. Host ``blocked.example`` fails ``not_allowlisted``, ``busy.example``
    ``rate_limited``, ``down.example`` ``connect_error``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.secrets: dict[str, str] = {"crm-token": "s3cr3t"}

    def of(self, method: str) -> list[list[Any]]:
        return [args for m, args in self.calls if m == method]

    async def __call__(self, method: str, args: list[Any]) -> Any:
        self.calls.append((method, args))
        if method in ("http.request", "lp.request"):
            return self.http(args[0])
        if method == "secret.read":
            if args[0] not in self.secrets:
                raise ToolbeltCallError("secret_not_found", f"there is no secret {args[0]!r}")
            return {"key": args[0], "value": self.secrets[args[0]]}
        if method == "secret.update":
            self.secrets[args[0]["key"]] = args[0]["value"]
            return dict(args[0])
        if method == "csds.resolve":
            if args[0] == "nope":
                raise ToolbeltCallError("service_not_found", "no service nope")
            return {"service": args[0], "domain": f"{args[0].lower()}.lp.example"}
        if method == "ping":
            return {"pong": args}
        if method.startswith("context."):
            return {"method": method, "args": args}
        raise ToolbeltCallError("unknown_method", f"toolbelt method {method!r} is not available")

    def http(self, req: dict[str, Any]) -> dict[str, Any]:
        url = req.get("url") or f"https://{req['service']}.lp.example{req['path']}"
        parts = urlsplit(url)
        if parts.hostname == "blocked.example":
            raise ToolbeltCallError("not_allowlisted", "blocked.example is not on the domain allowlist")
        if parts.hostname == "busy.example":
            raise ToolbeltCallError("rate_limited", "more than 20 requests/s for this function")
        if parts.hostname == "down.example":
            raise ToolbeltCallError("connect_error", "cannot connect to down.example:443")
        answer: dict[str, Any] = {
            "status": 200,
            "headers": {"content-type": "application/json", "x-seen": "a, b"},
            "body": json.dumps({"echo": req}),
            "body_encoding": "utf8",
            "url": url,
        }
        if parts.path.startswith("/status/"):
            answer["status"] = int(parts.path.split("/")[2])
            answer["body"] = json.dumps({"error": "nope", "status": answer["status"]})
        elif parts.path == "/text":
            answer["body"] = "plain text, not JSON"
            answer["headers"] = {"content-type": "text/plain"}
        elif parts.path == "/empty":
            answer["status"], answer["body"] = 204, ""
        elif parts.path == "/binary":
            answer["body"] = base64.b64encode(b"\x00\xff\x10").decode()
            answer["body_encoding"] = "base64"
        elif parts.path == "/redirected":
            answer["url"] = "https://other.example/final"
        elif parts.path.endswith("/conversations/conversation/search"):
            wanted = json.loads(req["body"])["conversationId"]
            records = [] if wanted == "missing" else [{"info": {"conversationId": wanted}}]
            answer["body"] = json.dumps({"_metadata": {"count": len(records)}, "conversationHistoryRecords": records})
        return answer


class _RunnerProcess:
    """One runner process listening on a socket in its own temporary directory."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="fntb-", dir="/tmp")
        self.socket = os.path.join(self.dir, "runner.sock")
        self.popen = subprocess.Popen(command, env={**env, "FNBUS_RUNNER_SOCKET": self.socket},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


#: ``await run(code, input, host=None)`` → (the lambda's result value, the fake host).
Run = Callable[..., Awaitable[tuple[Any, FakeHost]]]


@contextlib.asynccontextmanager
async def lambda_runs(command: list[str], runtime: str, env: dict[str, str]) -> AsyncIterator[Run]:
    """Runs each lambda in a fresh runner (``command``), answering its toolbelt calls with a
    :class:`FakeHost`; every runner is stopped on exit."""
    procs: list[_RunnerProcess] = []
    conns: list[RunnerConnection] = []

    async def _run(code: str, input: Any = None, host: FakeHost | None = None) -> tuple[Any, FakeHost]:
        proc = _RunnerProcess(command, env)
        procs.append(proc)
        conn = RunnerConnection()
        conns.append(conn)
        await conn.connect(proc.socket, timeout_s=5)
        await conn.init(code=code, runtime=runtime, account_id="le12345678", lambda_id="lambda-1")
        host = host or FakeHost()
        result: RunResult = await conn.run("act-1", input or {}, toolbelt=host)
        assert result.ok, result.error
        return result.value, host

    try:
        yield _run
    finally:
        for conn in conns:
            await conn.close()
        for proc in procs:
            proc.stop()
