"""Host side of the runner protocol: frames, the first-line rule, and the client.

Every lambda container runs one long-lived *runner* (``libs/runtimes/<lang>/``)
that listens on a unix socket in a bind-mounted directory. The invoker connects
to it, sends ``init`` once (the code) and then one ``run`` per invocation. The
wire format and every message are specified in ``docs/runner-protocol.md``;
this module is the only Python implementation of the host side.

Errors (all raised by :class:`RunnerConnection` and the frame helpers)::

    RunnerError                 root; catch this to treat the container as unusable
     ├── RunnerUnavailable      connect() found no runner listening before its timeout
     ├── RunnerClosed           the connection ended (runner exited, killed, or close())
     ├── RunnerProtocolError    a message broke the protocol (bad frame, unexpected type)
     │    └── FrameTooLarge     a frame is bigger than MAX_FRAME_BYTES (either direction)
     ├── RunnerRejected         the runner answered with an ``error`` frame (``.code``)
     └── RunnerInitError        the lambda's code did not load (syntax error, top-level throw)

A lambda that *fails* (callback error, exception) is not an exception here: it is
a :class:`RunResult` with ``ok=False`` and a :class:`LambdaError`.

Host-side bounds. The lambda's code shares the runner's process, so it can write
any frame to the socket; what the host keeps of one ``init`` or ``run`` is
bounded here, whatever the runner says:

1. Logs: at most ``max_entries`` entries and ``max_chars`` characters of the
   invocation's :class:`LogLimit` are kept, as the runner would keep them, plus
   one truncation marker (the runner's own when it sent exactly one entry over
   the budget, otherwise the host's, counting what it dropped). Whatever was
   dropped marks the result ``logs_truncated``.
2. Toolbelt calls: at most :data:`MAX_TOOLBELT_CALLS` are dispatched; later
   ones are answered with the error ``too_many_calls`` without reaching the
   handler. At most :data:`MAX_CONCURRENT_TOOLBELT_CALLS` run at once; while
   they do, the host stops reading the socket (the runner waits, not the host).
3. Frames for other ids (late frames of an earlier invocation) are ignored and
   counted; more than :data:`MAX_FOREIGN_FRAMES` of them, or more than
   :data:`MAX_FRAMES_PER_EXCHANGE` frames in all, is a protocol violation: the
   connection is closed and the container must not be reused.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import enum
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Largest frame body (the JSON document) either side accepts, in bytes.
MAX_FRAME_BYTES = 16 * 1024 * 1024
FRAME_HEADER_BYTES = 4
DEFAULT_SOCKET_PATH = "/run/fnbus/runner.sock"
SOCKET_PATH_ENV = "FNBUS_RUNNER_SOCKET"
DEFAULT_LOG_MAX_ENTRIES = 10
DEFAULT_LOG_MAX_CHARS = 6000
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_CONNECT_RETRY_FIRST_S = 0.01
_CONNECT_RETRY_MAX_S = 0.02  # a starting runner appears within ~0.3 s; poll closely
_READY_MIN_WAIT_S = 0.5
#: Toolbelt calls dispatched per invocation; later calls are refused (``too_many_calls``).
MAX_TOOLBELT_CALLS = 200
#: Toolbelt calls of one invocation in flight at once; more wait for a free slot.
MAX_CONCURRENT_TOOLBELT_CALLS = 16
#: Frames for other ids tolerated during one init/run (a legitimate runner sends a few).
MAX_FOREIGN_FRAMES = 100
#: Frames of any kind during one init/run: a budgeted runner sends at most
#: ``max_entries + 1`` logs, the toolbelt calls and its result.
MAX_FRAMES_PER_EXCHANGE = 5_000
#: The truncation marker kept after the budget is cut to this many characters.
MARKER_MAX_CHARS = 400
#: A lambda's error (message, stack, name) is cut to these many characters.
ERROR_MESSAGE_MAX_CHARS = 8_192
ERROR_STACK_MAX_CHARS = 16_384
ERROR_NAME_MAX_CHARS = 200

NODE_CODE_FILENAME = "index.js"
PYTHON_CODE_FILENAME = "handler.py"
PYTHON_HANDLER_NAME = "handler"


# --------------------------------------------------------------------------- errors


class RunnerError(Exception):
    """Root of the runner client's errors (tree in the module docstring)."""


class RunnerUnavailable(RunnerError):
    """No runner accepted a connection on the socket before the timeout."""


class RunnerClosed(RunnerError):
    """The connection to the runner ended or was closed."""


class RunnerProtocolError(RunnerError):
    """A frame or message does not follow docs/runner-protocol.md."""


class FrameTooLarge(RunnerProtocolError):
    """A frame body exceeds the size limit."""

    def __init__(self, size_bytes: int, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        super().__init__(f"frame of {size_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")
        self.size_bytes = size_bytes
        self.max_frame_bytes = max_frame_bytes


class RunnerRejected(RunnerError):
    """The runner refused a message with an ``error`` frame (e.g. ``busy``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RunnerInitError(RunnerError):
    """The lambda's code could not be loaded; ``line`` is 1-based when known."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        line: int | None = None,
        stack: str | None = None,
        logs: list[LogEntry] | None = None,
    ) -> None:
        # The line stays out of str(): callers place it themselves (``.line``).
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.line = line
        self.stack = stack
        self.logs = logs or []


class ToolbeltCallError(Exception):
    """Raised by a toolbelt handler to answer a ``toolbelt_call`` with an error.

    Not a :class:`RunnerError`: it travels back to the lambda, which sees an
    error with this ``code`` and ``message``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- values


class Runtime(str, enum.Enum):
    NODE = "node"
    PYTHON = "python"


class LogLevel(str, enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    LOG = "log"
    WARN = "warn"
    ERROR = "error"


class ErrorKind(str, enum.Enum):
    #: the lambda passed an error to its callback
    CUSTOM_FAILURE = "custom-failure"
    #: the lambda threw, rejected, or crashed asynchronously
    RUNTIME_EXCEPTION = "runtime-exception"


class ConnectionState(str, enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class LogLimit:
    """Per-invocation log budget; the runner drops what does not fit."""

    max_entries: int = DEFAULT_LOG_MAX_ENTRIES
    max_chars: int = DEFAULT_LOG_MAX_CHARS

    def to_wire(self) -> dict[str, int]:
        return {"max_entries": self.max_entries, "max_chars": self.max_chars}


class LogBudget:
    """What the host keeps of one init's or run's log frames (rule 1 of the module docstring)."""

    def __init__(self, limit: LogLimit) -> None:
        self.limit = limit
        self.kept: list[LogEntry] = []
        self.chars = 0
        self.truncated = False
        self.dropped_entries = 0
        self.dropped_chars = 0
        self._over: LogEntry | None = None  # the first entry over the budget

    def offer(self, entry: LogEntry) -> bool:
        """Keep ``entry`` if it fits; True when kept. Once one entry did not fit, none does."""
        fits = (not self.truncated and len(self.kept) < self.limit.max_entries
                and self.chars + len(entry.message) <= self.limit.max_chars)
        if fits:
            self.kept.append(entry)
            self.chars += len(entry.message)
            return True
        self.truncated = True
        if self._over is None:
            self._over = entry
        else:
            self.dropped_entries += 1
            self.dropped_chars += len(entry.message)
        return False

    def marker(self) -> LogEntry | None:
        """The entry to add after the kept ones, or None when nothing was dropped."""
        over = self._over
        if over is None:
            return None
        if not self.dropped_entries and over.level is LogLevel.WARN:
            # One entry over the budget: the runner's own marker, as it sends it.
            return LogEntry(over.level, over.message[:MARKER_MAX_CHARS], over.ts_ms)
        entries = self.dropped_entries + 1
        chars = self.dropped_chars + len(over.message)
        return LogEntry(LogLevel.WARN,
                        f"Log limit reached ({self.limit.max_entries} entries / "
                        f"{self.limit.max_chars} characters per invocation): the host dropped "
                        f"{entries} entries with {chars} characters.", over.ts_ms)


@dataclass(frozen=True)
class RunnerInfo:
    """What the runner announced in its ``ready`` frame."""

    runtime: str
    version: str
    pid: int
    protocol: int
    initialized: bool


@dataclass(frozen=True)
class LogEntry:
    level: LogLevel
    message: str
    ts_ms: int


@dataclass(frozen=True)
class LambdaError:
    """Why an invocation failed (``RunResult.error``)."""

    kind: ErrorKind
    message: str
    name: str | None = None
    stack: str | None = None


@dataclass(frozen=True)
class InitResult:
    """A successful ``init``: logs written by the code's top level, if any."""

    logs: list[LogEntry] = field(default_factory=list)
    logs_truncated: bool = False


@dataclass(frozen=True)
class RunResult:
    """The outcome of one invocation as reported by the runner.

    ``duration_ms`` is measured by the runner from calling the handler to its
    first completion. ``logs`` holds the log frames kept within the budget,
    followed by the truncation marker when something was dropped. ``sent_ns`` and
    ``received_ns`` are the host's wall clock (``time.time_ns``) when the run
    request was written and when its result frame was read (hop timing).
    """

    ok: bool
    value: Any
    error: LambdaError | None
    duration_ms: float
    logs: list[LogEntry]
    logs_truncated: bool
    sent_ns: int = 0
    received_ns: int = 0


#: ``on_log`` callbacks may be plain functions or coroutine functions.
LogCallback = Callable[[LogEntry], Awaitable[None] | None]
#: A toolbelt handler answers ``(method, args)`` with a JSON value or raises
#: :class:`ToolbeltCallError`.
ToolbeltHandler = Callable[[str, list[Any]], Awaitable[Any]]


async def default_toolbelt_handler(method: str, args: list[Any]) -> Any:
    """Answer the built-in ``ping`` (``{"pong": args}``); refuse anything else."""
    if method == "ping":
        return {"pong": args}
    raise ToolbeltCallError("unknown_method", f"toolbelt method {method!r} is not available")


# --------------------------------------------------------------------------- frames


def encode_frame(message: Mapping[str, Any], *, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Serialise ``message`` as a frame: 4-byte big-endian length + UTF-8 JSON."""
    try:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise RunnerProtocolError(f"message is not JSON-serialisable: {exc}") from exc
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(len(body), max_frame_bytes)
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def decode_frame_length(header: bytes, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> int:
    """Read the body length from a 4-byte header, refusing oversized frames."""
    if len(header) != FRAME_HEADER_BYTES:
        raise RunnerProtocolError(f"frame header must be 4 bytes, got {len(header)}")
    size = int.from_bytes(header, "big")
    if size > max_frame_bytes:
        raise FrameTooLarge(size, max_frame_bytes)
    return size


def decode_frame_body(body: bytes) -> dict[str, Any]:
    """Parse a frame body: a UTF-8 JSON object with a string ``type``."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunnerProtocolError(f"frame body is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise RunnerProtocolError("frame body must be a JSON object")
    if not isinstance(message.get("type"), str):
        raise RunnerProtocolError("message has no string 'type'")
    return message


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get whole messages back."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= FRAME_HEADER_BYTES:
            size = decode_frame_length(bytes(self._buffer[:FRAME_HEADER_BYTES]), max_frame_bytes=self._max_frame_bytes)
            end = FRAME_HEADER_BYTES + size
            if len(self._buffer) < end:
                break
            messages.append(decode_frame_body(bytes(self._buffer[FRAME_HEADER_BYTES:end])))
            del self._buffer[:end]
        return messages

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


async def read_frame(reader: asyncio.StreamReader, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Read one message; raises :class:`RunnerClosed` at end of stream."""
    try:
        header = await reader.readexactly(FRAME_HEADER_BYTES)
        size = decode_frame_length(header, max_frame_bytes=max_frame_bytes)
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise RunnerClosed("the runner closed the connection") from exc
    except ConnectionError as exc:
        raise RunnerClosed(f"connection to the runner failed: {exc}") from exc
    return decode_frame_body(body)


# --------------------------------------------------------------------------- first-line rule

_NODE_RULE = "`function lambda(input, callback)` or `async function lambda(input, callback)`"
_PYTHON_RULE = "`def handler(input, callback=None)` or `async def handler(input, callback=None)`"
_JS_WORD = re.compile(r"[\w$]+")


def check_first_line(code: str, runtime: Runtime | str) -> str | None:
    """Check the runtime's first-declaration rule; return what is wrong, or None.

    Node: after blank lines, comments and an optional ``"use strict"`` directive
    the code must start with ``function lambda(`` or ``async function lambda(``.
    Parameter names are free (JavaScript passes input and callback by position).

    Python: after an optional module docstring and ``import``/``from`` statements
    the first statement must be ``def handler(...)`` or ``async def handler(...)``
    taking the input as its first positional parameter and at most one more
    required positional parameter (the callback). Syntax errors are reported too.

    Messages name the line (1-based) so the registry can show them as they are.
    """
    rt = Runtime(runtime)
    if rt is Runtime.NODE:
        return _check_node_first_line(code)
    return _check_python_first_line(code)


def _line_col(code: str, index: int) -> tuple[int, int]:
    line = code.count("\n", 0, index) + 1
    col = index - (code.rfind("\n", 0, index) + 1) + 1
    return line, col


def _skip_js_trivia(code: str, i: int) -> tuple[int, bool, str | None]:
    """Skip whitespace and comments; return (index, crossed a newline, error)."""
    newline = False
    n = len(code)
    while i < n:
        ch = code[i]
        if ch in "\n\r\u2028\u2029":
            newline = True
            i += 1
        elif ch.isspace() or ch == "\ufeff":
            i += 1
        elif code.startswith("//", i):
            end = code.find("\n", i)
            i = n if end < 0 else end
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            if end < 0:
                line, col = _line_col(code, i)
                return i, newline, f"line {line}, column {col}: unterminated /* comment"
            newline = newline or "\n" in code[i:end]
            i = end + 2
        else:
            break
    return i, newline, None


def _js_found(code: str, i: int) -> str:
    snippet = code[i:].split("\n", 1)[0].strip()
    return snippet[:60] + ("…" if len(snippet) > 60 else "")


def _check_node_first_line(code: str) -> str | None:
    i, _, err = _skip_js_trivia(code, 0)
    if err:
        return err
    # Directive prologue: only "use strict" is meaningful, so only it is allowed.
    while code.startswith(("'use strict'", '"use strict"'), i):
        j, newline, err = _skip_js_trivia(code, i + len("'use strict'"))
        if err:
            return err
        if j < len(code) and code[j] == ";":
            j, _, err = _skip_js_trivia(code, j + 1)
            if err:
                return err
        elif not newline and j < len(code):
            line, col = _line_col(code, j)
            return f'line {line}, column {col}: expected `;` or a new line after "use strict"'
        i = j

    def fail(at: int, why: str = "") -> str:
        line, col = _line_col(code, at)
        if at >= len(code):
            return f"line {line}: the code must begin with {_NODE_RULE}; found nothing"
        return f"line {line}, column {col}: the code must begin with {_NODE_RULE}{why}; found `{_js_found(code, at)}`"

    start = i
    word = _JS_WORD.match(code, i)
    if word and word.group() == "async":
        i, newline, err = _skip_js_trivia(code, word.end())
        if err:
            return err
        if newline:
            return fail(start, " (`async` and `function` must be on the same line)")
        word = _JS_WORD.match(code, i)
    if not word or word.group() != "function":
        return fail(start)
    i, _, err = _skip_js_trivia(code, word.end())
    if err:
        return err
    if code.startswith("*", i):
        return fail(start, " (generator functions cannot be the handler)")
    word = _JS_WORD.match(code, i)
    if not word or word.group() != "lambda":
        return fail(start, " (the function must be named `lambda`)")
    i, _, err = _skip_js_trivia(code, word.end())
    if err:
        return err
    if not code.startswith("(", i):
        return fail(start)
    return None


def _check_python_first_line(code: str) -> str | None:
    try:
        tree = ast.parse(code, filename=PYTHON_CODE_FILENAME)
    except SyntaxError as exc:
        return f"line {exc.lineno}: syntax error: {exc.msg}"
    body = list(tree.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body.pop(0)  # module docstring
    while body and isinstance(body[0], ast.Import | ast.ImportFrom):
        body.pop(0)
    if not body:
        return f"line 1: the code must define {_PYTHON_RULE}; found no such statement"
    stmt = body[0]
    lines = code.splitlines()
    found = lines[stmt.lineno - 1].strip()[:60] if stmt.lineno <= len(lines) else ""
    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) or stmt.name != "handler":
        return f"line {stmt.lineno}: the first statement after the imports must be {_PYTHON_RULE}; found `{found}`"
    if stmt.decorator_list:
        return f"line {stmt.decorator_list[0].lineno}: the handler must not be decorated"
    args = stmt.args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    if not positional and args.vararg is None:
        return f"line {stmt.lineno}: handler() must take the input as its first parameter"
    if required > 2:
        return (
            f"line {stmt.lineno}: handler() takes {required} required parameters; "
            "it is called with (input) or (input, callback)"
        )
    missing_kw = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    if missing_kw:
        return (
            f"line {stmt.lineno}: handler() has required keyword-only parameters "
            f"({', '.join(missing_kw)}); the runner passes none"
        )
    return None


# --------------------------------------------------------------------------- client


def _parse_log(message: dict[str, Any]) -> LogEntry:
    try:
        level = LogLevel(str(message.get("level")))
    except ValueError as exc:
        raise RunnerProtocolError(f"log frame with unknown level {message.get('level')!r}") from exc
    text = message.get("message")
    ts_ms = message.get("ts_ms")
    if not isinstance(text, str) or not isinstance(ts_ms, int | float):
        raise RunnerProtocolError("log frame needs a string 'message' and a numeric 'ts_ms'")
    return LogEntry(level=level, message=text, ts_ms=int(ts_ms))


def _parse_lambda_error(error: Any) -> LambdaError:
    if not isinstance(error, dict):
        raise RunnerProtocolError("result error must be an object")
    try:
        kind = ErrorKind(str(error.get("kind")))
    except ValueError as exc:
        raise RunnerProtocolError(f"unknown error kind {error.get('kind')!r}") from exc
    message = error.get("message")
    if not isinstance(message, str):
        raise RunnerProtocolError("result error needs a string 'message'")
    name = error.get("name")
    stack = error.get("stack")
    return LambdaError(
        kind=kind,
        message=clip(message, ERROR_MESSAGE_MAX_CHARS),
        name=clip(name, ERROR_NAME_MAX_CHARS) if isinstance(name, str) else None,
        stack=clip(stack, ERROR_STACK_MAX_CHARS) if isinstance(stack, str) else None,
    )


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, saying how much was cut."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… [{len(text) - max_chars} more characters cut]"


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value


class RunnerConnection:
    """A connection to one runner; one ``init`` or ``run`` at a time.

    Contract:

    1. ``connect()`` retries until the runner's socket accepts (the container may
       still be starting) and while the runner answers ``busy`` (it has not yet
       seen a previous connection close), then waits for ``ready``; it may be
       called once.
    2. ``init()`` loads the code; a code that does not load raises
       :class:`RunnerInitError`, a refusal raises :class:`RunnerRejected`.
    3. ``run()`` sends one invocation and returns its :class:`RunResult`. Log
       frames go to ``on_log`` as they arrive; ``toolbelt_call`` frames are
       answered concurrently by ``toolbelt`` (default: ping only).
    4. ``run()`` has no timeout of its own: the caller bounds it (the 30 s hard
       kill). If ``run()`` or ``init()`` is cancelled, or the connection breaks or
       carries a protocol violation, the connection is closed — the runner is in
       an unknown state and the container must not be reused. After
       :class:`RunnerRejected` and :class:`RunnerInitError` it stays open.
    5. ``close()`` is safe to call more than once.
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._busy = False
        # The budget the runner was given at init (a reconnect to an initialised
        # runner keeps the default, which is what the invoker gives every init).
        self._log_limit = LogLimit()
        self.state = ConnectionState.UNOPENED
        self._sent_ns = 0  # wall clock when the last init/run request was written
        self.info: RunnerInfo | None = None
        self.socket_path: str | None = None

    async def __aenter__(self) -> RunnerConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- lifecycle

    async def connect(self, socket_path: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> RunnerInfo:
        """Connect (retrying until ``timeout_s``) and read the ``ready`` frame."""
        if self.state is not ConnectionState.UNOPENED:
            raise RuntimeError(f"connect() on a {self.state.value} RunnerConnection")
        self.socket_path = socket_path
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = _CONNECT_RETRY_FIRST_S
        while True:
            retry_reason = ""
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(socket_path, limit=2**16)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                retry_reason = str(exc)
            else:
                self.state = ConnectionState.OPEN
                try:
                    # A listening runner answers at once; near the deadline
                    # still give it a moment rather than misreport it.
                    async with asyncio.timeout(max(deadline - loop.time(), _READY_MIN_WAIT_S)):
                        ready = await self._read()
                except TimeoutError as exc:
                    await self.close()
                    raise RunnerUnavailable(f"runner on {socket_path} sent no 'ready' in time") from exc
                except BaseException:
                    await self.close()
                    raise
                if ready["type"] != "error":
                    break
                # `busy`: the runner may not have seen the previous host
                # connection close yet; anything else is final.
                await self._drop_transport()
                if ready.get("code") != "busy" or loop.time() >= deadline:
                    self.state = ConnectionState.CLOSED
                    raise RunnerRejected(str(ready.get("code")), str(ready.get("message")))
                retry_reason = "busy"
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.state = ConnectionState.CLOSED
                if retry_reason == "busy":
                    raise RunnerRejected("busy", "another host connection is open")
                raise RunnerUnavailable(f"no runner on {socket_path} after {timeout_s:.1f}s: {retry_reason}")
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _CONNECT_RETRY_MAX_S)
        if ready["type"] != "ready":
            await self.close()
            raise RunnerProtocolError(f"expected 'ready', got {ready['type']!r}")
        self.info = RunnerInfo(
            runtime=str(ready.get("runtime")),
            version=str(ready.get("version")),
            pid=int(ready.get("pid") or 0),
            protocol=int(ready.get("protocol") or PROTOCOL_VERSION),
            initialized=bool(ready.get("initialized", False)),
        )
        return self.info

    def is_open(self) -> bool:
        """False once the runner's end is gone (its container died or was killed).

        The event loop keeps reading the socket between requests, so a runner that
        went away shows as end-of-stream here without sending anything.
        """
        reader, writer = self._reader, self._writer
        return (reader is not None and writer is not None and not reader.at_eof()
                and not writer.is_closing())

    async def close(self) -> None:
        """Close the connection; the runner keeps listening for a new one."""
        self.state = ConnectionState.CLOSED
        await self._drop_transport()

    async def _drop_transport(self) -> None:
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    # ---- messages

    async def init(
        self,
        *,
        code: str,
        runtime: Runtime | str,
        account_id: str,
        lambda_id: str,
        env: Mapping[str, str] | None = None,
        log_limit: LogLimit | None = None,
        init_id: str | None = None,
        on_log: LogCallback | None = None,
    ) -> InitResult:
        """Load the lambda's code into the runner (once per container)."""
        env_dict = dict(env or {})
        for key, value in env_dict.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("env must map str to str")
        message_id = init_id or f"init-{lambda_id}"
        limit = log_limit or LogLimit()
        message = {
            "type": "init",
            "id": message_id,
            "code": code,
            "runtime": Runtime(runtime).value,
            "env": env_dict,
            "account_id": account_id,
            "lambda_id": lambda_id,
            "log_limit": limit.to_wire(),
        }
        self._log_limit = limit
        budget = LogBudget(limit)
        reply = await self._exchange(message, "init_result", budget, on_log, None)
        logs = budget.kept
        error = reply.get("error")
        if reply.get("ok") is True:
            return InitResult(logs=logs,
                              logs_truncated=bool(reply.get("logs_truncated")) or budget.truncated)
        if not isinstance(error, dict):
            raise RunnerProtocolError("init_result with ok=false needs an 'error' object")
        line = error.get("line")
        stack = error.get("stack")
        raise RunnerInitError(
            clip(str(error.get("type") or "Error"), ERROR_NAME_MAX_CHARS),
            clip(str(error.get("message") or ""), ERROR_MESSAGE_MAX_CHARS),
            line=line if isinstance(line, int) else None,
            stack=clip(stack, ERROR_STACK_MAX_CHARS) if isinstance(stack, str) else None,
            logs=logs,
        )

    async def run(
        self,
        activation_id: str,
        input: Any,
        *,
        on_log: LogCallback | None = None,
        toolbelt: ToolbeltHandler | None = None,
        deadline_ms: int | None = None,
    ) -> RunResult:
        """Invoke the lambda once with ``input`` and wait for its result."""
        message: dict[str, Any] = {"type": "run", "id": activation_id, "input": input}
        if deadline_ms is not None:
            message["deadline_ms"] = deadline_ms
        budget = LogBudget(self._log_limit)
        reply = await self._exchange(message, "result", budget, on_log,
                                     toolbelt or default_toolbelt_handler)
        received_ns = time.time_ns()
        ok = reply.get("ok")
        if not isinstance(ok, bool):
            raise RunnerProtocolError("result needs a boolean 'ok'")
        error = None if ok else _parse_lambda_error(reply.get("error"))
        duration = reply.get("duration_ms")
        return RunResult(
            ok=ok,
            value=reply.get("value") if ok else None,
            error=error,
            duration_ms=float(duration) if isinstance(duration, int | float) else 0.0,
            logs=budget.kept,
            logs_truncated=bool(reply.get("logs_truncated")) or budget.truncated,
            sent_ns=self._sent_ns,
            received_ns=received_ns,
        )

    # ---- internals

    async def _exchange(
        self,
        message: dict[str, Any],
        reply_type: str,
        budget: LogBudget,
        on_log: LogCallback | None,
        toolbelt: ToolbeltHandler | None,
    ) -> dict[str, Any]:
        """Send ``message`` and read frames until the matching ``reply_type``.

        Logs go into ``budget``; the bounds of the module docstring apply.
        """
        if self.state is not ConnectionState.OPEN:
            raise RunnerClosed(f"the connection is {self.state.value}")
        if self._busy:
            raise RuntimeError("RunnerConnection handles one init/run at a time")
        frame = encode_frame(message, max_frame_bytes=self._max_frame_bytes)
        message_id = message["id"]
        self._busy = True
        calls: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(MAX_CONCURRENT_TOOLBELT_CALLS)
        toolbelt_calls = frames = foreign = 0
        completed = False
        try:
            await self._write(frame)
            self._sent_ns = time.time_ns()
            while True:
                incoming = await self._read()
                frames += 1
                if frames > MAX_FRAMES_PER_EXCHANGE:
                    raise RunnerProtocolError(
                        f"the runner sent more than {MAX_FRAMES_PER_EXCHANGE} frames for {message_id!r}")
                kind = incoming["type"]
                if incoming.get("id") != message_id and kind != "error":
                    # Late frames of an earlier invocation (e.g. logs after its result).
                    foreign += 1
                    if foreign > MAX_FOREIGN_FRAMES:
                        raise RunnerProtocolError(
                            f"the runner sent more than {MAX_FOREIGN_FRAMES} frames for other ids")
                    logger.debug("ignoring %s frame for id %r", kind, incoming.get("id"))
                    continue
                if kind == "log":
                    entry = _parse_log(incoming)
                    if budget.offer(entry) and on_log is not None:
                        await _maybe_await(on_log(entry))
                elif kind == "toolbelt_call" and toolbelt is not None:
                    toolbelt_calls += 1
                    if toolbelt_calls > MAX_TOOLBELT_CALLS:
                        await self._refuse_toolbelt_call(incoming)
                        continue
                    # Backpressure: the runner's further frames wait in the socket.
                    await slots.acquire()
                    task = asyncio.create_task(self._answer_toolbelt_call(incoming, toolbelt))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                    task.add_done_callback(lambda _: slots.release())
                elif kind == reply_type:
                    completed = True
                    marker = budget.marker()
                    if marker is not None:
                        budget.kept.append(marker)
                        if on_log is not None:
                            await _maybe_await(on_log(marker))
                    return incoming
                elif kind == "error":
                    if incoming.get("id") not in (message_id, None):
                        continue
                    completed = True
                    raise RunnerRejected(str(incoming.get("code")), str(incoming.get("message") or ""))
                else:
                    raise RunnerProtocolError(f"unexpected {kind!r} frame while awaiting {reply_type}")
        finally:
            self._busy = False
            for task in calls:
                task.cancel()
            if calls:
                await asyncio.gather(*calls, return_exceptions=True)
            if not completed:
                # Cancelled (deadline) or broken: the runner's state is unknown.
                await self.close()

    async def _refuse_toolbelt_call(self, call: dict[str, Any]) -> None:
        reply = {"type": "toolbelt_result", "id": call.get("id"), "call_id": call.get("call_id"),
                 "ok": False, "error": {"code": "too_many_calls", "message": (
                     f"at most {MAX_TOOLBELT_CALLS} toolbelt calls per invocation")}}
        try:
            frame = encode_frame(reply, max_frame_bytes=self._max_frame_bytes)
        except RunnerProtocolError:  # a call_id that is not JSON: nothing to answer
            return
        await self._write(frame)

    async def _answer_toolbelt_call(self, call: dict[str, Any], handler: ToolbeltHandler) -> None:
        reply: dict[str, Any] = {
            "type": "toolbelt_result",
            "id": call.get("id"),
            "call_id": call.get("call_id"),
        }
        method = call.get("method")
        args = call.get("args")
        try:
            if not isinstance(method, str):
                raise ToolbeltCallError("bad_call", "toolbelt_call needs a string 'method'")
            value = await handler(method, args if isinstance(args, list) else [])
            reply.update(ok=True, value=value)
        except ToolbeltCallError as exc:
            reply.update(ok=False, error={"code": exc.code, "message": exc.message})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("toolbelt handler failed for method %r", method)
            reply.update(ok=False, error={"code": "internal_error", "message": str(exc)})
        try:
            frame = encode_frame(reply, max_frame_bytes=self._max_frame_bytes)
        except RunnerProtocolError as exc:  # too large, or not JSON
            reply.pop("value", None)
            reply.update(ok=False, error={"code": "bad_value", "message": str(exc)})
            frame = encode_frame(reply, max_frame_bytes=self._max_frame_bytes)
        with contextlib.suppress(RunnerClosed):
            await self._write(frame)

    async def _write(self, frame: bytes) -> None:
        async with self._write_lock:
            if self._writer is None:
                raise RunnerClosed("the connection is closed")
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except ConnectionError as exc:
                raise RunnerClosed(f"writing to the runner failed: {exc}") from exc

    async def _read(self) -> dict[str, Any]:
        if self._reader is None:
            raise RunnerClosed("the connection is closed")
        return await read_frame(self._reader, max_frame_bytes=self._max_frame_bytes)
