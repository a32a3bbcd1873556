"""The Python runner (libs/runtimes/python/runner.py) as a local subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
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

RUNNER = Path(__file__).resolve().parents[2] / "libs" / "runtimes" / "python" / "runner.py"
PYTHON = shutil.which("python3") or sys.executable

# A runner bug usually shows up as a missing result: fail fast, not at 120 s.
pytestmark = pytest.mark.timeout(10)


class Proc:
    """A runner subprocess listening in its own temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fnbp-", dir="/tmp")
        self.socket = os.path.join(self.dir, "runner.sock")
        self._stderr = open(os.path.join(self.dir, "stderr"), "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["FNBUS_RUNNER_SOCKET"] = self.socket
        self.popen = subprocess.Popen(
            [PYTHON, "-I", str(RUNNER)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

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
            await conn.init(code=code, runtime="python", **init)
        return conn

    yield _start
    for conn in conns:
        await conn.close()
    for proc in procs:
        proc.stop()


# --------------------------------------------------------------------------- results

HELLO = """\
def handler(input, callback=None):
    return {"message": f"Hello {input['payload']['name']}"}
"""


async def test_hello_world(start: Start) -> None:
    conn = await start(HELLO)
    assert conn.info is not None and conn.info.runtime == "python"
    result = await conn.run("act-1", {"timestamp": 1, "headers": [], "payload": {"name": "W"}})
    assert result.ok, result.error
    assert result.value == {"message": "Hello W"}
    assert result.logs == [] and not result.logs_truncated


async def test_input_is_passed_exactly(start: Start) -> None:
    conn = await start("def handler(input):\n    return input\n")
    payload = {"a": [1, 2.5, None, True, {"ü": "✓ 🎉"}], "empty": {}, "s": ""}
    assert (await conn.run("a1", payload)).value == payload
    result = await conn.run("a2", None)
    assert result.ok and result.value is None


async def test_callback_error_is_a_custom_failure(start: Start) -> None:
    conn = await start(
        "def handler(input, callback):\n"
        "    if input.get('s'):\n"
        "        callback('plain string')\n"
        "    else:\n"
        "        callback(ValueError('payment declined'))\n"
    )
    result = await conn.run("a1", {})
    assert result.error is not None
    assert result.error.kind is ErrorKind.CUSTOM_FAILURE
    assert result.error.message == "payment declined" and result.error.name == "ValueError"
    result = await conn.run("a2", {"s": 1})
    assert result.error is not None and result.error.message == "plain string"


async def test_custom_failure_exception(start: Start) -> None:
    conn = await start(
        "from lp_faas_toolbelt import CustomFailure\ndef handler(input):\n    raise CustomFailure('not allowed')\n"
    )
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.kind is ErrorKind.CUSTOM_FAILURE
    assert result.error.message == "not allowed"


async def test_raised_exception_is_a_runtime_exception(start: Start) -> None:
    conn = await start("def handler(input):\n    x = None\n    return x['field']\n")
    result = await conn.run("a1", {})
    assert result.error is not None
    assert result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.name == "TypeError"
    assert result.error.stack is not None
    assert 'File "handler.py", line 3, in handler' in result.error.stack
    assert "runner.py" not in result.error.stack


async def test_async_handler_result_and_exception(start: Start) -> None:
    conn = await start(
        "import asyncio\n"
        "async def handler(input):\n"
        "    await asyncio.sleep(0.005)\n"
        "    if input.get('fail'):\n"
        "        raise LookupError('too far')\n"
        "    return {'doubled': input['n'] * 2}\n"
    )
    result = await conn.run("a1", {"n": 21})
    assert result.ok and result.value == {"doubled": 42}
    result = await conn.run("a2", {"fail": True})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.name == "LookupError"


async def test_handler_with_callback_returning_none_waits_for_it(start: Start) -> None:
    conn = await start(
        "import threading\n"
        "def handler(input, callback=None):\n"
        "    threading.Timer(0.02, callback, args=(None, 'late')).start()\n"
    )
    assert (await conn.run("a1", {})).value == "late"


async def test_async_handler_with_callback(start: Start) -> None:
    conn = await start(
        "import asyncio\n"
        "async def handler(input, callback):\n"
        "    asyncio.get_running_loop().call_later(0.01, callback, None, input['v'])\n"
    )
    assert (await conn.run("a1", {"v": 7})).value == 7


async def test_exception_in_a_thread_fails_the_invocation_and_the_runner_survives(
    start: Start,
) -> None:
    conn = await start(
        "import threading\n"
        "def handler(input, callback):\n"
        "    if input.get('ok'):\n"
        "        return 'fine'\n"
        "    threading.Thread(target=lambda: 1 / 0).start()\n"
    )
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert result.error.name == "ZeroDivisionError"
    assert (await conn.run("a2", {"ok": True})).value == "fine"


async def test_exception_in_a_loop_callback_fails_the_invocation(start: Start) -> None:
    conn = await start(
        "import asyncio\n"
        "async def handler(input, callback):\n"
        "    asyncio.get_running_loop().call_soon(boom)\n"
        "def boom():\n"
        "    raise RuntimeError('from the loop')\n"
    )
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.message == "from the loop"


async def test_only_the_first_completion_counts(start: Start) -> None:
    conn = await start(
        "def handler(input, callback):\n"
        "    callback(None, 'first')\n"
        "    callback(None, 'second')\n"
        "    callback(ValueError('third'))\n"
        "    raise RuntimeError('after')\n"
    )
    assert (await conn.run("a1", {})).value == "first"
    assert (await conn.run("a2", {})).value == "first"


async def test_never_calling_back_gives_no_result(start: Start) -> None:
    conn = await start("def handler(input, callback):\n    print('waiting')\n")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.run("a1", {}), 0.5)
    assert conn.state is ConnectionState.CLOSED


async def test_result_that_is_not_json_is_a_runtime_exception(start: Start) -> None:
    conn = await start("def handler(input):\n    return {1, 2}\n")
    result = await conn.run("a1", {})
    assert result.error is not None and result.error.kind is ErrorKind.RUNTIME_EXCEPTION
    assert "JSON" in result.error.message


async def test_warm_reuse_keeps_module_state(start: Start) -> None:
    conn = await start("def handler(input):\n    global count\n    count += 1\n    return count\ncount = 0\n")
    assert [(await conn.run(f"a{i}", {})).value for i in range(3)] == [1, 2, 3]


# --------------------------------------------------------------------------- logs


async def test_print_logging_console_and_streams_become_log_frames(start: Start) -> None:
    conn = await start(
        "import logging, sys\n"
        "def handler(input):\n"
        "    print('p', 1, {'a': 1})\n"
        "    logging.debug('d %s', 'x')\n"
        "    logging.getLogger('mine').info('i')\n"
        "    logging.warning('w')\n"
        "    logging.error('e')\n"
        "    console.log('c', 2)\n"
        "    sys.stderr.write('to stderr\\n')\n"
        "    return 1\n"
    )
    streamed: list[Any] = []
    result = await conn.run("a1", {}, on_log=streamed.append)
    assert [(e.level, e.message) for e in result.logs] == [
        (LogLevel.LOG, "p 1 {'a': 1}"),
        (LogLevel.DEBUG, "d x"),
        (LogLevel.INFO, "i"),
        (LogLevel.WARN, "w"),
        (LogLevel.ERROR, "e"),
        (LogLevel.LOG, "c 2"),
        (LogLevel.ERROR, "to stderr"),
    ]
    assert streamed == result.logs
    assert not result.logs_truncated


async def test_log_entry_limit_adds_one_marker(start: Start) -> None:
    conn = await start("def handler(input):\n    for i in range(25):\n        print(f'line {i}')\n    return 'done'\n")
    result = await conn.run("a1", {})
    assert result.ok and result.logs_truncated
    assert [e.message for e in result.logs[:10]] == [f"line {i}" for i in range(10)]
    assert len(result.logs) == 11
    marker = result.logs[10]
    assert marker.level is LogLevel.WARN
    assert "Log limit reached" in marker.message
    assert "15 entries with 105 characters" in marker.message
    again = await conn.run("a2", {})
    assert len(again.logs) == 11


async def test_log_char_limit(start: Start) -> None:
    conn = await start(
        "def handler(input):\n    for ch in 'abc':\n        print(ch * 2500)\n    print('d')\n    return 1\n"
    )
    result = await conn.run("a1", {})
    assert [len(e.message) for e in result.logs[:2]] == [2500, 2500]
    assert len(result.logs) == 3 and result.logs_truncated
    assert "2 entries with 2501 characters" in result.logs[2].message


async def test_custom_log_limit(start: Start) -> None:
    conn = await start(
        "def handler(input):\n    for x in 'abcd':\n        print(x)\n",
        log_limit=LogLimit(max_entries=2, max_chars=100),
    )
    result = await conn.run("a1", {})
    assert [e.message for e in result.logs[:2]] == ["a", "b"]
    assert "2 entries" in result.logs[2].message


# --------------------------------------------------------------------------- init


async def test_env_and_brand_id(start: Start) -> None:
    conn = await start(
        "import os\n"
        "def handler(input):\n"
        "    return [os.environ['BRAND_ID'], os.environ['API_URL'],\n"
        "            os.environ.get('FNBUS_RUNNER_SOCKET')]\n",
        account_id="le42",
        env={"API_URL": "https://example.invalid", "BRAND_ID": "spoofed"},
    )
    assert (await conn.run("a1", {})).value == ["le42", "https://example.invalid", None]


async def test_syntax_error_reports_its_line(start: Start) -> None:
    with pytest.raises(RunnerInitError) as info:
        await start("def handler(input):\n    x = (\n        1 +\n    return x\n")
    assert info.value.error_type == "SyntaxError"
    assert info.value.line in (2, 4)  # CPython points at the unclosed bracket or the stop
    with pytest.raises(RunnerInitError) as info:
        await start("def handler(input):\n    return 1\n\nx = = 2\n")
    assert info.value.line == 4


async def test_top_level_exception_reports_its_line(start: Start) -> None:
    with pytest.raises(RunnerInitError) as info:
        await start("def handler(input):\n    return 1\n\nimport no_such_module_here\n")
    assert info.value.error_type == "ModuleNotFoundError"
    assert info.value.line == 4


async def test_code_without_handler_fails_init_and_may_be_retried(start: Start) -> None:
    conn = await start()
    with pytest.raises(RunnerInitError) as info:
        await conn.init(code="def other(x):\n    pass\n", runtime="python", account_id="a", lambda_id="l")
    assert info.value.error_type == "LambdaNotFound"
    with pytest.raises(RunnerRejected) as rejected:
        await conn.run("a0", {})
    assert rejected.value.code == "not_initialized"
    await conn.init(code=HELLO, runtime="python", account_id="a", lambda_id="l")
    assert (await conn.run("a1", {"payload": {"name": "x"}})).ok
    with pytest.raises(RunnerRejected) as again:
        await conn.init(code=HELLO, runtime="python", account_id="a", lambda_id="l")
    assert again.value.code == "already_initialized"


async def test_top_level_logs_belong_to_init(start: Start) -> None:
    conn = await start()
    result = await conn.init(
        code="def handler(input):\n    return 1\n\nprint('loaded')\n",
        runtime="python",
        account_id="a",
        lambda_id="l",
    )
    assert [(e.level, e.message) for e in result.logs] == [(LogLevel.LOG, "loaded")]


# --------------------------------------------------------------------------- toolbelt


async def test_toolbelt_clients_raise_not_available(start: Start) -> None:
    conn = await start(
        "from lp_faas_toolbelt import Toolbelt, NotAvailableError\n"
        "def handler(input):\n"
        "    out = []\n"
        "    for call in (lambda: Toolbelt.sf_client().connect_to_salesforce({}),\n"
        "                 lambda: Toolbelt.orchestrator_client()()):\n"
        "        try:\n"
        "            call()\n"
        "        except NotAvailableError as exc:\n"
        "            out.append([exc.code, str(exc)])\n"
        "    return out\n"
    )
    result = await conn.run("a1", {})
    assert result.ok, result.error
    assert result.value == [
        [
            "not_available",
            "lp_faas_toolbelt: Toolbelt.sf_client().connect_to_salesforce() is not available on this platform yet",
        ],
        ["not_available", "lp_faas_toolbelt: Toolbelt.orchestrator_client() is not available on this platform yet"],
    ]


async def test_toolbelt_ping_round_trip_sync_and_async(start: Start) -> None:
    conn = await start(
        "import lp_faas_toolbelt\ndef handler(input):\n    print('before')\n    return lp_faas_toolbelt.ping(input)\n"
    )
    result = await conn.run("a1", {"hello": "host"})
    assert result.ok, result.error
    assert result.value == {"pong": [{"hello": "host"}]}
    assert [e.message for e in result.logs] == ["before"]

    conn = await start(
        "import lp_faas_toolbelt\nasync def handler(input):\n    return await lp_faas_toolbelt.ping_async(input)\n"
    )
    assert (await conn.run("a1", 5)).value == {"pong": [5]}


async def test_toolbelt_errors_and_custom_handler(start: Start) -> None:
    conn = await start(
        "import lp_faas_toolbelt\n"
        "async def handler(input):\n"
        "    try:\n"
        "        await lp_faas_toolbelt.call_async(input['method'], [])\n"
        "    except lp_faas_toolbelt.ToolbeltError as exc:\n"
        "        return [type(exc).__name__, exc.code, exc.message]\n"
    )

    async def handler(method: str, args: list[Any]) -> Any:
        raise ToolbeltCallError("forbidden", f"{method} is not for you")

    result = await conn.run("a1", {"method": "readSecret"}, toolbelt=handler)
    assert result.value == ["ToolbeltError", "forbidden", "readSecret is not for you"]
    result = await conn.run("a2", {"method": "nope"})
    assert result.value is not None and result.value[1] == "unknown_method"


# --------------------------------------------------------------------------- wire level


async def test_oversized_frame_is_refused_and_the_stream_stays_usable(start: Start) -> None:
    proc_conn = await start()
    assert proc_conn.socket_path is not None
    await proc_conn.close()
    reader, writer = await open_raw(proc_conn.socket_path)
    try:
        size = MAX_FRAME_BYTES + 1
        writer.write(size.to_bytes(4, "big") + b"x" * size)
        writer.write(b"\x00\x00\x00\x03abc")
        writer.write(
            encode_frame(
                {
                    "type": "init",
                    "id": "i1",
                    "code": HELLO,
                    "runtime": "python",
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
        assert (await read_frame(reader))["code"] == "bad_frame"
        assert (await read_frame(reader))["ok"] is True
        result = await read_frame(reader)
        assert result["type"] == "result" and result["value"] == {"message": "Hello again"}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_oversized_result_becomes_a_runtime_exception(start: Start) -> None:
    conn = await start("def handler(input):\n    return 'x' * (17 * 1024 * 1024)\n")
    result = await conn.run("a1", {})
    assert result.error is not None and "limit" in result.error.message


async def test_one_connection_at_a_time_and_reconnect(start: Start) -> None:
    conn = await start(HELLO)
    assert conn.socket_path is not None
    assert stat.S_IMODE(os.stat(conn.socket_path).st_mode) == 0o666
    second = RunnerConnection()
    with pytest.raises(RunnerRejected) as info:
        await second.connect(conn.socket_path, timeout_s=0.3)
    assert info.value.code == "busy"
    await conn.close()
    async with RunnerConnection() as again:
        ready = await again.connect(conn.socket_path, timeout_s=2)
        assert ready.initialized is True
        result = await again.run("a2", {"payload": {"name": "back"}})
        assert result.value == {"message": "Hello back"}
