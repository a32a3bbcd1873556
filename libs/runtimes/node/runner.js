'use strict';
// fnbus Node.js runner: the long-lived process inside a lambda container.
//
// It listens on a unix socket (FNBUS_RUNNER_SOCKET, default
// /run/fnbus/runner.sock), accepts one host connection at a time and speaks
// the protocol in docs/runner-protocol.md: `init` loads the lambda's code once,
// each `run` invokes it. Plain CommonJS for Node 18+, no npm dependencies.
//
// Contract:
//  1. One invocation at a time; a `run` while one is active is refused (`busy`).
//  2. Only the first completion of an invocation counts (callback, returned
//     promise, throw, uncaught exception or unhandled rejection).
//  3. An invocation that never completes never gets a result: the host enforces
//     the deadline by killing the container, the runner has no timer.
//  4. The runner survives anything the lambda throws and keeps serving.
//  5. Logs are limited per invocation; the first drop closes the budget and one
//     warn marker is sent just before the result.

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const vm = require('vm');
const { createRequire } = require('module');
const { performance } = require('perf_hooks');
const { AsyncLocalStorage } = require('async_hooks');

const toolbelt = require('./lp-faas-toolbelt');

const PROTOCOL_VERSION = 1;
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
const HEADER_BYTES = 4;
const DEFAULT_SOCKET_PATH = '/run/fnbus/runner.sock';
const CODE_FILENAME = 'index.js';
const CODE_PATH = path.join(__dirname, CODE_FILENAME);
const DEFAULT_LOG_LIMIT = { max_entries: 10, max_chars: 6000 };
const LOG_LEVELS = ['debug', 'info', 'log', 'warn', 'error'];
const TOOLBELT_MODULE = 'lp-faas-toolbelt';

const socketPath = process.env.FNBUS_RUNNER_SOCKET || DEFAULT_SOCKET_PATH;
// The lambda sees its own environment, not the runner's configuration.
delete process.env.FNBUS_RUNNER_SOCKET;

function diag(message) {
  process.stderr.write(`fnbus-runner[${process.pid}]: ${message}\n`);
}

// ------------------------------------------------------------------ frames

function encodeFrame(message) {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME_BYTES) {
    const err = new RangeError(`frame of ${body.length} bytes exceeds the limit of ${MAX_FRAME_BYTES} bytes`);
    err.frameBytes = body.length;
    throw err;
  }
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

// Incremental reader. Oversized frames are reported and their bodies skipped,
// so the stream stays in step and the connection remains usable.
class FrameReader {
  constructor({ onFrame, onOversize }) {
    this.onFrame = onFrame;
    this.onOversize = onOversize;
    this.chunks = [];
    this.buffered = 0;
    this.need = null; // body length of the frame being read
    this.discard = 0; // bytes of an oversized body still to skip
  }

  take(n) {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0];
      const count = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, count);
      filled += count;
      if (count === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(count);
    }
    this.buffered -= n;
    return out;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.discard > 0) {
        const count = Math.min(this.discard, this.buffered);
        if (count === 0) return;
        this.take(count);
        this.discard -= count;
        continue;
      }
      if (this.need === null) {
        if (this.buffered < HEADER_BYTES) return;
        const size = this.take(HEADER_BYTES).readUInt32BE(0);
        if (size > MAX_FRAME_BYTES) {
          this.discard = size;
          this.onOversize(size);
          continue;
        }
        this.need = size;
      }
      if (this.buffered < this.need) return;
      const body = this.take(this.need);
      this.need = null;
      this.onFrame(body);
    }
  }
}

// ------------------------------------------------------------------ state

const state = {
  socket: null, // the host connection, one at a time
  initialized: false,
  handler: null, // the lambda function
  wantsCallback: false, // the handler declares a callback parameter
  logLimit: DEFAULT_LOG_LIMIT,
  scope: null, // the active init or run (a Scope)
};

const pendingCalls = new Map(); // call_id -> { resolve, reject, scope }
let nextCallId = 1;

function send(message) {
  const socket = state.socket;
  if (!socket || socket.destroyed) {
    diag(`no host connected; dropped a ${message.type} frame for ${message.id}`);
    return;
  }
  socket.write(encodeFrame(message));
}

function sendError(id, code, message) {
  send({ type: 'error', id: id === undefined ? null : id, code, message });
}

// ------------------------------------------------------------------ log budget

// An init or a run: logs are attributed to it and counted against its budget.
class Scope {
  constructor(kind, id, limit) {
    this.kind = kind;
    this.id = id;
    this.limit = limit;
    this.entries = 0;
    this.chars = 0;
    this.truncated = false;
    this.droppedEntries = 0;
    this.droppedChars = 0;
    this.done = false;
    this.complete = null; // for runs: (ok, value, error) => void
  }

  log(level, message) {
    if (this.done) return;
    const fits =
      !this.truncated &&
      this.entries + 1 <= this.limit.max_entries &&
      this.chars + message.length <= this.limit.max_chars;
    if (!fits) {
      this.truncated = true;
      this.droppedEntries += 1;
      this.droppedChars += message.length;
      return;
    }
    try {
      send({ type: 'log', id: this.id, level, message, ts_ms: Date.now() });
    } catch (err) {
      // Only a budget larger than a frame gets here; count it as dropped.
      this.truncated = true;
      this.droppedEntries += 1;
      this.droppedChars += message.length;
      return;
    }
    this.entries += 1;
    this.chars += message.length;
  }

  // The one marker, sent just before the init_result / result.
  sendTruncationMarker() {
    if (!this.truncated) return;
    send({
      type: 'log',
      id: this.id,
      level: 'warn',
      message:
        `Log limit reached (${this.limit.max_entries} entries / ${this.limit.max_chars} characters ` +
        `per invocation): ${this.droppedEntries} entries with ${this.droppedChars} characters were dropped.`,
      ts_ms: Date.now(),
    });
  }
}

// Each init and run executes inside its own async context, so output and toolbelt
// calls from a timer or promise an earlier invocation left behind are attributed to
// that (finished) invocation and dropped, never to whichever one runs now.
const invocationContext = new AsyncLocalStorage();

function currentScope() {
  const bound = invocationContext.getStore();
  if (bound !== undefined) return bound.done ? null : bound;
  return state.scope;
}

function installConsole() {
  const emit = (level) => (...args) => {
    const scope = currentScope();
    if (scope) scope.log(level, util.format(...args));
  };
  for (const level of LOG_LEVELS) console[level] = emit(level);
  console.trace = (...args) => {
    const scope = currentScope();
    if (!scope) return;
    const stack = new Error().stack.split('\n').slice(2).join('\n');
    scope.log('debug', `Trace: ${util.format(...args)}\n${stack}`);
  };
  console.dir = (obj, options) => {
    const scope = currentScope();
    if (scope) scope.log('log', util.inspect(obj, options));
  };
}

// ------------------------------------------------------------------ errors

function isErrorLike(value) {
  return value !== null && typeof value === 'object' && typeof value.message === 'string';
}

// Remove the runner's own frames so stacks show the lambda's code only.
function cleanStack(stack) {
  if (typeof stack !== 'string') return undefined;
  return stack
    .split('\n')
    .filter((line) => !(/^\s+at /.test(line) && (line.includes(__filename) || /node:(internal\/)?vm/.test(line))))
    .join('\n');
}

function lineOf(err) {
  if (!err || typeof err.stack !== 'string') return undefined;
  const match = new RegExp(`${CODE_FILENAME.replace('.', '\\.')}:(\\d+)`).exec(err.stack);
  return match ? Number(match[1]) : undefined;
}

function describe(value) {
  if (typeof value === 'string') return value;
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch (_) {
    // fall through to inspect
  }
  return util.inspect(value);
}

function lambdaError(kind, value) {
  if (isErrorLike(value)) {
    const error = { kind, message: value.message };
    if (typeof value.name === 'string') error.name = value.name;
    const stack = cleanStack(value.stack);
    if (stack) error.stack = stack;
    return error;
  }
  return { kind, message: describe(value) };
}

// ------------------------------------------------------------------ init

function lambdaRequire() {
  const base = createRequire(CODE_PATH);
  const req = function require(name) {
    if (name === TOOLBELT_MODULE) return toolbelt;
    return base(name);
  };
  req.resolve = base.resolve;
  req.cache = base.cache;
  return req;
}

function initFailure(error) {
  const out = { type: typeof error.name === 'string' ? error.name : 'Error', message: String(error.message) };
  const stack = cleanStack(error.stack);
  if (stack) out.stack = stack;
  const line = lineOf(error);
  if (line !== undefined) out.line = line;
  return out;
}

function handleInit(msg) {
  if (state.initialized) {
    sendError(msg.id, 'already_initialized', 'the runner already holds a lambda; start a new container');
    return;
  }
  if (typeof msg.code !== 'string') {
    sendError(msg.id, 'bad_message', 'init needs a string "code"');
    return;
  }
  if (msg.runtime !== undefined && msg.runtime !== 'node') {
    send({
      type: 'init_result',
      id: msg.id,
      ok: false,
      error: { type: 'RuntimeMismatch', message: `this is the node runner; the code is for "${msg.runtime}"` },
    });
    return;
  }
  const env = msg.env && typeof msg.env === 'object' ? msg.env : {};
  for (const [key, value] of Object.entries(env)) process.env[key] = String(value);
  process.env.BRAND_ID = String(msg.account_id === undefined || msg.account_id === null ? '' : msg.account_id);
  const limit = msg.log_limit && typeof msg.log_limit === 'object' ? msg.log_limit : {};
  state.logLimit = {
    max_entries: Number.isInteger(limit.max_entries) ? limit.max_entries : DEFAULT_LOG_LIMIT.max_entries,
    max_chars: Number.isInteger(limit.max_chars) ? limit.max_chars : DEFAULT_LOG_LIMIT.max_chars,
  };

  const scope = new Scope('init', msg.id, state.logLimit);
  state.scope = scope;
  let error = null;
  try {
    // compileFunction keeps the code's line numbers (no wrapper line). The
    // trailing line hands back whatever `lambda` names after the top level ran.
    const fn = vm.compileFunction(
      `${msg.code}\n;return typeof lambda === "function" ? lambda : undefined;`,
      ['exports', 'require', 'module', '__filename', '__dirname'],
      { filename: CODE_FILENAME },
    );
    const mod = { exports: {}, id: CODE_PATH, filename: CODE_PATH };
    const handler = invocationContext.run(
      scope, () => fn.call(mod.exports, mod.exports, lambdaRequire(), mod, CODE_PATH, __dirname));
    if (typeof handler !== 'function') {
      error = {
        type: 'LambdaNotFound',
        message: 'the code does not define function lambda(input, callback)',
        line: 1,
      };
    } else {
      state.handler = handler;
      state.wantsCallback = handler.length >= 2;
      state.initialized = true;
    }
  } catch (err) {
    error = isErrorLike(err) ? initFailure(err) : { type: 'Error', message: describe(err) };
  }
  scope.sendTruncationMarker();
  scope.done = true;
  state.scope = null;
  const reply = { type: 'init_result', id: msg.id, ok: error === null, logs_truncated: scope.truncated };
  if (error) reply.error = error;
  send(reply);
}

// ------------------------------------------------------------------ run

function handleRun(msg) {
  if (!state.initialized) {
    sendError(msg.id, 'not_initialized', 'send init before run');
    return;
  }
  if (state.scope && !state.scope.done) {
    sendError(msg.id, 'busy', `invocation ${state.scope.id} is still running`);
    return;
  }
  const scope = new Scope('run', msg.id, state.logLimit);
  state.scope = scope;
  const started = performance.now();

  scope.complete = (ok, value, error) => {
    if (scope.done) return;
    const duration = Math.round((performance.now() - started) * 1000) / 1000;
    const result = { type: 'result', id: scope.id, ok, duration_ms: duration, logs_truncated: scope.truncated };
    if (ok) {
      result.value = value;
    } else {
      result.error = error;
    }
    let frame;
    try {
      frame = encodeFrame(result);
    } catch (err) {
      const why = err instanceof RangeError && err.frameBytes
        ? `the result is ${err.frameBytes} bytes as JSON, more than the ${MAX_FRAME_BYTES}-byte limit`
        : `the result cannot be serialised as JSON: ${err.message}`;
      delete result.value;
      result.ok = false;
      result.error = { kind: 'runtime-exception', message: why, name: 'ResultError' };
      frame = encodeFrame(result);
    }
    scope.sendTruncationMarker();
    scope.done = true;
    if (state.scope === scope) state.scope = null;
    if (state.socket && !state.socket.destroyed) state.socket.write(frame);
    else diag(`no host connected; dropped the result of ${scope.id}`);
    rejectPendingCalls(scope);
  };

  const callback = (err, result) => {
    if (err !== null && err !== undefined) scope.complete(false, undefined, lambdaError('custom-failure', err));
    else scope.complete(true, result);
  };

  let returned;
  try {
    returned = invocationContext.run(scope, () => state.handler.call(undefined, msg.input, callback));
  } catch (err) {
    scope.complete(false, undefined, lambdaError('runtime-exception', err));
    return;
  }
  if (returned !== null && typeof returned === 'object' && typeof returned.then === 'function') {
    Promise.resolve(returned).then(
      (value) => {
        // An async lambda that declares a callback and resolves with nothing
        // may still call back later (e.g. from a .then it did not await).
        if (value !== undefined || !state.wantsCallback) scope.complete(true, value);
      },
      (err) => scope.complete(false, undefined, lambdaError('runtime-exception', err)),
    );
  }
}

// ------------------------------------------------------------------ toolbelt

function toolbeltCall(method, args) {
  const scope = currentScope();
  if (!scope || scope.kind !== 'run' || scope.done) {
    return Promise.reject(
      new toolbelt.ToolbeltError('no_invocation', 'toolbelt calls can only be made while an invocation runs'),
    );
  }
  const callId = String(nextCallId++);
  return new Promise((resolve, reject) => {
    pendingCalls.set(callId, { resolve, reject, scope });
    try {
      send({ type: 'toolbelt_call', id: scope.id, call_id: callId, method, args });
    } catch (err) {
      pendingCalls.delete(callId);
      reject(new toolbelt.ToolbeltError('bad_call', `cannot send the toolbelt call: ${err.message}`));
    }
  });
}

function handleToolbeltResult(msg) {
  const pending = pendingCalls.get(String(msg.call_id));
  if (!pending) return; // late answer for a finished invocation
  pendingCalls.delete(String(msg.call_id));
  if (msg.ok === true) {
    pending.resolve(msg.value);
  } else {
    const error = msg.error && typeof msg.error === 'object' ? msg.error : {};
    pending.reject(new toolbelt.ToolbeltError(String(error.code || 'error'), String(error.message || 'toolbelt call failed')));
  }
}

function rejectPendingCalls(scope) {
  for (const [callId, pending] of pendingCalls) {
    if (pending.scope !== scope) continue;
    pendingCalls.delete(callId);
    pending.reject(new toolbelt.ToolbeltError('invocation_finished', 'the invocation finished before the toolbelt answered'));
  }
}

// ------------------------------------------------------------------ uncaught

function failCurrent(kind, err) {
  const scope = state.scope;
  if (scope && scope.kind === 'run' && !scope.done) {
    scope.complete(false, undefined, lambdaError('runtime-exception', err));
    return;
  }
  diag(`${kind} outside an invocation: ${isErrorLike(err) ? err.stack || err.message : describe(err)}`);
}

process.on('uncaughtException', (err) => failCurrent('uncaught exception', err));
process.on('unhandledRejection', (reason) => failCurrent('unhandled rejection', reason));

// ------------------------------------------------------------------ connection

function dispatch(body) {
  let msg;
  try {
    msg = JSON.parse(body.toString('utf8'));
  } catch (err) {
    sendError(null, 'bad_frame', `frame body is not JSON: ${err.message}`);
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
    sendError(null, 'bad_frame', 'a frame must hold a JSON object with a string "type"');
    return;
  }
  if (msg.type !== 'toolbelt_result' && (typeof msg.id !== 'string' || msg.id === '')) {
    sendError(msg.id, 'bad_message', `${msg.type} needs a non-empty string "id"`);
    return;
  }
  switch (msg.type) {
    case 'init':
      handleInit(msg);
      break;
    case 'run':
      handleRun(msg);
      break;
    case 'toolbelt_result':
      handleToolbeltResult(msg);
      break;
    default:
      sendError(msg.id, 'unknown_type', `unknown message type "${msg.type}"`);
  }
}

function onConnection(socket) {
  if (state.socket && !state.socket.destroyed) {
    socket.end(encodeFrame({ type: 'error', id: null, code: 'busy', message: 'another host connection is open' }));
    return;
  }
  state.socket = socket;
  const reader = new FrameReader({
    onFrame: dispatch,
    onOversize: (size) =>
      sendError(null, 'frame_too_large', `frame of ${size} bytes exceeds the limit of ${MAX_FRAME_BYTES} bytes`),
  });
  socket.on('data', (chunk) => reader.push(chunk));
  socket.on('error', (err) => diag(`connection error: ${err.message}`));
  socket.on('close', () => {
    if (state.socket === socket) state.socket = null;
  });
  send({
    type: 'ready',
    runtime: 'node',
    version: process.versions.node,
    pid: process.pid,
    protocol: PROTOCOL_VERSION,
    initialized: state.initialized,
  });
}

function main() {
  toolbelt._attachTransport(toolbeltCall);
  installConsole();
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const server = net.createServer(onConnection);
  server.on('error', (err) => {
    diag(`cannot listen on ${socketPath}: ${err.message}`);
    process.exit(1);
  });
  server.listen(socketPath, () => {
    fs.chmodSync(socketPath, 0o666);
    diag(`listening on ${socketPath}`);
  });
  const stop = () => {
    server.close();
    try {
      fs.unlinkSync(socketPath);
    } catch (_) {
      // already gone
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
