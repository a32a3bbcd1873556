#!/usr/bin/env python3
"""fnbus Python runner: the long-lived process inside a Python lambda container.

It listens on a unix socket (``FNBUS_RUNNER_SOCKET``, default
``/run/fnbus/runner.sock``), accepts one host connection at a time and speaks
the protocol in docs/runner-protocol.md: ``init`` loads the lambda's code once,
each ``run`` invokes its ``handler``. Standard library only (Python 3.11).

The handler (see docs/runner-protocol.md, "Python handler"):

- ``def handler(input)`` / ``async def handler(input)``: the return value is the
  result; an exception is a runtime exception; raising
  ``lp_faas_toolbelt.CustomFailure`` is a custom failure.
- With a second positional parameter, ``handler(input, callback)`` also gets
  ``callback(error, result)``. Returning something other than None completes
  the invocation; returning None means "I will call back".

Contract:

1. One invocation at a time; a ``run`` while one is active is refused (``busy``).
2. Plain ``def`` handlers run in a fresh thread, ``async def`` handlers on the
   runner's event loop; either way only the first completion counts.
3. An invocation that never completes gets no result: the host kills the
   container at the deadline; the runner has no timer.
4. Exceptions in threads or loop callbacks during an invocation fail it as a
   runtime exception; the runner keeps serving.
5. ``print``, ``sys.stdout``/``sys.stderr``, the ``logging`` module and the
   injected ``console`` object become log frames, limited per invocation.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import io
import json
import linecache
import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
import types
from typing import Any

# The toolbelt lives next to this file; `python3 -I` leaves this directory off
# sys.path, so put it there for the runner and for the lambda's imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import lp_faas_toolbelt  # noqa: E402

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 * 1024 * 1024
HEADER_BYTES = 4
DEFAULT_SOCKET_PATH = "/run/fnbus/runner.sock"
CODE_FILENAME = "handler.py"
HANDLER_NAME = "handler"
LAMBDA_MODULE_NAME = "lambda_handler"
DEFAULT_MAX_ENTRIES = 10
DEFAULT_MAX_CHARS = 6000
_DISCARD_CHUNK_BYTES = 1 << 16
_RUNNER_FILE = os.path.abspath(__file__)


def diag(message: str) -> None:
    """The runner's own diagnostics: container stderr, never the lambda's logs."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"fnbus-runner[{os.getpid()}]: {message}\n")
        stream.flush()


class FrameTooLarge(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")
        self.size = size


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(len(body))
    return len(body).to_bytes(HEADER_BYTES, "big") + body


# ---------------------------------------------------------------- errors


def _stack(exc: BaseException) -> str:
    """The traceback without the runner's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([frame for frame in te.stack if frame.filename != _RUNNER_FILE])
    return "".join(te.format())


def _code_line(exc: BaseException) -> int | None:
    """Line of the innermost frame in the lambda's code."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == CODE_FILENAME:
            line = frame.lineno
    return line


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def lambda_error(kind: str, value: Any) -> dict[str, Any]:
    if isinstance(value, BaseException):
        error = {
            "kind": kind,
            "message": str(value) or type(value).__name__,
            "name": type(value).__name__,
        }
        if value.__traceback__ is not None:  # never raised: no stack worth showing
            error["stack"] = _stack(value)
        return error
    return {"kind": kind, "message": _describe(value)}


# ---------------------------------------------------------------- log capture


class Scope:
    """An init or a run: logs are attributed to it and counted against its budget."""

    def __init__(self, kind: str, id: str, max_entries: int, max_chars: int) -> None:
        self.kind = kind
        self.id = id
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.entries = 0
        self.chars = 0
        self.truncated = False
        self.dropped_entries = 0
        self.dropped_chars = 0
        self.done = False
        self.lock = threading.Lock()
        self.started = time.perf_counter()

    def drop(self, message: str) -> None:
        self.truncated = True
        self.dropped_entries += 1
        self.dropped_chars += len(message)

    def marker(self) -> dict[str, Any]:
        return {
            "type": "log",
            "id": self.id,
            "level": "warn",
            "message": (
                f"Log limit reached ({self.max_entries} entries / {self.max_chars} characters "
                f"per invocation): {self.dropped_entries} entries with {self.dropped_chars} "
                "characters were dropped."
            ),
            "ts_ms": int(time.time() * 1000),
        }


class LogStream(io.TextIOBase):
    """A text stream that turns each complete line into a log entry."""

    def __init__(self, runner: Runner, level: str) -> None:
        super().__init__()
        self._runner = runner
        self._level = level
        self._buffer = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._runner.log(self._level, line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._runner.log(self._level, rest)


class LogHandler(logging.Handler):
    """Root-logger handler: logging records become log entries."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(logging.DEBUG)
        self._runner = runner
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if record.levelno < logging.INFO:
            level = "debug"
        elif record.levelno < logging.WARNING:
            level = "info"
        elif record.levelno < logging.ERROR:
            level = "warn"
        else:
            level = "error"
        self._runner.log(level, message)


class Console:
    """``console.log(...)`` and friends, as in the Node runtime."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def _emit(self, level: str, args: tuple[Any, ...]) -> None:
        self._runner.log(level, " ".join(str(arg) for arg in args))

    def debug(self, *args: Any) -> None:
        self._emit("debug", args)

    def info(self, *args: Any) -> None:
        self._emit("info", args)

    def log(self, *args: Any) -> None:
        self._emit("log", args)

    def warn(self, *args: Any) -> None:
        self._emit("warn", args)

    warning = warn

    def error(self, *args: Any) -> None:
        self._emit("error", args)


# ---------------------------------------------------------------- runner


def _object(value: Any) -> dict[str, Any]:
    """A JSON object field, or {} when absent or not an object."""
    return value if isinstance(value, dict) else {}


def _accepts_callback(handler: Any) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2


class Runner:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.initialized = False
        self.handler: Any = None
        self.is_async = False
        self.wants_callback = False
        self.max_entries = DEFAULT_MAX_ENTRIES
        self.max_chars = DEFAULT_MAX_CHARS
        self.scope: Scope | None = None
        self.pending_calls: dict[str, tuple[asyncio.Future[Any], Scope]] = {}
        self.next_call_id = 1
        self.tasks: set[asyncio.Future[Any]] = set()
        self.console = Console(self)
        self.stdout = LogStream(self, "log")
        self.stderr = LogStream(self, "error")

    # ---- output

    def _write(self, frame: bytes) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            diag("no host connected; dropped a frame")
            return
        writer.write(frame)

    def _schedule(self, frame: bytes) -> None:
        # Every frame goes through the loop's FIFO, from any thread, so frames
        # leave in the order they were produced.
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(self._write, frame)
        except RuntimeError:  # loop closed during shutdown
            pass

    def send(self, message: dict[str, Any]) -> None:
        self._schedule(encode_frame(message))

    def send_error(self, id: Any, code: str, message: str) -> None:
        self.send(
            {
                "type": "error",
                "id": id if isinstance(id, str) else None,
                "code": code,
                "message": message,
            }
        )

    def log(self, level: str, message: str) -> None:
        scope = self.scope
        if scope is None:
            return  # outside an init or run: nobody to attribute it to
        with scope.lock:
            if scope.done:
                return
            if scope.truncated or scope.entries + 1 > scope.max_entries or scope.chars + len(message) > scope.max_chars:
                scope.drop(message)
                return
            frame_message = {
                "type": "log",
                "id": scope.id,
                "level": level,
                "message": message,
                "ts_ms": int(time.time() * 1000),
            }
            try:
                frame = encode_frame(frame_message)
            except ValueError:  # a budget bigger than a frame
                scope.drop(message)
                return
            scope.entries += 1
            scope.chars += len(message)
            self._schedule(frame)

    def _flush_streams(self) -> None:
        self.stdout.flush()
        self.stderr.flush()

    # ---- completion

    def complete(self, scope: Scope, ok: bool, value: Any = None, error: dict[str, Any] | None = None) -> None:
        """First completion of ``scope`` wins; callable from any thread."""
        if scope.done:
            return
        self._flush_streams()
        with scope.lock:
            if scope.done:
                return
            scope.done = True
            duration_ms = round((time.perf_counter() - scope.started) * 1000, 3)
            result: dict[str, Any] = {
                "type": "result",
                "id": scope.id,
                "ok": ok,
                "duration_ms": duration_ms,
                "logs_truncated": scope.truncated,
            }
            if ok:
                result["value"] = value
            else:
                result["error"] = error
            try:
                frame = encode_frame(result)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, FrameTooLarge):
                    why = f"the result is {exc.size} bytes as JSON, more than the {MAX_FRAME_BYTES}-byte limit"
                else:
                    why = f"the result cannot be serialised as JSON: {exc}"
                result.pop("value", None)
                result.update(
                    ok=False,
                    error={"kind": "runtime-exception", "message": why, "name": "ResultError"},
                )
                frame = encode_frame(result)
            if scope.truncated:
                self.send(scope.marker())
            self._schedule(frame)
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._finish_run, scope)

    def _finish_run(self, scope: Scope) -> None:
        if self.scope is scope:
            self.scope = None
        for call_id, (future, owner) in list(self.pending_calls.items()):
            if owner is scope:
                del self.pending_calls[call_id]
                if not future.done():
                    future.set_exception(
                        lp_faas_toolbelt.ToolbeltError(
                            "invocation_finished",
                            "the invocation finished before the toolbelt answered",
                        )
                    )

    def fail_current(self, what: str, exc: BaseException) -> None:
        scope = self.scope
        if scope is not None and scope.kind == "run" and not scope.done:
            self.complete(scope, False, error=lambda_error("runtime-exception", exc))
        else:
            diag(f"{what} outside an invocation: {''.join(traceback.format_exception(exc))}")

    # ---- init

    def handle_init(self, msg: dict[str, Any]) -> None:
        if self.initialized:
            self.send_error(
                msg["id"],
                "already_initialized",
                "the runner already holds a lambda; start a new container",
            )
            return
        code = msg.get("code")
        if not isinstance(code, str):
            self.send_error(msg["id"], "bad_message", 'init needs a string "code"')
            return
        runtime = msg.get("runtime")
        if runtime not in (None, "python"):
            self.send(
                {
                    "type": "init_result",
                    "id": msg["id"],
                    "ok": False,
                    "error": {
                        "type": "RuntimeMismatch",
                        "message": f'this is the python runner; the code is for "{runtime}"',
                    },
                }
            )
            return
        env = _object(msg.get("env"))
        os.environ.update({str(k): str(v) for k, v in env.items()})
        account_id = msg.get("account_id")
        os.environ["BRAND_ID"] = "" if account_id is None else str(account_id)
        limit = _object(msg.get("log_limit"))
        max_entries, max_chars = limit.get("max_entries"), limit.get("max_chars")
        self.max_entries = max_entries if isinstance(max_entries, int) else DEFAULT_MAX_ENTRIES
        self.max_chars = max_chars if isinstance(max_chars, int) else DEFAULT_MAX_CHARS

        scope = Scope("init", msg["id"], self.max_entries, self.max_chars)
        self.scope = scope
        error: dict[str, Any] | None = None
        try:
            # Source lines for tracebacks of the lambda's frames.
            linecache.cache[CODE_FILENAME] = (len(code), None, code.splitlines(True), CODE_FILENAME)
            compiled = compile(code, CODE_FILENAME, "exec", dont_inherit=True)
            module = types.ModuleType(LAMBDA_MODULE_NAME)
            module.__file__ = CODE_FILENAME
            module.console = self.console  # type: ignore[attr-defined]
            sys.modules[LAMBDA_MODULE_NAME] = module
            exec(compiled, module.__dict__)
            handler = module.__dict__.get(HANDLER_NAME)
            if not callable(handler):
                error = {
                    "type": "LambdaNotFound",
                    "line": 1,
                    "message": f"the code does not define def {HANDLER_NAME}(input, ...)",
                }
            else:
                self.handler = handler
                self.is_async = inspect.iscoroutinefunction(handler)
                self.wants_callback = _accepts_callback(handler)
                self.initialized = True
        except SyntaxError as exc:
            error = {
                "type": type(exc).__name__,
                "message": exc.msg,
                "stack": "".join(traceback.format_exception_only(exc)),
            }
            if exc.lineno is not None:
                error["line"] = exc.lineno
        except (Exception, SystemExit) as exc:
            error = {"type": type(exc).__name__, "message": str(exc), "stack": _stack(exc)}
            line = _code_line(exc)
            if line is not None:
                error["line"] = line
        self._flush_streams()
        with scope.lock:
            if scope.truncated:
                self.send(scope.marker())
            scope.done = True
        self.scope = None
        reply: dict[str, Any] = {
            "type": "init_result",
            "id": msg["id"],
            "ok": error is None,
            "logs_truncated": scope.truncated,
        }
        if error is not None:
            reply["error"] = error
        self.send(reply)

    # ---- run

    def handle_run(self, msg: dict[str, Any]) -> None:
        if not self.initialized:
            self.send_error(msg["id"], "not_initialized", "send init before run")
            return
        if self.scope is not None and not self.scope.done:
            self.send_error(msg["id"], "busy", f"invocation {self.scope.id} is still running")
            return
        scope = Scope("run", msg["id"], self.max_entries, self.max_chars)
        self.scope = scope

        def callback(error: Any = None, result: Any = None) -> None:
            if error is not None:
                self.complete(scope, False, error=lambda_error("custom-failure", error))
            else:
                self.complete(scope, True, result)

        args = (msg.get("input"), callback) if self.wants_callback else (msg.get("input"),)
        if self.is_async:
            try:
                awaitable = self.handler(*args)
            except BaseException as exc:
                self._fail_with(scope, exc)
                return
            self._spawn(self._await_handler(scope, awaitable))
        else:
            thread = threading.Thread(target=self._run_sync, args=(scope, args), name=f"lambda-{scope.id}", daemon=True)
            thread.start()

    def _spawn(self, coro: Any) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _fail_with(self, scope: Scope, exc: BaseException) -> None:
        kind = "custom-failure" if isinstance(exc, lp_faas_toolbelt.CustomFailure) else "runtime-exception"
        self.complete(scope, False, error=lambda_error(kind, exc))

    def _returned(self, scope: Scope, value: Any) -> None:
        # None from a handler that takes a callback means "I will call back".
        if value is not None or not self.wants_callback:
            self.complete(scope, True, value)

    def _run_sync(self, scope: Scope, args: tuple[Any, ...]) -> None:
        try:
            value = self.handler(*args)
        except BaseException as exc:
            self._fail_with(scope, exc)
            return
        if inspect.isawaitable(value):
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._spawn, self._await_handler(scope, value))
            return
        self._returned(scope, value)

    async def _await_handler(self, scope: Scope, awaitable: Any) -> None:
        try:
            value = await awaitable
        except BaseException as exc:
            self._fail_with(scope, exc)
            return
        self._returned(scope, value)

    # ---- toolbelt

    async def toolbelt_call(self, method: str, args: list[Any]) -> Any:
        """Send a ``toolbelt_call`` and wait for its ``toolbelt_result`` (loop thread)."""
        scope = self.scope
        if scope is None or scope.kind != "run" or scope.done:
            raise lp_faas_toolbelt.ToolbeltError(
                "no_invocation", "toolbelt calls can only be made while an invocation runs"
            )
        assert self.loop is not None
        call_id = str(self.next_call_id)
        self.next_call_id += 1
        future: asyncio.Future[Any] = self.loop.create_future()
        try:
            frame = encode_frame(
                {
                    "type": "toolbelt_call",
                    "id": scope.id,
                    "call_id": call_id,
                    "method": method,
                    "args": args,
                }
            )
        except (TypeError, ValueError) as exc:
            raise lp_faas_toolbelt.ToolbeltError("bad_call", f"cannot send the toolbelt call: {exc}") from exc
        self.pending_calls[call_id] = (future, scope)
        self._schedule(frame)
        return await future

    def handle_toolbelt_result(self, msg: dict[str, Any]) -> None:
        pending = self.pending_calls.pop(str(msg.get("call_id")), None)
        if pending is None:
            return  # late answer for a finished invocation
        future, _ = pending
        if future.done():
            return
        if msg.get("ok") is True:
            future.set_result(msg.get("value"))
        else:
            error = _object(msg.get("error"))
            future.set_exception(
                lp_faas_toolbelt.ToolbeltError(
                    str(error.get("code") or "error"),
                    str(error.get("message") or "toolbelt call failed"),
                )
            )

    # ---- connection

    def dispatch(self, body: bytes) -> None:
        try:
            msg = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self.send_error(None, "bad_frame", f"frame body is not UTF-8 JSON: {exc}")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.send_error(None, "bad_frame", 'a frame must hold a JSON object with a string "type"')
            return
        kind = msg["type"]
        if kind != "toolbelt_result" and not (isinstance(msg.get("id"), str) and msg["id"]):
            self.send_error(msg.get("id"), "bad_message", f'{kind} needs a non-empty string "id"')
            return
        if kind == "init":
            self.handle_init(msg)
        elif kind == "run":
            self.handle_run(msg)
        elif kind == "toolbelt_result":
            self.handle_toolbelt_result(msg)
        else:
            self.send_error(msg.get("id"), "unknown_type", f'unknown message type "{kind}"')

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.writer is not None and not self.writer.is_closing():
            writer.write(
                encode_frame(
                    {
                        "type": "error",
                        "id": None,
                        "code": "busy",
                        "message": "another host connection is open",
                    }
                )
            )
            writer.close()
            return
        self.writer = writer
        self.send(
            {
                "type": "ready",
                "runtime": "python",
                "version": platform.python_version(),
                "pid": os.getpid(),
                "protocol": PROTOCOL_VERSION,
                "initialized": self.initialized,
            }
        )
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(HEADER_BYTES), "big")
                if size > MAX_FRAME_BYTES:
                    self.send_error(
                        None,
                        "frame_too_large",
                        f"frame of {size} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes",
                    )
                    # Skip the body so the stream stays in step.
                    while size > 0:
                        chunk = await reader.read(min(size, _DISCARD_CHUNK_BYTES))
                        if not chunk:
                            raise asyncio.IncompleteReadError(b"", size)
                        size -= len(chunk)
                    continue
                self.dispatch(await reader.readexactly(size))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()

    # ---- process

    def _thread_excepthook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            self.fail_current("uncaught exception in a thread", args.exc_value)

    def _loop_exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            self.fail_current(str(context.get("message") or "uncaught exception"), exc)
        else:
            diag(str(context.get("message")))

    def install_capture(self) -> None:
        """Route print, stdout/stderr and logging to the current invocation."""
        original_print = builtins.print

        def lambda_print(
            *args: Any,
            sep: str | None = " ",
            end: str | None = "\n",
            file: Any = None,
            flush: bool = False,
        ) -> None:
            if file is None or file is self.stdout or file is self.stderr:
                level = "error" if file is self.stderr else "log"
                self.log(level, (" " if sep is None else sep).join(str(a) for a in args))
            else:
                original_print(*args, sep=sep, end=end, file=file, flush=flush)

        builtins.print = lambda_print
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(LogHandler(self))
        threading.excepthook = self._thread_excepthook

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(self._loop_exception_handler)
        lp_faas_toolbelt._attach(self.toolbelt_call, self.loop)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(self.on_client, path=self.socket_path)
        os.chmod(self.socket_path, 0o666)
        diag(f"listening on {self.socket_path}")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass


def main() -> None:
    # The lambda sees its own environment, not the runner's configuration.
    socket_path = os.environ.pop("FNBUS_RUNNER_SOCKET", "") or DEFAULT_SOCKET_PATH
    runner = Runner(socket_path)
    runner.install_capture()
    try:
        asyncio.run(runner.serve())
    except OSError as exc:
        diag(f"cannot listen on {socket_path}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
