"""Frame codec, first-line rule and RunnerConnection against a scripted fake runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fnbus.runner_protocol import (
    MAX_FRAME_BYTES,
    ConnectionState,
    ErrorKind,
    FrameDecoder,
    FrameTooLarge,
    LogEntry,
    LogLevel,
    RunnerClosed,
    RunnerConnection,
    RunnerError,
    RunnerInitError,
    RunnerProtocolError,
    RunnerRejected,
    RunnerUnavailable,
    Runtime,
    ToolbeltCallError,
    check_first_line,
    decode_frame_body,
    decode_frame_length,
    default_toolbelt_handler,
    encode_frame,
    read_frame,
)

# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    "message",
    [
        {"type": "run", "id": "a1", "input": {"payload": {"x": [1, 2.5, None, True]}}},
        {"type": "log", "id": "a1", "level": "info", "message": "héllo ✓ 🎉", "ts_ms": 1},
        {"type": "init", "id": "i", "code": "function lambda(i, c) {}\n", "env": {}},
    ],
)
def test_frame_round_trip(message: dict[str, Any]) -> None:
    frame = encode_frame(message)
    size = decode_frame_length(frame[:4])
    assert size == len(frame) - 4
    assert decode_frame_body(frame[4:]) == message


def test_frame_header_is_big_endian_byte_length() -> None:
    frame = encode_frame({"type": "x", "s": "é"})
    body = '{"type":"x","s":"é"}'.encode()
    assert frame == len(body).to_bytes(4, "big") + body


def test_decoder_reassembles_frames_fed_byte_by_byte() -> None:
    messages = [{"type": "log", "id": str(i), "message": "m" * i} for i in range(5)]
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
    assert out == messages
    assert decoder.pending_bytes == 0


def test_decoder_returns_several_frames_from_one_chunk_and_keeps_the_rest() -> None:
    a, b = encode_frame({"type": "a"}), encode_frame({"type": "b"})
    decoder = FrameDecoder()
    assert decoder.feed(a + b + b[:3]) == [{"type": "a"}, {"type": "b"}]
    assert decoder.pending_bytes == 3
    assert decoder.feed(b[3:]) == [{"type": "b"}]


def test_encode_refuses_oversized_frame() -> None:
    with pytest.raises(FrameTooLarge) as info:
        encode_frame({"type": "run", "input": "x" * MAX_FRAME_BYTES})
    assert info.value.size_bytes > MAX_FRAME_BYTES
    assert isinstance(info.value, RunnerProtocolError)


def test_encode_accepts_a_frame_at_the_limit() -> None:
    overhead = len(encode_frame({"type": "run", "input": ""})) - 4
    frame = encode_frame({"type": "run", "input": "x" * (MAX_FRAME_BYTES - overhead)})
    assert len(frame) == MAX_FRAME_BYTES + 4


def test_decode_refuses_oversized_length() -> None:
    with pytest.raises(FrameTooLarge):
        decode_frame_length((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    assert decode_frame_length(MAX_FRAME_BYTES.to_bytes(4, "big")) == MAX_FRAME_BYTES
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame_bytes=10).feed((11).to_bytes(4, "big"))


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"id": "x"}', b'{"type": 3}', b"\xff\xfe"])
def test_decode_refuses_bad_bodies(body: bytes) -> None:
    with pytest.raises(RunnerProtocolError):
        decode_frame_body(body)


def test_encode_refuses_non_json_values() -> None:
    with pytest.raises(RunnerProtocolError):
        encode_frame({"type": "run", "input": float("nan")})
    with pytest.raises(RunnerProtocolError):
        encode_frame({"type": "run", "input": object()})


# --------------------------------------------------------------------------- first-line rule

NODE_OK = [
    "function lambda(input, callback) {\n  callback(null, 1);\n}\n",
    "async function lambda(input, callback) { return 1; }",
    "// Lambda for the demo\n\n/* block\n comment */\nfunction lambda(input, callback) {}",
    '"use strict";\nfunction lambda(input, callback) {}',
    "'use strict'\n// c\nfunction lambda(i, cb) {}",
    "\n\n   function   lambda (event, done) {}",
    "function lambda(input, callback) {}\nfunction helper() {}\nconst x = 1;",
    "\ufefffunction lambda(input, callback) {}",
]


@pytest.mark.parametrize("code", NODE_OK)
def test_node_first_line_accepts(code: str) -> None:
    assert check_first_line(code, Runtime.NODE) is None


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("", "found nothing"),
        ("// only a comment\n", "found nothing"),
        ("const x = 1;\nfunction lambda(input, callback) {}", "line 1, column 1"),
        ("\n\nfunction handler(input, callback) {}", "line 3, column 1"),
        ("function helper() {}\nfunction lambda(i, c) {}", "must be named `lambda`"),
        ("const lambda = (input, callback) => {};", "found `const lambda"),
        ("async\nfunction lambda(i, c) {}", "same line"),
        ("function* lambda(i, c) {}", "generator"),
        ("function lambdaX(i, c) {}", "must be named `lambda`"),
        ("/* never closed\nfunction lambda(i, c) {}", "unterminated"),
        ('"use strict" function lambda(i, c) {}', 'after "use strict"'),
        ("module.exports = function lambda(i, c) {}", "found `module.exports"),
    ],
)
def test_node_first_line_refuses(code: str, fragment: str) -> None:
    problem = check_first_line(code, "node")
    assert problem is not None
    assert fragment in problem
    assert problem.startswith("line ")


PY_OK = [
    "def handler(input, callback=None):\n    return 1\n",
    "async def handler(input):\n    return 1\n",
    '"""Docs."""\nfrom __future__ import annotations\nimport json\nfrom os import environ\n\n'
    "# comment\ndef handler(event, cb=None):\n    pass\n\nX = 1\n",
    "def handler(input, callback):\n    callback(None, 1)\n",
    "def handler(input, *, verbose=False):\n    return input\n",
]


@pytest.mark.parametrize("code", PY_OK)
def test_python_first_line_accepts(code: str) -> None:
    assert check_first_line(code, Runtime.PYTHON) is None


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("", "found no such statement"),
        ("import os\n", "found no such statement"),
        ("X = 1\ndef handler(input):\n    pass\n", "line 1: the first statement"),
        ("import os\n\ndef main(input):\n    pass\n", "line 3: the first statement"),
        ("class handler:\n    pass\n", "found `class handler:`"),
        ("@cache\ndef handler(input):\n    pass\n", "decorated"),
        ("def handler():\n    pass\n", "first parameter"),
        ("def handler(a, b, c):\n    pass\n", "3 required parameters"),
        ("def handler(input, *, key):\n    pass\n", "keyword-only"),
        ("def handler(input):\n  x = (\n", "syntax error"),
    ],
)
def test_python_first_line_refuses(code: str, fragment: str) -> None:
    problem = check_first_line(code, "python")
    assert problem is not None
    assert fragment in problem
    assert problem.startswith("line ")


def test_python_syntax_error_names_its_line() -> None:
    problem = check_first_line("def handler(input):\n    return 1\n\nx = = 2\n", "python")
    assert problem is not None and problem.startswith("line 4:")


def test_first_line_rejects_unknown_runtime() -> None:
    with pytest.raises(ValueError):
        check_first_line("x", "ruby")


# --------------------------------------------------------------------------- client vs fake runner

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(encode_frame(message))


READY = {"type": "ready", "runtime": "node", "version": "20", "pid": 7, "protocol": 1}


@pytest.fixture
async def socket_dir() -> AsyncIterator[str]:
    path = tempfile.mkdtemp(prefix="fnbrp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def fake_runner(path: str, script: Script) -> AsyncIterator[list[dict[str, Any]]]:
    """A unix server that sends ``ready`` and then follows ``script``."""
    received: list[dict[str, Any]] = []
    handlers: list[asyncio.Task[None]] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        send(writer, READY)
        try:
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, RunnerClosed):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=path)
    try:
        yield received
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_connect_retries_until_the_socket_appears(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    conn = RunnerConnection()
    connecting = asyncio.create_task(conn.connect(path, timeout_s=2))
    await asyncio.sleep(0.15)
    assert not connecting.done()
    async with fake_runner(path, idle):
        info = await connecting
        assert info.runtime == "node" and info.pid == 7 and info.initialized is False
        assert conn.state is ConnectionState.OPEN
        await conn.close()
        await conn.close()  # safe twice
    assert conn.state is ConnectionState.CLOSED


async def test_connect_times_out(socket_dir: str) -> None:
    conn = RunnerConnection()
    with pytest.raises(RunnerUnavailable):
        await conn.connect(os.path.join(socket_dir, "none.sock"), timeout_s=0.1)
    with pytest.raises(RuntimeError):
        await conn.connect(os.path.join(socket_dir, "none.sock"), timeout_s=0.1)


async def test_run_collects_logs_ignores_stale_frames_and_answers_toolbelt(
    socket_dir: str,
) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        run = await read_frame(reader)
        assert run == {"type": "run", "id": "a1", "input": {"k": "v"}, "deadline_ms": 99}
        send(writer, {"type": "log", "id": "old", "level": "log", "message": "stale", "ts_ms": 1})
        send(writer, {"type": "log", "id": "a1", "level": "warn", "message": "w", "ts_ms": 2})
        send(writer, {"type": "toolbelt_call", "id": "a1", "call_id": "1", "method": "ping", "args": ["x"]})
        send(writer, {"type": "toolbelt_call", "id": "a1", "call_id": "2", "method": "nope", "args": []})
        answers = {}
        for _ in range(2):
            answer = await read_frame(reader)
            answers[answer["call_id"]] = answer
        assert answers["1"] == {
            "type": "toolbelt_result",
            "id": "a1",
            "call_id": "1",
            "ok": True,
            "value": {"pong": ["x"]},
        }
        assert answers["2"]["ok"] is False
        assert answers["2"]["error"]["code"] == "unknown_method"
        send(
            writer,
            {"type": "result", "id": "a1", "ok": True, "value": [1], "duration_ms": 1.5, "logs_truncated": False},
        )
        await reader.read()

    seen: list[LogEntry] = []

    async def on_log(entry: LogEntry) -> None:
        seen.append(entry)

    async with fake_runner(path, script):
        async with RunnerConnection() as conn:
            await conn.connect(path, timeout_s=2)
            result = await conn.run("a1", {"k": "v"}, on_log=on_log, deadline_ms=99)
    assert result.ok and result.value == [1] and result.error is None
    assert result.duration_ms == 1.5
    assert seen == result.logs == [LogEntry(LogLevel.WARN, "w", 2)]


async def test_run_reports_lambda_failure_as_a_result(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        send(
            writer,
            {
                "type": "result",
                "id": "a1",
                "ok": False,
                "duration_ms": 2,
                "logs_truncated": True,
                "error": {"kind": "custom-failure", "message": "no", "name": "Error"},
            },
        )
        await reader.read()

    async with fake_runner(path, script):
        async with RunnerConnection() as conn:
            await conn.connect(path, timeout_s=2)
            result = await conn.run("a1", None)
    assert not result.ok and result.logs_truncated
    assert result.error is not None and result.error.kind is ErrorKind.CUSTOM_FAILURE
    assert result.error.message == "no" and result.error.name == "Error"


async def test_init_raises_with_line_and_refusals_keep_the_connection(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        init = await read_frame(reader)
        assert init["env"] == {"A": "1"} and init["log_limit"] == {"max_entries": 10, "max_chars": 6000}
        send(
            writer,
            {
                "type": "init_result",
                "id": init["id"],
                "ok": False,
                "error": {"type": "SyntaxError", "message": "Unexpected token", "line": 3},
            },
        )
        run = await read_frame(reader)
        send(writer, {"type": "error", "id": run["id"], "code": "not_initialized", "message": "send init first"})
        await reader.read()

    async with fake_runner(path, script):
        async with RunnerConnection() as conn:
            await conn.connect(path, timeout_s=2)
            with pytest.raises(RunnerInitError) as info:
                await conn.init(code="x", runtime="node", account_id="a", lambda_id="l", env={"A": "1"})
            assert info.value.line == 3 and info.value.error_type == "SyntaxError"
            with pytest.raises(RunnerRejected) as rejected:
                await conn.run("a1", {})
            assert rejected.value.code == "not_initialized"
            assert conn.state is ConnectionState.OPEN


async def test_runner_closing_mid_run_raises_closed(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        send(writer, {"type": "log", "id": "a1", "level": "log", "message": "bye", "ts_ms": 1})
        await writer.drain()

    async with fake_runner(path, script):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(RunnerClosed):
            await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED
        with pytest.raises(RunnerClosed):
            await conn.run("a2", {})


async def test_protocol_violation_closes_the_connection(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        send(writer, {"type": "log", "id": "a1", "level": "shout", "message": "x", "ts_ms": 1})
        await reader.read()

    async with fake_runner(path, script):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(RunnerProtocolError):
            await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED


async def test_oversized_frame_from_the_runner_is_a_protocol_error(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
        await reader.read()

    async with fake_runner(path, script):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(FrameTooLarge):
            await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED


async def test_cancelled_run_closes_the_connection(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with fake_runner(path, never_answers):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED


async def test_oversized_input_is_refused_before_sending(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with fake_runner(path, idle):
        async with RunnerConnection() as conn:
            await conn.connect(path, timeout_s=2)
            with pytest.raises(FrameTooLarge):
                await conn.run("a1", {"blob": "x" * MAX_FRAME_BYTES})
            assert conn.state is ConnectionState.OPEN


async def test_default_toolbelt_handler() -> None:
    assert await default_toolbelt_handler("ping", [1]) == {"pong": [1]}
    with pytest.raises(ToolbeltCallError) as info:
        await default_toolbelt_handler("readSecret", ["k"])
    assert info.value.code == "unknown_method"


def test_error_tree() -> None:
    for cls in (RunnerUnavailable, RunnerClosed, RunnerProtocolError, RunnerRejected, RunnerInitError, FrameTooLarge):
        assert issubclass(cls, RunnerError)
    assert issubclass(FrameTooLarge, RunnerProtocolError)
    assert not issubclass(ToolbeltCallError, RunnerError)
