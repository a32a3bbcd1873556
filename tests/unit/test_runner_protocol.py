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


# --------------------------------------------------------------------------- host-side bounds
# The lambda shares the runner's process and can write any frame: the host keeps a
# bounded amount of whatever it is sent.


async def _run_against(path: str, script: Script, **run: Any) -> Any:
    async with fake_runner(path, script):
        async with RunnerConnection() as conn:
            await conn.connect(path, timeout_s=2)
            return await conn.run("a1", {}, **run)


def _log(n: int, message: str = "", id_: str = "a1", level: str = "log") -> dict[str, Any]:
    return {"type": "log", "id": id_, "level": level, "message": message or f"line {n}", "ts_ms": n}


def _result(id_: str = "a1", value: Any = "done") -> dict[str, Any]:
    return {"type": "result", "id": id_, "ok": True, "value": value, "duration_ms": 1, "logs_truncated": False}


async def test_a_log_flood_keeps_the_budget_and_one_marker(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(3_000):  # ignores its budget: every console.log becomes a frame
            send(writer, _log(n, "x" * 100))
        # Forged results for other activations change nothing.
        send(writer, _result("someone-else", "forged"))
        send(writer, _result())
        await writer.drain()
        await reader.read()

    seen: list[LogEntry] = []
    result = await _run_against(path, flood, on_log=seen.append)
    assert result.value == "done"
    assert result.logs_truncated
    assert len(result.logs) == 11 and result.logs[:10] == [LogEntry(LogLevel.LOG, "x" * 100, n) for n in range(10)]
    marker = result.logs[10]
    assert marker.level is LogLevel.WARN and "the host dropped 2990 entries with 299000 characters" in marker.message
    assert seen == result.logs  # on_log sees what is kept, nothing else


async def test_the_character_budget_holds_like_the_runners(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def long_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        send(writer, _log(0, "a" * 4_000))
        send(writer, _log(1, "b" * 4_000))  # over 6,000 characters: dropped, and so is the rest
        send(writer, _log(2, "c"))
        send(writer, _result())
        await reader.read()

    result = await _run_against(path, long_lines)
    assert [e.message[:1] for e in result.logs[:-1]] == ["a"]
    assert sum(len(e.message) for e in result.logs[:-1]) <= 6_000
    assert result.logs_truncated and "the host dropped 2 entries with 4001 characters" in result.logs[-1].message


async def test_the_runners_own_marker_is_kept_as_sent(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def within_budget(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(10):
            send(writer, _log(n))
        send(writer, _log(10, "Log limit reached (10 entries / 6000 characters per invocation): "
                              "5 entries with 30 characters were dropped.", level="warn"))
        send(writer, {**_result(), "logs_truncated": True})
        await reader.read()

    result = await _run_against(path, within_budget)
    assert len(result.logs) == 11 and result.logs[-1].message.startswith("Log limit reached")
    assert "5 entries with 30 characters" in result.logs[-1].message and result.logs_truncated


async def test_toolbelt_calls_are_capped_in_number_and_in_flight(socket_dir: str) -> None:
    from fnbus.runner_protocol import MAX_CONCURRENT_TOOLBELT_CALLS, MAX_TOOLBELT_CALLS

    path = os.path.join(socket_dir, "r.sock")
    total = MAX_TOOLBELT_CALLS + 100
    answers: dict[str, dict[str, Any]] = {}

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(total):
            send(writer, {"type": "toolbelt_call", "id": "a1", "call_id": str(n), "method": "slow", "args": []})
        await writer.drain()
        while len(answers) < total:
            answer = await read_frame(reader)
            answers[answer["call_id"]] = answer
        send(writer, _result())
        await reader.read()

    running = peak = dispatched = 0

    async def handler(method: str, args: list[Any]) -> Any:
        # A handler that counts nothing itself: the bounds are the protocol's.
        nonlocal running, peak, dispatched
        dispatched += 1
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return "ok"

    result = await _run_against(path, flood, toolbelt=handler)
    assert result.value == "done"
    assert dispatched == MAX_TOOLBELT_CALLS
    assert peak <= MAX_CONCURRENT_TOOLBELT_CALLS
    refused = [a for a in answers.values() if not a["ok"]]
    assert len(refused) == 100 and {a["error"]["code"] for a in refused} == {"too_many_calls"}
    assert all(answers[str(n)]["ok"] for n in range(MAX_TOOLBELT_CALLS))


async def test_frames_for_other_ids_are_ignored_then_refused(socket_dir: str) -> None:
    from fnbus.runner_protocol import MAX_FOREIGN_FRAMES

    path = os.path.join(socket_dir, "r.sock")

    async def forger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(MAX_FOREIGN_FRAMES + 1):
            send(writer, _result(f"other-{n}", "forged"))
            send(writer, _log(n, id_=f"other-{n}"))
        send(writer, _result())
        await reader.read()

    async with fake_runner(path, forger):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(RunnerProtocolError, match="other ids"):
            await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED

    async def a_few(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(5):
            send(writer, _result(f"other-{n}", "forged"))
        send(writer, _result())
        await reader.read()

    result = await _run_against(path, a_few)
    assert result.value == "done" and result.logs == []


async def test_an_endless_stream_of_frames_ends_the_connection(socket_dir: str) -> None:
    from fnbus.runner_protocol import MAX_FRAMES_PER_EXCHANGE

    path = os.path.join(socket_dir, "r.sock")

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        for n in range(MAX_FRAMES_PER_EXCHANGE + 10):
            send(writer, _log(n))
            if n % 500 == 0:
                await writer.drain()
        await reader.read()

    async with fake_runner(path, endless):
        conn = RunnerConnection()
        await conn.connect(path, timeout_s=2)
        with pytest.raises(RunnerProtocolError, match="frames"):
            await conn.run("a1", {})
        assert conn.state is ConnectionState.CLOSED


async def test_a_huge_error_from_the_lambda_is_cut(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "r.sock")

    async def huge_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        send(writer, {"type": "result", "id": "a1", "ok": False, "duration_ms": 1, "error": {
            "kind": "runtime-exception", "message": "m" * 2_000_000, "stack": "s" * 2_000_000,
            "name": "n" * 10_000}})
        await reader.read()

    result = await _run_against(path, huge_error)
    assert result.error is not None
    assert len(result.error.message) < 10_000 and "more characters cut" in result.error.message
    assert result.error.stack is not None and len(result.error.stack) < 20_000
    assert result.error.name is not None and len(result.error.name) < 300
