'use strict';
// fnbus's "lp-faas-toolbelt": the lambda side of the toolbelt.
//
// Lambdas written for LivePerson Functions do
//     const { Toolbelt } = require("lp-faas-toolbelt");
// and get the same clients with the same call shapes. Containers have no
// network: every client is a thin layer that turns a call into a
// `toolbelt_call` frame `{method, args}` (docs/runner-protocol.md), which the
// runner sends to the host; the host applies policy (allowlist, network rules,
// rate limit, budget) and answers. The methods and their arguments are fixed
// by the toolbelt wire contract (docs/toolbelt.md, "Wire contract").
//
// Contract:
//  1. Creating a client never fails (code that builds clients at its top level
//     loads), except MTLSClient given PEM contents, which throws at once.
//  2. HTTPClient and LpClient behave like request-promise: options are
//     normalised here (qs, json, form, auth, encoding), the host answers with
//     status, headers and body, and `simple` / `resolveWithFullResponse` /
//     `json` parsing are applied here. Transport failures reject with
//     RequestError, non-2xx (with simple) with StatusCodeError; the host's
//     `rate_limited` is a StatusCodeError 429 whatever `simple` says.
//  3. Other clients pass their arguments through and resolve with the host's
//     value; host errors reject with ToolbeltError carrying the host's `code`.
//  4. Clients this platform cannot serve reject with NotAvailableError.

const http = require('http');

// ------------------------------------------------------------------ errors

class ToolbeltError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ToolbeltError';
    this.code = code;
  }
}

class NotAvailableError extends ToolbeltError {
  constructor(what, why) {
    super('not_available', `lp-faas-toolbelt: ${what} is not available on this platform${why ? `: ${why}` : ' yet'}`);
    this.name = 'NotAvailableError';
  }
}

// request-promise's error shapes (require('request-promise/errors')).
class RequestError extends Error {
  constructor(cause, options, response) {
    super(String(cause));
    this.name = 'RequestError';
    this.cause = cause;
    this.error = cause; // request-promise keeps both names
    this.options = options;
    this.response = response;
    if (cause && cause.code !== undefined) this.code = cause.code;
  }
}

class StatusCodeError extends Error {
  constructor(statusCode, body, options, response) {
    super(`${statusCode} - ${describeBody(body)}`);
    this.name = 'StatusCodeError';
    this.statusCode = statusCode;
    this.error = body;
    this.options = options;
    this.response = response;
  }
}

class TransformError extends Error {
  constructor(cause, options, response) {
    super(cause && cause.message ? cause.message : String(cause));
    this.name = 'TransformError';
    this.cause = cause;
    this.error = cause;
    this.options = options;
    this.response = response;
  }
}

function describeBody(body) {
  if (Buffer.isBuffer(body)) return JSON.stringify(body.toString('utf8'));
  try {
    const json = JSON.stringify(body);
    return json === undefined ? String(body) : json;
  } catch (_) {
    return String(body);
  }
}

// ------------------------------------------------------------------ transport

// Set by the runner; (method, args) => Promise of the host's answer.
let transport = null;

function attachTransport(fn) {
  transport = fn;
}

function call(method, args) {
  if (typeof transport !== 'function') {
    return Promise.reject(
      new ToolbeltError('unavailable', 'lp-faas-toolbelt: no runner is attached to serve toolbelt calls'),
    );
  }
  return transport(method, Array.isArray(args) ? args : []);
}

// Round trip to the host: resolves with {pong: [payload]}. Useful to check
// that the toolbelt channel works; not part of LivePerson's API.
function ping(payload) {
  return call('ping', payload === undefined ? [] : [payload]);
}

// Positional arguments as JSON: trailing `undefined`s are dropped (an omitted
// optional argument stays omitted), inner ones become null.
function jsonArgs(args) {
  const out = Array.from(args);
  while (out.length > 0 && out[out.length - 1] === undefined) out.pop();
  return out.map((a) => (a === undefined ? null : a));
}

// ------------------------------------------------------------------ query strings

// Encoded like the `qs` module request uses: nested objects as a[b]=c, arrays
// as a[0]=x (or a=x&a=y with useQuerystring), null as `a=`, undefined skipped.
function qsPairs(prefix, value, repeatArrays, out) {
  if (value === undefined || typeof value === 'function') return out;
  if (value === null) {
    out.push([prefix, '']);
  } else if (value instanceof Date) {
    out.push([prefix, value.toISOString()]);
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => qsPairs(repeatArrays ? prefix : `${prefix}[${i}]`, item, repeatArrays, out));
  } else if (typeof value === 'object' && !Buffer.isBuffer(value)) {
    for (const [key, item] of Object.entries(value)) qsPairs(`${prefix}[${key}]`, item, repeatArrays, out);
  } else {
    out.push([prefix, String(value)]);
  }
  return out;
}

function encodeQs(obj, repeatArrays) {
  const pairs = [];
  for (const [key, value] of Object.entries(obj || {})) qsPairs(key, value, repeatArrays, pairs);
  return pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

function decodeComponent(text) {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch (_) {
    return text;
  }
}

// Merge `qs` into the query of a URL or path: keys given in `qs` replace the
// URL's own parameters of the same name, the others stay (as request does).
function applyQs(target, qs, repeatArrays) {
  if (!qs || typeof qs !== 'object' || Object.keys(qs).length === 0) return target;
  let rest = target;
  let hash = '';
  const hashAt = rest.indexOf('#');
  if (hashAt >= 0) {
    hash = rest.slice(hashAt);
    rest = rest.slice(0, hashAt);
  }
  const queryAt = rest.indexOf('?');
  const base = queryAt >= 0 ? rest.slice(0, queryAt) : rest;
  const query = queryAt >= 0 ? rest.slice(queryAt + 1) : '';
  const replaced = new Set(Object.keys(qs).filter((k) => qs[k] !== undefined));
  const kept = query
    .split('&')
    .filter((part) => part !== '')
    .filter((part) => {
      const key = decodeComponent(part.split('=')[0]);
      const root = key.includes('[') ? key.slice(0, key.indexOf('[')) : key;
      return !replaced.has(root);
    });
  const added = encodeQs(qs, repeatArrays);
  const all = kept.concat(added ? [added] : []).join('&');
  return `${base}${all ? `?${all}` : ''}${hash}`;
}

// ------------------------------------------------------------------ request-promise options

const OPTION_KEYS = new Set([
  'method', 'uri', 'url', 'baseUrl', 'qs', 'useQuerystring', 'headers', 'body', 'json', 'form',
  'simple', 'resolveWithFullResponse', 'timeout', 'encoding', 'followRedirect', 'followAllRedirects',
  'maxRedirects', 'auth', 'transform', 'transform2xxOnly', 'gzip', 'strictSSL', 'rejectUnauthorized',
  'allowSelfSigned', 'agentOptions', 'time', 'forever', 'pool',
]);

function findHeader(headers, name) {
  const lower = name.toLowerCase();
  return Object.keys(headers).find((k) => k.toLowerCase() === lower);
}

function setDefaultHeader(headers, name, value) {
  if (findHeader(headers, name) === undefined) headers[name] = value;
}

function headerValue(value) {
  return Array.isArray(value) ? value.map(String).join(', ') : String(value);
}

function badRequest(message) {
  return new ToolbeltError('bad_request', message);
}

// Turn request-promise style arguments into one options object.
function mergeArgs(uri, options, method) {
  let opts;
  if (typeof uri === 'string' || uri instanceof URL) {
    opts = Object.assign({}, options || {}, { uri: String(uri) });
  } else {
    opts = Object.assign({}, uri || {}, options || {});
  }
  if (method) opts.method = method;
  return opts;
}

// The part of a request the host needs, plus what the answer needs here.
// Throws ToolbeltError('bad_request') for options that cannot be sent.
function prepareRequest(opts) {
  const method = String(opts.method || 'GET').toUpperCase();
  const headers = {};
  for (const [name, value] of Object.entries(opts.headers || {})) {
    if (value !== undefined && value !== null) headers[name] = headerValue(value);
  }
  const json = opts.json;
  const wantsJson = json !== undefined && json !== null && json !== false;
  if (wantsJson) setDefaultHeader(headers, 'accept', 'application/json');

  let body = opts.body;
  let bodyEncoding = 'utf8';
  if (opts.form !== undefined && opts.form !== null) {
    body = typeof opts.form === 'string' ? opts.form : encodeQs(opts.form, false);
    setDefaultHeader(headers, 'content-type', 'application/x-www-form-urlencoded');
  } else if (wantsJson && json !== true) {
    body = JSON.stringify(json); // json given as the body itself
    setDefaultHeader(headers, 'content-type', 'application/json');
  } else if (wantsJson && body !== undefined) {
    const contentType = headers[findHeader(headers, 'content-type')] || '';
    if (/^application\/x-www-form-urlencoded\b/i.test(contentType) && typeof body === 'object') {
      body = encodeQs(body, false);
    } else {
      body = JSON.stringify(body);
    }
    setDefaultHeader(headers, 'content-type', 'application/json');
  }
  if (body === undefined || body === null) {
    body = null;
  } else if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    body = Buffer.from(body).toString('base64');
    bodyEncoding = 'base64';
  } else if (typeof body !== 'string') {
    throw badRequest('Argument error, options.body: give a string or a Buffer, or set json: true to send an object');
  }

  const auth = opts.auth;
  if (auth && typeof auth === 'object' && findHeader(headers, 'authorization') === undefined) {
    if (auth.bearer !== undefined) {
      const token = typeof auth.bearer === 'function' ? auth.bearer() : auth.bearer;
      headers.authorization = `Bearer ${token}`;
    } else {
      const user = auth.user !== undefined ? auth.user : auth.username;
      const pass = auth.pass !== undefined ? auth.pass : auth.password;
      if (user !== undefined || pass !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`${user || ''}:${pass || ''}`).toString('base64')}`;
      }
    }
  }

  let timeoutMs = null;
  if (opts.timeout !== undefined && opts.timeout !== null) {
    timeoutMs = Number(opts.timeout);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw badRequest(`options.timeout must be a number of milliseconds, got ${opts.timeout}`);
    timeoutMs = Math.floor(timeoutMs);
  }

  // encoding: null → Buffer body; another encoding than utf8 → decoded here.
  const encoding = opts.encoding === undefined ? 'utf8' : opts.encoding;
  const binary = encoding === null || !/^utf-?8$/i.test(String(encoding));
  if (encoding !== null && !Buffer.isEncoding(String(encoding))) throw badRequest(`unknown options.encoding "${encoding}"`);

  return {
    wire: {
      method,
      headers,
      body,
      body_encoding: bodyEncoding,
      timeout_ms: timeoutMs,
      follow_redirects: opts.followRedirect === undefined ? true : Boolean(opts.followRedirect),
      max_redirects: opts.maxRedirects === undefined || opts.maxRedirects === null ? null : Number(opts.maxRedirects),
      response_encoding: binary ? 'base64' : 'utf8',
    },
    json: wantsJson,
    encoding,
    simple: opts.simple === undefined ? true : Boolean(opts.simple),
    full: Boolean(opts.resolveWithFullResponse),
    transform: typeof opts.transform === 'function' ? opts.transform : null,
    transform2xxOnly: Boolean(opts.transform2xxOnly),
    options: opts,
  };
}

function absoluteUrl(opts) {
  let uri = opts.uri !== undefined ? opts.uri : opts.url;
  if (uri instanceof URL) uri = uri.href;
  if (typeof uri !== 'string' || uri === '') throw badRequest('options.uri is a required argument');
  if (opts.baseUrl !== undefined && opts.baseUrl !== null) {
    const base = String(opts.baseUrl);
    if (/^[a-z][a-z0-9+.-]*:/i.test(uri)) throw badRequest('options.uri must be a path when used with options.baseUrl');
    uri = uri === '' ? base : `${base.replace(/\/+$/, '')}/${uri.replace(/^\/+/, '')}`;
  }
  let parsed;
  try {
    parsed = new URL(uri);
  } catch (_) {
    throw badRequest(`Invalid URI "${uri}"`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw badRequest(`Invalid URI "${uri}": only http and https are supported`);
  }
  return applyQs(uri, opts.qs, Boolean(opts.useQuerystring));
}

// The host's answer {status, headers, body, body_encoding, url} as
// request-promise would resolve or reject it.
function finishResponse(prep, value) {
  const raw = value && typeof value === 'object' ? value : {};
  const statusCode = Number(raw.status);
  const bytes = raw.body_encoding === 'base64';
  let body = raw.body === undefined || raw.body === null ? '' : String(raw.body);
  if (prep.encoding === null) {
    body = Buffer.from(body, bytes ? 'base64' : 'utf8');
  } else if (bytes) {
    body = Buffer.from(body, 'base64').toString(prep.encoding);
  }
  if (prep.json && typeof body === 'string') {
    if (body === '') {
      body = undefined;
    } else {
      try {
        body = JSON.parse(body);
      } catch (_) {
        // not JSON: request keeps the text
      }
    }
  }
  const finalUrl = typeof raw.url === 'string' && raw.url !== '' ? raw.url : prep.url;
  let uri;
  try {
    uri = new URL(finalUrl);
  } catch (_) {
    uri = { href: finalUrl };
  }
  const response = {
    statusCode,
    statusMessage: http.STATUS_CODES[statusCode] || '',
    headers: raw.headers && typeof raw.headers === 'object' ? raw.headers : {},
    body,
    url: finalUrl,
    request: { uri, method: prep.wire.method, href: finalUrl },
  };
  const ok = statusCode >= 200 && statusCode < 300;
  if (prep.simple && !ok) throw new StatusCodeError(statusCode, body, prep.options, response);
  if (prep.transform && (ok || !prep.transform2xxOnly)) {
    try {
      return prep.transform(body, response, prep.full);
    } catch (err) {
      throw new TransformError(err, prep.options, response);
    }
  }
  return prep.full ? response : body;
}

// A host (or local) failure as request-promise would reject.
function failRequest(prep, err) {
  if (err instanceof StatusCodeError || err instanceof RequestError || err instanceof TransformError) return err;
  if (err && err.code === 'rate_limited') {
    const message = err.message || 'rate limited';
    const response = {
      statusCode: 429,
      statusMessage: http.STATUS_CODES[429],
      headers: {},
      body: message,
      request: { uri: { href: prep.url }, method: prep.wire.method, href: prep.url },
    };
    const error = new StatusCodeError(429, message, prep.options, response);
    error.code = 'rate_limited';
    return error;
  }
  return new RequestError(err, prep.options, undefined);
}

// Run one request-promise style request through `send(prep)` (a promise of
// the host's answer). Errors in the options reject like request does.
function runRequest(opts, toPrep, send, callback) {
  let prep;
  const promise = (async () => {
    try {
      prep = toPrep(opts);
    } catch (err) {
      throw new RequestError(err, opts, undefined);
    }
    let value;
    try {
      value = await send(prep);
    } catch (err) {
      throw failRequest(prep, err);
    }
    return finishResponse(prep, value);
  })();
  if (typeof callback === 'function') {
    promise.then(
      (result) => {
        const response = prep && prep.full ? result : undefined;
        callback(null, response, response ? response.body : result);
      },
      (err) => callback(err, err.response, err.response ? err.response.body : undefined),
    );
  }
  return promise;
}

const VERBS = { get: 'GET', head: 'HEAD', post: 'POST', put: 'PUT', patch: 'PATCH', delete: 'DELETE', del: 'DELETE', options: 'OPTIONS' };

function splitCallback(args) {
  const list = Array.from(args);
  const callback = typeof list[list.length - 1] === 'function' ? list.pop() : undefined;
  return { list, callback };
}

// ------------------------------------------------------------------ HTTPClient

function httpPrep(opts) {
  const prep = prepareRequest(opts);
  prep.url = absoluteUrl(opts);
  const w = prep.wire;
  // the field order of the wire contract, for readable frames
  prep.wire = {
    method: w.method,
    url: prep.url,
    headers: w.headers,
    body: w.body,
    body_encoding: w.body_encoding,
    timeout_ms: w.timeout_ms,
    follow_redirects: w.follow_redirects,
    max_redirects: w.max_redirects,
    mtls: opts.__mtls || null,
    response_encoding: w.response_encoding,
  };
  return prep;
}

function sendHttp(prep) {
  return call('http.request', [prep.wire]);
}

function makeHttpClient(defaults) {
  const base = defaults || {};
  const client = function httpClient(uri, options, callback) {
    const { list, callback: cb } = splitCallback([uri, options, callback]);
    const opts = Object.assign({}, base, mergeArgs(list[0], list[1]));
    return runRequest(opts, httpPrep, sendHttp, cb);
  };
  for (const [name, verb] of Object.entries(VERBS)) {
    client[name] = function verbRequest(uri, options, callback) {
      const { list, callback: cb } = splitCallback([uri, options, callback]);
      const opts = Object.assign({}, base, mergeArgs(list[0], list[1], verb));
      return runRequest(opts, httpPrep, sendHttp, cb);
    };
  }
  client.defaults = (more) => makeHttpClient(Object.assign({}, base, more || {}));
  return client;
}

// ------------------------------------------------------------------ MTLSClient

const PEM_MARKER = /-----BEGIN [A-Z0-9 ]+-----/;

function certificateName(config) {
  const cfg = config && typeof config === 'object' ? config : { certificate: config };
  const candidate = cfg.certificate !== undefined ? cfg.certificate : cfg.cert;
  const text = Buffer.isBuffer(candidate) ? candidate.toString('utf8') : candidate;
  if (typeof text === 'string' && PEM_MARKER.test(text)) {
    throw new ToolbeltError(
      'bad_request',
      'lp-faas-toolbelt: MTLSClient takes the NAME of a certificate, not its PEM contents. On this platform ' +
        'a FaaS-Admin uploads the certificate and key per account through the API (see docs/toolbelt.md, ' +
        'MTLSClient); then use Toolbelt.MTLSClient({ certificate: "<name>" }).',
    );
  }
  if (typeof text !== 'string' || text.trim() === '') {
    throw new ToolbeltError(
      'bad_request',
      'lp-faas-toolbelt: MTLSClient needs the name of an uploaded certificate: Toolbelt.MTLSClient({ certificate: "<name>" })',
    );
  }
  return text.trim();
}

function looksLikeOptions(value) {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  return keys.length > 0 && keys.every((k) => OPTION_KEYS.has(k));
}

// Two call shapes: LivePerson's `verb(url, headers?, body?, options?)`, which
// resolves {statusCode, headers, body} for any status, and the
// request-promise shape `verb(url, options)` of HTTPClient.
function makeMtlsClient(config) {
  // PEM contents throw at once (the original also throws on a bad
  // certificate); a missing name rejects on use, so top-level code loads.
  let name = null;
  let problem = null;
  try {
    name = certificateName(config);
  } catch (err) {
    if (err.message.includes('PEM')) throw err;
    problem = err;
  }
  const client = {};
  for (const verb of ['get', 'head', 'post', 'put', 'delete', 'options', 'patch']) {
    const method = verb.toUpperCase();
    const bodyless = method === 'HEAD' || method === 'OPTIONS';
    client[verb] = function mtlsRequest(url, ...rest) {
      if (problem) return Promise.reject(problem);
      if (rest.length === 1 && looksLikeOptions(rest[0])) {
        const opts = Object.assign({}, mergeArgs(url, rest[0], method), { __mtls: name });
        return runRequest(opts, httpPrep, sendHttp);
      }
      const headers = rest[0] || {};
      const body = bodyless ? undefined : rest[1];
      const options = (bodyless ? rest[1] : rest[2]) || {};
      const opts = {
        uri: url,
        method,
        headers,
        json: Boolean(options.json),
        timeout: options.timeout,
        simple: false,
        resolveWithFullResponse: true,
        __mtls: name,
      };
      if (body !== undefined && body !== null) opts.body = body;
      return runRequest(opts, httpPrep, sendHttp).then((response) => ({
        statusCode: response.statusCode,
        headers: response.headers,
        body: bodyless ? undefined : response.body,
      }));
    };
  }
  Object.defineProperty(client, 'certificate', { value: name, enumerable: false });
  return client;
}

// ------------------------------------------------------------------ LpClient

const HTTP_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

function lpPrep(opts) {
  const prep = prepareRequest(opts);
  if (typeof opts.service !== 'string' || opts.service === '') throw badRequest('LpClient needs a service name, e.g. LpServices.MSG_HIST');
  if (typeof opts.path !== 'string') throw badRequest('LpClient needs a path, e.g. "/api/account/..."');
  const path = applyQs(opts.path.startsWith('/') ? opts.path : `/${opts.path}`, opts.qs, Boolean(opts.useQuerystring));
  prep.url = `lp://${opts.service}${path}`;
  prep.wire = {
    method: prep.wire.method,
    service: opts.service,
    path,
    headers: prep.wire.headers,
    body: prep.wire.body,
    body_encoding: prep.wire.body_encoding,
    timeout_ms: prep.wire.timeout_ms,
  };
  return prep;
}

function sendLp(prep) {
  return call('lp.request', [prep.wire]);
}

// lpClient(method, service, path, options) or LivePerson's
// lpClient(service, path, options) with options.method (default GET).
function makeLpClient() {
  return function lpClient(...args) {
    const { list, callback } = splitCallback(args);
    let method;
    let service;
    let path;
    let options;
    if (list.length >= 3 && typeof list[2] === 'string' && typeof list[0] === 'string' && HTTP_METHODS.has(list[0].toUpperCase())) {
      [method, service, path, options] = list;
    } else {
      [service, path, options] = list;
    }
    const opts = Object.assign({}, options || {}, { service, path });
    if (method) opts.method = method;
    return runRequest(opts, lpPrep, sendLp, callback);
  };
}

// ------------------------------------------------------------------ secrets

const SECRET_KEY = /^[A-Za-z0-9_-]{1,100}$/;
const MAX_SECRET_VALUE_CHARS = 16384;

function checkSecretKey(key) {
  if (typeof key !== 'string' || !SECRET_KEY.test(key)) {
    throw badRequest(
      `lp-faas-toolbelt: invalid secret key ${JSON.stringify(key)}: use 1 to 100 characters of A-Z, a-z, 0-9, "-" and "_"`,
    );
  }
}

function makeSecretClient() {
  return {
    async readSecret(key) {
      checkSecretKey(key);
      return call('secret.read', [key]);
    },
    async updateSecret(secret) {
      if (!secret || typeof secret !== 'object') throw badRequest('lp-faas-toolbelt: updateSecret takes {key, value}');
      const { key, value } = secret;
      checkSecretKey(key);
      if (typeof value !== 'string') {
        throw badRequest('lp-faas-toolbelt: a secret value must be a string (use JSON.stringify for objects)');
      }
      if (value.length > MAX_SECRET_VALUE_CHARS) {
        throw badRequest(
          `lp-faas-toolbelt: the value of secret "${key}" has ${value.length} characters, more than the ${MAX_SECRET_VALUE_CHARS} allowed`,
        );
      }
      return call('secret.update', [{ key, value }]);
    },
  };
}

// ------------------------------------------------------------------ context store

const CONTEXT_METHODS = [
  'createNamespace',
  'deleteNamespace',
  'getListOfNamespaces',
  'setPropertiesInNamespace',
  'updatePropertiesInNamespace',
  'getAllPropertiesInSession',
  'getSelectedPropertiesInSession',
  'getPropertyInSession',
  'deletePropertyInSession',
  'deleteSession',
];

// The constructor's {apiKey, accountId} are accepted and ignored: the host
// always uses the invocation's own account.
function makeContextClient() {
  const client = {};
  for (const name of CONTEXT_METHODS) {
    client[name] = function contextCall(...args) {
      return call(`context.${name}`, jsonArgs(args));
    };
  }
  client.getListOfSessions = () =>
    Promise.reject(new NotAvailableError('Toolbelt.ContextServiceClient().getListOfSessions()'));
  return client;
}

// ------------------------------------------------------------------ CSDS and LP helpers

function makeCsdsClient() {
  return {
    async get(service) {
      if (typeof service !== 'string' || service === '') throw badRequest('CsdsClient.get needs a service name');
      const value = await call('csds.resolve', [service]);
      return value && typeof value === 'object' ? value.domain : value;
    },
    getAll() {
      return Promise.reject(new NotAvailableError('Toolbelt.CsdsClient().getAll()', 'resolve services one by one with get(service)'));
    },
  };
}

const LpServices = Object.freeze({
  MSG_HIST: 'msgHist',
  AGENT_VEP: 'agentVep',
  ACCOUNT_CONFIG_READ_ONLY: 'accountConfigReadOnly',
  ACCOUNT_CONFIG_READ_WRITE: 'accountConfigReadWrite',
  ASYNC_MESSAGING: 'asyncMessaging',
  ASYNC_MESSAGING_EN: 'asyncMessagingEnt',
  ENG_HIST_DOMAIN: 'engHistDomain',
  RTBF: 'rtbf',
  AUDITLOG: 'auditlog',
  SMT: 'smt',
  PUSHER: 'pusher',
  LE_DATA_REPORTING: 'leDataReporting',
  MSG_EWT_API: 'msgEwtAPI',
  MSDKGW: 'msdkgw',
});

const SDETypes = Object.freeze({
  CART: 'cart',
  TRANSACTION: 'purchase',
  VIEWED_PRODUCT: 'prodView',
  CUSTOMER_INFO: 'ctmrinfo',
  MARKETING_SOURCE: 'mrktInfo',
  PERSONAL_INFO: 'personal',
  LEAD: 'lead',
  SERVICE_ACTIVITY: 'service',
  VISITOR_ERROR: 'error',
  SEARCHED_CONTENT: 'searchInfo',
});

const ConversationContentTypes = Object.freeze({
  INFO: 'info',
  SDES: 'sdes',
  UNAUTH_SDES: 'unAuthSdes',
  CAMPAIGN: 'campaign',
  MESSAGE_RECORDS: 'messageRecords',
  AGENT_PARTICIPANTS: 'agentParticipants',
  AGENT_PARTICIPANTS_ACTIVE: 'agentParticipantsActive',
  CONSUMER_PARTICIPANTS: 'consumerParticipants',
  TRANSFERS: 'transfers',
  INTERACTIONS: 'interactions',
  MESSAGE_SCORES: 'messageScores',
  MESSAGE_STATUSES: 'messageStatuses',
  SKILL_CHANGES: 'skillChanges',
  CONVERSATION_SURVEYS: 'conversationSurveys',
  AGENT_PARTICIPANTS_LEAVE: 'agentParticipantsLeave',
  COBROWSE_SESSIONS: 'coBrowseSessions',
  SUMMARY: 'summary',
  MONITORING: 'monitoring',
  DIALOGS: 'dialogs',
  RESPONSE_TIME: 'responseTime',
  INTENTS: 'intents',
  UNIQUE_INTENTS: 'uniqueIntents',
  LATEST_AGENT_SURVEY: 'latestAgentSurvey',
  PREVIOUSLY_SUBMITTED_AGENT_SURVEYS: 'previouslySubmittedAgentSurveys',
});

function brandId() {
  return process.env.BRAND_ID || '';
}

function firstRecord(conversation) {
  const records = conversation && Array.isArray(conversation.conversationHistoryRecords)
    ? conversation.conversationHistoryRecords
    : null;
  if (!records) throw new TypeError('Please provide a conversation as returned by ConversationUtil.getConversationById()');
  return records[0] || {};
}

function makeConversationUtil() {
  const lpClient = makeLpClient();
  return {
    async getConversationById(conversationId, contentToRetrieve) {
      if (!conversationId) throw badRequest('Please provide a conversation ID.');
      const body = { conversationId };
      if (Array.isArray(contentToRetrieve) && contentToRetrieve.length > 0) body.contentToRetrieve = contentToRetrieve;
      let conversation;
      try {
        conversation = await lpClient(
          'POST',
          LpServices.MSG_HIST,
          `/messaging_history/api/account/${brandId()}/conversations/conversation/search?v=2`,
          { body, json: true },
        );
      } catch (err) {
        err.message = `Error while fetching conversation "${conversationId}": ${err.message}`;
        throw err;
      }
      if (!conversation || !Array.isArray(conversation.conversationHistoryRecords) || conversation.conversationHistoryRecords.length === 0) {
        throw new ToolbeltError('conversation_not_found', `Conversation "${conversationId}" not found.`);
      }
      return conversation;
    },
    // Text and file-caption messages containing any keyword (case-insensitive).
    scanConversationForKeywords(conversation, keywords) {
      if (!Array.isArray(keywords) || keywords.length === 0) throw new TypeError('Please provide array containing keywords.');
      const records = firstRecord(conversation).messageRecords || [];
      const messages = records
        .filter((m) => m && (m.type === 'TEXT_PLAIN' || m.type === 'HOSTED_FILE'))
        .map((m) => ({
          message: m.type === 'TEXT_PLAIN' ? ((m.messageData || {}).msg || {}).text || '' : ((m.messageData || {}).file || {}).caption || '',
          sentTimestamp: m.timeL,
          sentBy: m.sentBy,
        }));
      const out = [];
      for (const keyword of keywords) {
        const needle = String(keyword).toLowerCase();
        for (const m of messages) {
          if (m.message.toLowerCase().includes(needle)) out.push(Object.assign({}, m, { tag: `keywordRef:${keyword}` }));
        }
      }
      return out;
    },
  };
}

function sortEvents(sdes) {
  const events = sdes && Array.isArray(sdes.events) ? sdes.events.slice() : [];
  events.sort((a, b) => (String(a.serverTimeStamp) < String(b.serverTimeStamp) ? -1 : 1));
  return { events };
}

function makeSdeUtil() {
  const lpClient = makeLpClient();
  return {
    // Authenticated and unauthenticated SDEs of a conversation, oldest first.
    getSDEsFromConv(conversation) {
      const record = firstRecord(conversation);
      return { sdes: sortEvents(record.sdes), unAuthSdes: sortEvents(record.unAuthSdes) };
    },
    async addSDEs(sdes, visitorId, sessionId) {
      if (!Array.isArray(sdes) || sdes.length === 0) throw badRequest('Please provide one or more SDEs');
      const path =
        `/api/account/${brandId()}/monitoring/visitors/${encodeURIComponent(visitorId)}` +
        `/visits/current/events?v=1&sid=${encodeURIComponent(sessionId)}`;
      await lpClient('PUT', LpServices.SMT, path, { body: sdes, json: true });
    },
  };
}

function makeGdprUtil() {
  return {
    // The paths of the files shared in a conversation (the input a GDPR file
    // replacement needs); pure, no call.
    listConversationFiles(conversation) {
      const records = firstRecord(conversation).messageRecords || [];
      return records
        .filter((m) => m && m.type === 'HOSTED_FILE')
        .map((m) => ((m.messageData || {}).file || {}).relativePath)
        .filter((p) => typeof p === 'string' && p !== '');
    },
    replaceConversationFiles() {
      return Promise.reject(
        new NotAvailableError(
          'Toolbelt.GDPRUtil().replaceConversationFiles()',
          "it needs LivePerson's conversation file storage, which this platform does not have",
        ),
      );
    },
  };
}

// ------------------------------------------------------------------ unavailable clients

// Properties a client must not fake, so that `await client`, logging and
// serialising a client behave normally.
const PASS_THROUGH = new Set(['then', 'catch', 'finally', 'toJSON', 'constructor', 'inspect', 'valueOf', 'toString']);

function unavailableMethod(clientName, method) {
  return function unavailable() {
    return Promise.reject(new NotAvailableError(`Toolbelt.${clientName}().${method}()`));
  };
}

// A client object whose every method rejects with NotAvailableError.
function unavailableClient(clientName, methods) {
  const target = {};
  for (const method of methods) target[method] = unavailableMethod(clientName, method);
  Object.defineProperty(target, 'toString', {
    value: () => `[lp-faas-toolbelt ${clientName} (not available)]`,
    enumerable: false,
  });
  return new Proxy(target, {
    get(obj, prop, receiver) {
      if (typeof prop === 'symbol' || PASS_THROUGH.has(prop) || prop in obj) {
        return Reflect.get(obj, prop, receiver);
      }
      return unavailableMethod(clientName, prop);
    },
  });
}

// ------------------------------------------------------------------ Toolbelt

class Toolbelt {
  /** request-promise compatible HTTP client; egress goes through the host. */
  static HTTPClient() {
    return makeHttpClient();
  }

  /** HTTP client presenting the account's uploaded certificate `certificate` (by name). */
  static MTLSClient(config) {
    return makeMtlsClient(config);
  }

  /** LivePerson APIs by service name: domain from CSDS, OAuth1 from `lp-faas-default-app-key`. */
  static LpClient() {
    return makeLpClient();
  }

  static SecretClient() {
    return makeSecretClient();
  }

  static ContextServiceClient() {
    return makeContextClient();
  }

  static CsdsClient() {
    return makeCsdsClient();
  }

  static ConversationUtil() {
    return makeConversationUtil();
  }

  static SDEUtil() {
    return makeSdeUtil();
  }

  static GDPRUtil() {
    return makeGdprUtil();
  }

  static SFClient() {
    return unavailableClient('SFClient', ['connectToSalesforce']);
  }

  static OrchestratorClient() {
    return unavailableClient('OrchestratorClient', ['invoke']);
  }
}

const errors = { RequestError, StatusCodeError, TransformError };

module.exports = {
  Toolbelt,
  ToolbeltError,
  NotAvailableError,
  RequestError,
  StatusCodeError,
  TransformError,
  errors,
  LpServices,
  SDETypes,
  ConversationContentTypes,
  ping,
  // Runner-facing; not for lambdas.
  _attachTransport: attachTransport,
  _call: call,
};
