"""The Node.js runner (libs/runtimes/node/runner.js) as a local subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fnbus.runner_protocol import (
    MAX_FRAME_BYTES,
    ConnectionState,
    ErrorKind,
    LogLevel,
    LogLimit,
    RunnerConnection,
    RunnerInitError,
    RunnerRejected,
    ToolbeltCallError,
    encode_frame,
    read_frame,
)

RUNNER = Path(__file__).resolve().parents[2] / "libs" / "runtimes" / "node" / "runner.js"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node on PATH"),
    # A runner bug usually shows up as a missing result: fail fast, not at 120 s.
    pytest.mark.timeout(10),
]


class Proc:
    """A runner subprocess listening in its own temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fnbn-", dir="/tmp")
        self.socket = os.path.join(self.dir, "runner.sock")
        self._stderr = open(os.path.join(self.dir, "stderr"), "wb")  # noqa: SIM115
        env = {**os.environ, "FNBUS_RUNNER_SOCKET": self.socket}
        self.popen = subprocess.Popen(["node", str(RUNNER)], env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


Start = Callable[..., Awaitable[RunnerConnection]]


async def open_raw(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare connection past ``ready``, retrying while the runner still sees the
    previous connection (it answers ``busy`` until it has processed the close)."""
    for _ in range(100):
        reader, writer = await asyncio.open_unix_connection(path)
        first = await read_frame(reader)
        if first["type"] == "ready":
            return reader, writer
        assert first["code"] == "busy", first
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.02)
    raise AssertionError("the runner stayed busy")


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(code, **init_kwargs)`` → a connection to an initialised runner."""
    procs: list[Proc] = []
    conns: list[RunnerConnection] = []

    async def _start(code: str | None = None, **init: Any) -> RunnerConnection:
        proc = Proc()
        procs.append(proc)
        conn = RunnerConnection()
        conns.append(conn)
        await conn.connect(proc.socket, timeout_s=5)
        if code is not None:
            init.setdefault("account_id", "le12345678")
            init.setdefault("lambda_id", "lambda-1")
            await conn.init(code=code, runtime="node", **init)
        return conn

    yield _start
    for conn in conns:
        await conn.close()
    for proc in procs:
        proc.stop()


# --------------------------------------------------------------------------- results

HELLO = """\
function lambda(input, callback) {
  callback(null, { message: `Hello ${input.payload.name}` });
}
"""


async def test_hello_world(start: Start) -> None:
    conn = await start(HELLO)
    assert conn.info is not None and conn.info.runtime == "node"
    result = await conn.run("act-1", {"timestamp": 1, "headers": [], "payload": {"name": "W"}})
    assert result.ok, result.error
    assert result.value == {"message": "Hello W"}
    assert result.error is None and result.logs == [] and not result.logs_truncated
    assert result.duration_ms >= 0


async def test_input_is_passed_exactly(start: Start) -> None:
    conn = await start("function lambda(input, callback) { callback(null, input); }")
    payload = {"a": [1, 2.5, None, True, {"ü": "✓ 🎉"}], "empty": {}, "s": ""}
    assert (await conn.run("a1", payload)).value == payload
    assert (await conn.run("a2", None)).value is None


async def test_callback_error_is_a_custom_failure(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  if (input.s) { callback('plain string'); return; }\n"
        "  callback(new Error('payment declined'));\n}"
    )
    result = await conn.run("a1", {})
    assert not result.ok and result.value is None
    assert result.error is not None
    assert result.error.kind is ErrorKind.CUSTOM_FAILURE
    assert result.error.message == "payment declined" and result.error.name == "Error"
    result = await conn.run("a2", {"s": 1})
    assert result.error is not None and result.error.message == "plain string"


async def test_thrown_error_is_a_runtime_exception(start: Start) -> None:
    conn = await start("function lambda(input, callback) {\n  const x = undefined;\n  return x.field;\n}")
    result = await conn.run("a1", {})
    assert result.error is not None
    assert result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.name == "TypeError"
    assert result.error.stack is not None and "index.js:3" in result.error.stack
    assert "runner.js" not in result.error.stack


async def test_async_function_result_and_rejection(start: Start) -> None:
    conn = await start(
        "async function lambda(input, callback) {\n"
        "  await new Promise((r) => setTimeout(r, 5));\n"
        "  if (input.fail) throw new RangeError('too far');\n"
        "  return { doubled: input.n * 2 };\n}"
    )
    result = await conn.run("a1", {"n": 21})
    assert result.ok and result.value == {"doubled": 42}
    result = await conn.run("a2", {"fail": True})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.name == "RangeError" and result.error.message == "too far"


async def test_async_function_without_value_waits_for_its_callback(start: Start) -> None:
    conn = await start("async function lambda(input, callback) {\n  setTimeout(() => callback(null, 'late'), 20);\n}")
    assert (await conn.run("a1", {})).value == "late"


async def test_async_function_without_callback_parameter_resolves_empty(start: Start) -> None:
    conn = await start("async function lambda(input) {}")
    result = await conn.run("a1", {})
    assert result.ok and result.value is None


async def test_unhandled_rejection_fails_the_invocation_and_the_runner_survives(
    start: Start,
) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  if (input.ok) { callback(null, 'fine'); return; }\n"
        "  Promise.reject(new Error('nobody catches me'));\n}"
    )
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.message == "nobody catches me"
    assert (await conn.run("a2", {"ok": True})).value == "fine"


async def test_uncaught_exception_in_a_timer_fails_the_invocation(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  if (input.ok) { callback(null, 'fine'); return; }\n"
        "  setTimeout(() => { throw new Error('from a timer'); }, 5);\n}"
    )
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.message == "from a timer"
    assert (await conn.run("a2", {"ok": True})).value == "fine"


async def test_only_the_first_completion_counts(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  callback(null, 'first');\n"
        "  callback(null, 'second');\n"
        "  callback(new Error('third'));\n"
        "  setTimeout(() => { throw new Error('later'); }, 1);\n"
        "  throw new Error('after');\n}"
    )
    assert (await conn.run("a1", {})).value == "first"
    await asyncio.sleep(0.05)  # let the timer fire between invocations
    assert (await conn.run("a2", {})).value == "first"


async def test_never_calling_back_gives_no_result(start: Start) -> None:
    conn = await start("function lambda(input, callback) { console.log('waiting'); }")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.run("a1", {}), 0.5)
    # The runner is still busy with a1: the host must discard this container.
    assert conn.state is ConnectionState.CLOSED


async def test_result_that_is_not_json_is_a_runtime_exception(start: Start) -> None:
    conn = await start("function lambda(input, callback) { callback(null, 10n); }")
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert "JSON" in result.error.message


async def test_warm_reuse_keeps_module_state(start: Start) -> None:
    conn = await start("function lambda(input, callback) { count += 1; callback(null, count); }\nlet count = 0;\n")
    assert [(await conn.run(f"a{i}", {})).value for i in range(3)] == [1, 2, 3]


# --------------------------------------------------------------------------- logs


async def test_console_levels_become_log_frames(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  console.debug('d'); console.info('i %d', 5); console.log('l', {a: 1});\n"
        "  console.warn('w'); console.error('e');\n"
        "  callback(null, 1);\n}"
    )
    streamed: list[Any] = []
    result = await conn.run("a1", {}, on_log=streamed.append)
    assert [(e.level, e.message) for e in result.logs] == [
        (LogLevel.DEBUG, "d"),
        (LogLevel.INFO, "i 5"),
        (LogLevel.LOG, "l { a: 1 }"),
        (LogLevel.WARN, "w"),
        (LogLevel.ERROR, "e"),
    ]
    assert streamed == result.logs
    assert all(e.ts_ms > 1_600_000_000_000 for e in result.logs)
    assert not result.logs_truncated


async def test_log_entry_limit_adds_one_marker(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  for (let i = 0; i < 25; i++) console.log('line ' + i);\n"
        "  callback(null, 'done');\n}"
    )
    result = await conn.run("a1", {})
    assert result.ok and result.logs_truncated
    assert [e.message for e in result.logs[:10]] == [f"line {i}" for i in range(10)]
    assert len(result.logs) == 11
    marker = result.logs[10]
    assert marker.level is LogLevel.WARN
    assert "Log limit reached" in marker.message
    assert "15 entries with 105 characters" in marker.message
    # The next invocation has a fresh budget.
    again = await conn.run("a2", {})
    assert len(again.logs) == 11


async def test_log_char_limit(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  console.log('a'.repeat(2500)); console.log('b'.repeat(2500));\n"
        "  console.log('c'.repeat(2500)); console.log('d');\n"
        "  callback(null, 1);\n}"
    )
    result = await conn.run("a1", {})
    assert [len(e.message) for e in result.logs[:2]] == [2500, 2500]
    assert len(result.logs) == 3 and result.logs_truncated
    assert "2 entries with 2501 characters" in result.logs[2].message


async def test_custom_log_limit(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) { for (const x of 'abcd') console.info(x); callback(null, 1); }",
        log_limit=LogLimit(max_entries=2, max_chars=100),
    )
    result = await conn.run("a1", {})
    assert [e.message for e in result.logs[:2]] == ["a", "b"]
    assert "2 entries" in result.logs[2].message


async def test_logs_after_the_result_are_not_attributed(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  setTimeout(() => console.log('late ' + input.n), 5);\n"
        "  callback(null, input.n);\n}"
    )
    await conn.run("a1", {"n": 1})
    await asyncio.sleep(0.05)
    result = await conn.run("a2", {"n": 2})
    assert result.logs == []


# --------------------------------------------------------------------------- init


async def test_env_and_brand_id(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  callback(null, [process.env.BRAND_ID, process.env.API_URL, "
        "process.env.FNBUS_RUNNER_SOCKET]);\n}",
        account_id="le42",
        env={"API_URL": "https://example.invalid", "BRAND_ID": "spoofed"},
    )
    assert (await conn.run("a1", {})).value == ["le42", "https://example.invalid", None]


async def test_syntax_error_reports_its_line(start: Start) -> None:
    with pytest.raises(RunnerInitError) as info:
        await start("function lambda(input, callback) {\n  const x = ;\n  callback(null, x);\n}")
    assert info.value.error_type == "SyntaxError"
    assert info.value.line == 2


async def test_top_level_throw_reports_its_line(start: Start) -> None:
    with pytest.raises(RunnerInitError) as info:
        await start("function lambda(input, callback) {}\n\nrequire('no-such-module-here');\n")
    assert info.value.line == 3
    assert "no-such-module-here" in info.value.message


async def test_code_without_lambda_fails_init_and_may_be_retried(start: Start) -> None:
    conn = await start()
    with pytest.raises(RunnerInitError) as info:
        await conn.init(code="function other() {}", runtime="node", account_id="a", lambda_id="l")
    assert info.value.error_type == "LambdaNotFound"
    with pytest.raises(RunnerRejected) as rejected:
        await conn.run("a0", {})
    assert rejected.value.code == "not_initialized"
    await conn.init(code=HELLO, runtime="node", account_id="a", lambda_id="l")
    assert (await conn.run("a1", {"payload": {"name": "x"}})).ok
    with pytest.raises(RunnerRejected) as again:
        await conn.init(code=HELLO, runtime="node", account_id="a", lambda_id="l")
    assert again.value.code == "already_initialized"


async def test_top_level_logs_belong_to_init(start: Start) -> None:
    conn = await start()
    result = await conn.init(
        code="function lambda(i, cb) { cb(null, 1); }\nconsole.info('loaded');",
        runtime="node",
        account_id="a",
        lambda_id="l",
    )
    assert [(e.level, e.message) for e in result.logs] == [(LogLevel.INFO, "loaded")]


async def test_runtime_mismatch(start: Start) -> None:
    conn = await start()
    with pytest.raises(RunnerInitError) as info:
        await conn.init(code=HELLO, runtime="python", account_id="a", lambda_id="l")
    assert info.value.error_type == "RuntimeMismatch"


# --------------------------------------------------------------------------- toolbelt


async def test_toolbelt_module_and_unavailable_clients(start: Start) -> None:
    conn = await start(
        "function lambda(input, callback) {\n"
        "  const { Toolbelt } = require('lp-faas-toolbelt');\n"
        "  Promise.allSettled([Toolbelt.SFClient().connectToSalesforce({}),\n"
        "                      Toolbelt.OrchestratorClient().somethingElse(),\n"
        "                      Toolbelt.GDPRUtil().replaceConversationFiles({})])\n"
        "    .then((all) => callback(null, all.map((r) => [r.status, r.reason.code,\n"
        "                                                   r.reason.message])));\n"
        "}\n"
    )
    result = await conn.run("a1", {})
    assert result.ok, result.error
    statuses = {status for status, _, _ in result.value}
    codes = {code for _, code, _ in result.value}
    assert statuses == {"rejected"} and codes == {"not_available"}
    messages = [m for _, _, m in result.value]
    assert messages[0] == (
        "lp-faas-toolbelt: Toolbelt.SFClient().connectToSalesforce() is not available on this platform yet"
    )
    assert "somethingElse" in messages[1] and "replaceConversationFiles" in messages[2]


async def test_unawaited_unavailable_client_fails_the_invocation(start: Start) -> None:
    conn = await start(
        "const { Toolbelt } = require('lp-faas-toolbelt');\n"
        "function lambda(input, callback) {\n"
        "  Toolbelt.SFClient().connectToSalesforce({}).then((s) => callback(null, s));\n}"
    )
    result = await conn.run("a1", {})
    assert result.error is not None
    assert "not available on this platform yet" in result.error.message
    assert result.error.name == "NotAvailableError"


async def test_toolbelt_ping_round_trip(start: Start) -> None:
    conn = await start(
        "async function lambda(input, callback) {\n"
        "  const { ping } = require('lp-faas-toolbelt');\n"
        "  console.log('before');\n"
        "  const answer = await ping(input);\n"
        "  return { answer };\n}"
    )
    result = await conn.run("a1", {"hello": "host"})
    assert result.ok, result.error
    assert result.value == {"answer": {"pong": [{"hello": "host"}]}}
    assert [e.message for e in result.logs] == ["before"]


async def test_toolbelt_errors_and_custom_handler(start: Start) -> None:
    conn = await start(
        "const { ping, _call } = require('lp-faas-toolbelt');\n"
        "async function lambda(input, callback) {\n"
        "  try { await _call(input.method, []); } catch (e) { return [e.name, e.code, e.message]; }\n"
        "  return 'no error';\n}"
    )

    async def handler(method: str, args: list[Any]) -> Any:
        raise ToolbeltCallError("forbidden", f"{method} is not for you")

    result = await conn.run("a1", {"method": "readSecret"}, toolbelt=handler)
    assert result.value == ["ToolbeltError", "forbidden", "readSecret is not for you"]
    result = await conn.run("a2", {"method": "nope"})
    assert result.value is not None and result.value[1] == "unknown_method"


# --------------------------------------------------------------------------- wire level


async def test_oversized_frame_is_refused_and_the_stream_stays_usable(start: Start) -> None:
    proc_conn = await start()  # a runner; talk to it with raw frames instead
    assert proc_conn.socket_path is not None
    await proc_conn.close()
    reader, writer = await open_raw(proc_conn.socket_path)
    try:
        size = MAX_FRAME_BYTES + 1
        writer.write(size.to_bytes(4, "big") + b"x" * size)
        writer.write(b"\x00\x00\x00\x03abc")  # not JSON
        writer.write(
            encode_frame(
                {
                    "type": "init",
                    "id": "i1",
                    "code": HELLO,
                    "runtime": "node",
                    "env": {},
                    "account_id": "a",
                    "lambda_id": "l",
                }
            )
        )
        writer.write(encode_frame({"type": "run", "id": "r1", "input": {"payload": {"name": "again"}}}))
        await writer.drain()
        refused = await read_frame(reader)
        assert refused["type"] == "error" and refused["code"] == "frame_too_large"
        assert refused["id"] is None
        assert (await read_frame(reader))["code"] == "bad_frame"
        assert (await read_frame(reader))["ok"] is True
        result = await read_frame(reader)
        assert result["type"] == "result" and result["value"] == {"message": "Hello again"}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_oversized_result_becomes_a_runtime_exception(start: Start) -> None:
    conn = await start("function lambda(input, callback) { callback(null, 'x'.repeat(17 * 1024 * 1024)); }")
    result = await conn.run("a1", {})
    assert result.error is not None and "limit" in result.error.message


async def test_one_connection_at_a_time_and_reconnect(start: Start) -> None:
    conn = await start(HELLO)
    assert conn.socket_path is not None
    mode = stat.S_IMODE(os.stat(conn.socket_path).st_mode)
    assert mode == 0o666
    second = RunnerConnection()
    with pytest.raises(RunnerRejected) as info:
        await second.connect(conn.socket_path, timeout_s=0.3)
    assert info.value.code == "busy"
    await conn.close()
    async with RunnerConnection() as again:
        ready = await again.connect(conn.socket_path, timeout_s=2)
        assert ready.initialized is True
        assert (await again.run("a2", {"payload": {"name": "back"}})).value == {"message": "Hello back"}


async def test_a_dead_runner_shows_on_an_idle_connection() -> None:
    """The invoker's pool relies on this to replace containers that died while idle."""
    proc = Proc()
    conn = RunnerConnection()
    try:
        await conn.connect(proc.socket, timeout_s=5)
        await conn.init(code=HELLO, runtime="node", account_id="le12345678", lambda_id="lambda-1")
        assert conn.is_open()
        proc.popen.kill()
        proc.popen.wait()
        for _ in range(200):
            if not conn.is_open():
                break
            await asyncio.sleep(0.01)
        assert not conn.is_open()
    finally:
        await conn.close()
        proc.stop()
    assert not conn.is_open()
