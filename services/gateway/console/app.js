/*
 * fnbus web console: one plain script, no dependencies, no build step.
 *
 * Every request goes to the same-origin REST API under /api/v1/accounts/{account}/
 * with "Authorization: Bearer <API key>". Data from the API only ever reaches the
 * page as text nodes or element properties (see el()); nothing is parsed as markup.
 * Every error the API answers is shown with its code and message.
 *
 * The pure helpers near the top are exported when the file is loaded by Node
 * (tests/unit/test_console_files.py); in a browser the console starts instead.
 */
(function () {
  'use strict';

  const API_ROOT = '/api/v1/accounts/';
  const STORE_ACCOUNT = 'fnbus.console.account';
  const STORE_KEY = 'fnbus.console.apiKey';
  const POLL_INTERVAL_MS = 1000;
  const LIST_REFRESH_MS = 2000;
  const WATCH_LIMIT_MS = 10 * 60 * 1000;
  const OK_NOTICE_MS = 8000;
  const INDENT = '    ';
  const TABS = ['functions', 'invoke', 'settings', 'account'];
  const ROLES = [
    ['FaaS-Admin', 'users, keys, secrets, the domain allowlist and the terms of use'],
    ['FaaS-Developer', 'create, edit, deploy and invoke functions; read secrets and the allowlist'],
    ['FaaS-Invocation', 'invoke functions and read them and their logs'],
  ];

  // -- pure helpers (no DOM) -------------------------------------------------------

  /** Line and column (1-based) and offset of a character offset in text. */
  function locate(text, pos) {
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    const column = pos - (before.lastIndexOf('\n') + 1) + 1;
    return { pos: pos, line: line, column: column };
  }

  /** Where JSON.parse failed, from its message (each engine words it differently). */
  function jsonErrorLocation(text, message) {
    let m = /line (\d+) column (\d+)/i.exec(message);
    if (m) {
      const line = Number(m[1]);
      const column = Number(m[2]);
      const lines = text.split('\n');
      let pos = 0;
      for (let i = 0; i < line - 1 && i < lines.length; i += 1) pos += lines[i].length + 1;
      return { pos: Math.min(pos + column - 1, text.length), line: line, column: column };
    }
    m = /position (\d+)/i.exec(message);
    if (m) return locate(text, Math.min(Number(m[1]), text.length));
    if (/end of (JSON input|data)/i.test(message)) return locate(text, text.length);
    const pos = scanJson(text); // the engine did not say where: find it ourselves
    return pos === null ? null : locate(text, pos);
  }

  /** Offset of the first JSON syntax error in text, or null when it is valid JSON. */
  function scanJson(text) {
    const n = text.length;
    const number = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    let i = 0;
    const fail = function () { throw new RangeError(String(i)); };
    const ws = function () { while (i < n && ' \t\n\r'.indexOf(text[i]) >= 0) i += 1; };
    const string = function () {
      i += 1; // opening quote
      while (i < n) {
        const c = text[i];
        if (c === '"') { i += 1; return; }
        if (c < ' ') fail();
        if (c === '\\') {
          i += 1;
          if (i < n && '"\\/bfnrt'.indexOf(text[i]) >= 0) { i += 1; continue; }
          if (text[i] === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) { i += 5; continue; }
          fail();
        }
        i += 1;
      }
      fail();
    };
    const value = function () {
      ws();
      const c = text[i];
      if (c === '{' || c === '[') {
        const close = c === '{' ? '}' : ']';
        i += 1;
        ws();
        if (text[i] === close) { i += 1; return; }
        for (;;) {
          if (c === '{') {
            ws();
            if (text[i] !== '"') fail();
            string();
            ws();
            if (text[i] !== ':') fail();
            i += 1;
          }
          value();
          ws();
          if (text[i] === ',') { i += 1; continue; }
          if (text[i] === close) { i += 1; return; }
          fail();
        }
      }
      if (c === '"') return string();
      number.lastIndex = i;
      const m = number.exec(text);
      if (m) { i += m[0].length; return; }
      for (const word of ['true', 'false', 'null']) {
        if (text.startsWith(word, i)) { i += word.length; return; }
      }
      fail();
    };
    try {
      value();
      ws();
      if (i < n) fail();
      return null;
    } catch (err) {
      if (err instanceof RangeError && /^[0-9]+$/.test(err.message)) return Math.min(Number(err.message), n);
      throw err;
    }
  }

  /** The engine's reason without its own location wording. */
  function jsonErrorReason(message) {
    return String(message)
      .replace(/^JSON\.parse:\s*/i, '')
      .replace(/^JSON Parse error:\s*/i, '')
      .replace(/\s*\(line \d+ column \d+\)/i, '')
      .replace(/\s+in JSON at position \d+/i, '')
      .replace(/\s+at line \d+ column \d+ of the JSON data/i, '')
      .trim();
  }

  /**
   * Parse the text of a JSON editor. Returns {ok: true, value} or {ok: false,
   * message, pos, line, column, excerpt} saying where the text is wrong.
   */
  function parseJsonText(text, label) {
    const source = String(text);
    if (!source.trim()) {
      return {
        ok: false, pos: 0, line: 1, column: 1, excerpt: '',
        message: label + ' is empty: write a JSON value, for example {} or null.',
      };
    }
    try {
      return { ok: true, value: JSON.parse(source) };
    } catch (err) {
      const raw = String(err && err.message);
      const where = jsonErrorLocation(source, raw);
      const reason = jsonErrorReason(raw) || 'invalid JSON';
      if (!where) {
        return { ok: false, pos: null, line: null, column: null, excerpt: '',
          message: label + ' is not valid JSON: ' + reason + '.' };
      }
      const lineText = source.split('\n')[where.line - 1] || '';
      const excerpt = lineText + '\n' + ' '.repeat(Math.max(0, where.column - 1)) + '^';
      return {
        ok: false, pos: where.pos, line: where.line, column: where.column, excerpt: excerpt,
        message: label + ' is not valid JSON at line ' + where.line + ', column ' + where.column +
          ': ' + reason + '.',
      };
    }
  }

  /** null when value is a JSON object whose values are all strings, else what is wrong. */
  function stringMapProblem(value, label) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return label + ' must be a JSON object, for example {"NAME": "value"}.';
    }
    for (const key of Object.keys(value)) {
      if (typeof value[key] !== 'string') {
        return label + ': the value of "' + key + '" must be a string (put it in quotes).';
      }
    }
    return null;
  }

  /** null when value is a list of {key, value} string pairs, else what is wrong. */
  function headersProblem(value) {
    if (!Array.isArray(value)) return 'Headers must be a JSON array, for example [{"key": "X-Id", "value": "1"}].';
    for (let i = 0; i < value.length; i += 1) {
      const h = value[i];
      if (!h || typeof h !== 'object' || typeof h.key !== 'string' || typeof h.value !== 'string') {
        return 'Headers: item ' + (i + 1) + ' must be an object with string "key" and "value".';
      }
    }
    return null;
  }

  /** "a, b ,,c" -> ["a", "b", "c"] */
  function parseList(text) {
    return String(text).split(',').map(function (s) { return s.trim(); }).filter(Boolean);
  }

  /** Milliseconds for people: 850 ms, 1.3 s, 2 min 5 s. */
  function formatDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '—';
    const n = Number(ms);
    if (n < 1000) return Math.round(n) + ' ms';
    if (n < 60000) return (n / 1000).toFixed(n < 10000 ? 1 : 0) + ' s';
    return Math.floor(n / 60000) + ' min ' + Math.round((n % 60000) / 1000) + ' s';
  }

  /** The sample payload (and headers) a template offers for a test. */
  function samplePayload(template) {
    const sample = (template && template.sample_payload) || {};
    const hasPayload = Object.prototype.hasOwnProperty.call(sample, 'payload');
    return {
      payload: hasPayload ? sample.payload : sample,
      headers: hasPayload && Array.isArray(sample.headers) ? sample.headers : [],
    };
  }

  /** "#functions/abc" -> {tab: "functions", arg: "abc"} */
  function parseRoute(hash) {
    const parts = String(hash || '').replace(/^#/, '').split('/');
    let arg = parts.slice(1).join('/');
    try {
      arg = decodeURIComponent(arg);
    } catch (_) {
      // Keep the raw text: a malformed escape is just an id that will not be found.
    }
    return { tab: TABS.indexOf(parts[0]) >= 0 ? parts[0] : 'functions', arg: arg };
  }

  const pure = {
    jsonErrorLocation: jsonErrorLocation, jsonErrorReason: jsonErrorReason, scanJson: scanJson,
    parseJsonText: parseJsonText, stringMapProblem: stringMapProblem,
    headersProblem: headersProblem, parseList: parseList, formatDuration: formatDuration,
    samplePayload: samplePayload, parseRoute: parseRoute,
  };
  if (typeof module === 'object' && module && module.exports) module.exports = pure;
  if (typeof document === 'undefined') return;

  // -- DOM helpers -------------------------------------------------------------------

  function $(selector) {
    const node = document.querySelector(selector);
    if (!node) throw new Error('console page is missing ' + selector);
    return node;
  }

  /**
   * Create an element. props: class, text, on<event> handlers, dataset, boolean
   * properties (disabled, checked, hidden, open, readOnly), value, and other
   * attributes. Children are nodes or strings (strings become text nodes).
   */
  function el(tag, props) {
    const node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (name) {
        const value = props[name];
        if (value === undefined || value === null || value === false) return;
        if (name === 'class') node.className = value;
        else if (name === 'text') node.textContent = String(value);
        else if (name === 'dataset') Object.assign(node.dataset, value);
        else if (name.slice(0, 2) === 'on') {
          if (typeof value !== 'function') throw new Error('handler ' + name + ' must be a function');
          node.addEventListener(name.slice(2), value);
        } else if (name === 'value' || name === 'disabled' || name === 'checked' || name === 'hidden' ||
                   name === 'open' || name === 'readOnly' || name === 'title') {
          node[name] = value;
        } else if (name === 'href') {
          // Only links inside the console; data never becomes a URL scheme.
          if (String(value).charAt(0) !== '#') throw new Error('console links must start with #');
          node.setAttribute('href', value);
        } else node.setAttribute(name, value === true ? '' : String(value));
      });
    }
    appendChildren(node, Array.prototype.slice.call(arguments, 2));
    return node;
  }

  function appendChildren(node, children) {
    children.forEach(function (child) {
      if (Array.isArray(child)) appendChildren(node, child);
      else if (child === null || child === undefined || child === false) return;
      else node.append(child instanceof Node ? child : String(child));
    });
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function badge(text, kind) {
    const slug = String(kind || text || 'none').toLowerCase().replace(/[^a-z0-9]+/g, '-');
    return el('span', { class: 'badge badge-' + slug }, text || '—');
  }

  function formatTime(ms) {
    return ms ? new Date(ms).toLocaleString() : '—';
  }

  function formatClock(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    const pad = function (n, w) { return String(n).padStart(w || 2, '0'); };
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' +
      pad(d.getMilliseconds(), 3);
  }

  function prettyJson(value) {
    return value === undefined ? 'null' : JSON.stringify(value, null, 2);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function enc(value) {
    return encodeURIComponent(value);
  }

  function meta(dl, pairs) {
    clear(dl);
    pairs.forEach(function (pair) {
      if (!pair) return;
      dl.append(el('dt', null, pair[0]), el('dd', null, pair[1]));
    });
  }

  // -- the API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
      this.body = body;
    }
  }

  let session = null; // {account, key}

  /** Call the API. Resolves {status, data}; rejects with ApiError (code, message). */
  async function api(method, path, options) {
    const opts = options || {};
    if (!session) throw new ApiError(0, 'signed_out', 'Sign in first.');
    let url = API_ROOT + enc(session.account) + path;
    if (opts.query) {
      const qs = new URLSearchParams();
      Object.keys(opts.query).forEach(function (k) {
        const v = opts.query[k];
        if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
      });
      const s = qs.toString();
      if (s) url += '?' + s;
    }
    const headers = { Accept: 'application/json', Authorization: 'Bearer ' + session.key };
    const init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let response;
    let text;
    try {
      response = await fetch(url, init);
      text = await response.text();
    } catch (err) {
      throw new ApiError(0, 'network_error',
        'The gateway could not be reached (' + (err && err.message) + '). Is fnbus running?');
    }
    let data = null;
    let parsed = true;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        parsed = false;
      }
    }
    if (!response.ok) {
      const error = parsed && data && typeof data === 'object' && data.error && typeof data.error === 'object'
        ? data.error : null;
      if (error) {
        throw new ApiError(response.status, String(error.code || 'error'), String(error.message || ''),
          error.details, data);
      }
      throw new ApiError(response.status, 'http_' + response.status,
        (response.statusText || 'request failed') + (text ? ': ' + text.slice(0, 300) : ''), undefined, data);
    }
    if (!parsed) {
      throw new ApiError(response.status, 'bad_response',
        'The gateway answered with something that is not JSON: ' + text.slice(0, 200));
    }
    return { status: response.status, data: data };
  }

  function asApiError(err) {
    if (err instanceof ApiError) return err;
    return new ApiError(0, 'console_error', (err && err.message) || String(err));
  }

  // -- messages --------------------------------------------------------------------------

  function hintFor(err) {
    if (err.code === 'account_not_provisioned') {
      return el('p', { class: 'msg-hint' }, 'Accept the terms of use on the ',
        el('a', { href: '#account' }, 'Account'), ' tab first.');
    }
    if (err.status === 401) {
      return el('p', { class: 'msg-hint' }, 'Check the API key, or sign out and sign in again.');
    }
    if (err.status === 403) {
      return el('p', { class: 'msg-hint' }, 'The roles of this key do not allow this operation.');
    }
    return null;
  }

  function detailsNode(details) {
    if (details === undefined || details === null) return null;
    if (Array.isArray(details) && details.every(function (d) { return d && typeof d === 'object' && 'msg' in d; })) {
      return el('ul', { class: 'msg-details' }, details.map(function (d) {
        const loc = Array.isArray(d.loc) ? d.loc.filter(function (p) { return p !== 'body'; }).join('.') : '';
        return el('li', null, loc ? el('code', null, loc) : null, loc ? ': ' : '', String(d.msg));
      }));
    }
    return el('pre', { class: 'msg-details' }, prettyJson(details));
  }

  function errorNode(error) {
    const err = asApiError(error);
    return el('div', { class: 'msg msg-error', role: 'alert' },
      el('div', { class: 'msg-head' },
        el('code', { class: 'msg-code' }, err.code),
        err.status ? el('span', { class: 'msg-status' }, 'HTTP ' + err.status) : null),
      el('p', { class: 'msg-text' }, err.message || '(no message)'),
      detailsNode(err.details),
      hintFor(err));
  }

  function messageNode(kind, text) {
    return el('div', { class: 'msg msg-' + kind }, el('p', { class: 'msg-text' }, text));
  }

  function showError(target, err) {
    clear(target).append(errorNode(err));
  }

  function showOk(target, text) {
    clear(target).append(messageNode('ok', text));
  }

  function showInfo(target, text) {
    clear(target).append(messageNode('info', text));
  }

  /** A dismissable message above the current tab; success messages go away by themselves. */
  function notice(node, autoHide) {
    const box = el('div', { class: 'notice' }, node,
      el('button', { type: 'button', class: 'link dismiss', title: 'Dismiss', 'aria-label': 'Dismiss',
        onclick: function () { box.remove(); } }, '×'));
    $('#notices').append(box);
    if (autoHide) setTimeout(function () { box.remove(); }, OK_NOTICE_MS);
  }

  function noticeOk(text) {
    notice(messageNode('ok', text), true);
  }

  function noticeError(err) {
    notice(errorNode(err), false);
  }

  /** Show "Label… 3 s" in node until done() is called. */
  function startProgress(node, label) {
    const started = Date.now();
    node.hidden = false;
    node.classList.add('busy');
    const render = function () {
      node.textContent = label + '… ' + Math.floor((Date.now() - started) / 1000) + ' s';
    };
    render();
    const timer = setInterval(render, 250);
    return {
      elapsedMs: function () { return Date.now() - started; },
      done: function () {
        clearInterval(timer);
        node.classList.remove('busy');
        node.hidden = true;
        node.textContent = '';
      },
    };
  }

  /** Disable the buttons while fn runs. */
  async function busy(buttons, fn) {
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      return await fn();
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
  }

  /** Parse a JSON editor; on failure, mark it, say where, and put the cursor there. */
  function readJson(textarea, label, statusNode) {
    const result = parseJsonText(textarea.value, label);
    if (result.ok) {
      textarea.removeAttribute('aria-invalid');
      return result;
    }
    textarea.setAttribute('aria-invalid', 'true');
    clear(statusNode).append(el('div', { class: 'msg msg-error', role: 'alert' },
      el('div', { class: 'msg-head' }, el('code', { class: 'msg-code' }, 'invalid_json'),
        el('span', { class: 'msg-status' }, 'not sent')),
      el('p', { class: 'msg-text' }, result.message),
      result.excerpt ? el('pre', { class: 'msg-details' }, result.excerpt) : null));
    textarea.focus();
    if (result.pos !== null) {
      textarea.setSelectionRange(result.pos, Math.min(result.pos + 1, textarea.value.length));
    }
    return result;
  }

  function invalidInput(input, statusNode, code, text) {
    input.setAttribute('aria-invalid', 'true');
    clear(statusNode).append(el('div', { class: 'msg msg-error', role: 'alert' },
      el('div', { class: 'msg-head' }, el('code', { class: 'msg-code' }, code),
        el('span', { class: 'msg-status' }, 'not sent')),
      el('p', { class: 'msg-text' }, text)));
    input.focus();
  }

  /** Tab indents in code editors; Esc then Tab moves focus on as usual. */
  function enableTabIndent(textarea) {
    let escaped = false;
    textarea.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') {
        escaped = true;
        return;
      }
      const wasEscaped = escaped;
      escaped = false;
      if (e.key !== 'Tab' || wasEscaped || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
      e.preventDefault();
      const start = textarea.selectionStart;
      const end = textarea.selectionEnd;
      // insertText keeps the browser's undo history; setRangeText is the fallback.
      const inserted = typeof document.execCommand === 'function' &&
        document.execCommand('insertText', false, INDENT);
      if (!inserted) textarea.setRangeText(INDENT, start, end, 'end');
    });
    textarea.addEventListener('blur', function () { escaped = false; });
  }

  function clearInvalidOnInput(node) {
    node.addEventListener('input', function () { node.removeAttribute('aria-invalid'); });
  }

  // -- session -------------------------------------------------------------------------

  // The admin key lives in sessionStorage (gone with the tab, not readable from other
  // tabs' storage); only the account name is remembered across sessions.
  function storeFor(name) {
    return name === STORE_KEY ? window.sessionStorage : window.localStorage;
  }

  function storageGet(name) {
    try {
      return storeFor(name).getItem(name) || '';
    } catch (_) {
      return ''; // storage disabled: nothing to prefill
    }
  }

  function storageSet(name, value) {
    try {
      if (name === STORE_KEY) window.localStorage.removeItem(name); // written there by older consoles
      if (value) storeFor(name).setItem(name, value);
      else storeFor(name).removeItem(name);
      return true;
    } catch (_) {
      return false;
    }
  }

  async function signIn(account, key, remember) {
    const status = $('#signin-status');
    session = { account: account, key: key };
    let data;
    try {
      data = (await api('GET', '')).data;
    } catch (err) {
      session = null;
      showError(status, err);
      return false;
    }
    clear(status);
    const stored = storageSet(STORE_ACCOUNT, account) && storageSet(STORE_KEY, remember ? key : '');
    $('#session-account').textContent = account;
    $('#session').hidden = false;
    $('#signin-view').hidden = true;
    $('#app-view').hidden = false;
    $('#signin-key').value = '';
    if (!stored) {
      notice(messageNode('info', 'This browser does not allow local storage: the account id and key ' +
        'will not be remembered.'), true);
    }
    if (!data.provisioned) {
      notice(messageNode('info', 'Account ' + account + ' is not provisioned yet: accept the terms of use to start.'), false);
      if (location.hash !== '#account') {
        location.hash = '#account';
        return true;
      }
    }
    route();
    return true;
  }

  function signOut() {
    session = null;
    storageSet(STORE_KEY, '');
    stopListRefresh();
    detailToken += 1;
    detail = null;
    clear($('#notices'));
    $('#session').hidden = true;
    $('#app-view').hidden = true;
    $('#signin-view').hidden = false;
    $('#signin-account').value = storageGet(STORE_ACCOUNT);
    $('#signin-key').value = '';
    $('#signin-key').focus();
  }

  function setUpSignIn() {
    const form = $('#signin-form');
    form.addEventListener('submit', async function (e) {
      e.preventDefault();
      const status = $('#signin-status');
      const account = $('#signin-account').value.trim();
      const key = $('#signin-key').value.trim();
      if (!account) return invalidInput($('#signin-account'), status, 'missing_account', 'Enter the account id.');
      if (!key) return invalidInput($('#signin-key'), status, 'missing_key', 'Enter an API key.');
      showInfo(status, 'Signing in…');
      await busy([$('#signin-submit')], function () {
        return signIn(account, key, $('#signin-remember').checked);
      });
    });
    [$('#signin-account'), $('#signin-key')].forEach(clearInvalidOnInput);
    $('#signin-json-use').addEventListener('click', function () {
      const status = $('#signin-json-status');
      const parsed = readJson($('#signin-json'), 'credentials.json', status);
      if (!parsed.ok) return;
      const creds = parsed.value || {};
      if (typeof creds.account_id !== 'string' || typeof creds.api_key !== 'string') {
        invalidInput($('#signin-json'), status, 'missing_fields',
          'Expected an object with "account_id" and "api_key", as make up writes it.');
        return;
      }
      $('#signin-account').value = creds.account_id;
      $('#signin-key').value = creds.api_key;
      $('#signin-json').value = '';
      showOk(status, 'Filled in. Press Sign in.');
      $('#signin-submit').focus();
    });
    $('#sign-out').addEventListener('click', signOut);
  }

  // -- routing ---------------------------------------------------------------------------

  let currentRoute = null;
  let revertingHash = false;

  function route() {
    if (!session) return;
    const next = parseRoute(location.hash);
    currentRoute = next;
    TABS.forEach(function (name) {
      $('#tab-' + name).hidden = name !== next.tab;
    });
    document.querySelectorAll('.tabs a').forEach(function (a) {
      if (a.dataset.tab === next.tab) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    if (next.tab !== 'functions') {
      stopListRefresh();
      detailToken += 1; // stops watching a deployment on the detail view
      detail = null;
    }
    const handlers = { functions: showFunctions, invoke: showInvoke, settings: showSettings, account: showAccount };
    Promise.resolve(handlers[next.tab](next.arg)).catch(noticeError);
  }

  function onHashChange(e) {
    if (revertingHash) {
      revertingHash = false;
      return;
    }
    if (detail && isDirty() && !window.confirm('Leave the function without saving your changes?')) {
      revertingHash = true;
      location.hash = new URL(e.oldURL).hash; // back to the editor, changes kept
      return;
    }
    route();
  }

  // -- Functions ------------------------------------------------------------------------

  const cache = { templates: null };
  let listTimer = null;
  let detail = null; // {id, lambda}
  let detailToken = 0;

  function showSubview(name) {
    $('#fn-list-view').hidden = name !== 'list';
    $('#fn-create-view').hidden = name !== 'create';
    $('#fn-detail-view').hidden = name !== 'detail';
  }

  function showFunctions(arg) {
    stopListRefresh();
    if (arg === 'new') {
      detailToken += 1;
      detail = null;
      showSubview('create');
      return showCreate();
    }
    if (arg) {
      showSubview('detail');
      return showDetail(arg);
    }
    detailToken += 1;
    detail = null;
    showSubview('list');
    return loadFunctionList();
  }

  async function loadTemplates() {
    if (!cache.templates) cache.templates = (await api('GET', '/templates')).data;
    return cache.templates;
  }

  function stopListRefresh() {
    if (listTimer !== null) clearTimeout(listTimer);
    listTimer = null;
  }

  async function loadFunctionList() {
    const status = $('#fn-list-status');
    stopListRefresh();
    let list;
    try {
      list = (await api('GET', '/lambdas', { query: { state: $('#fn-filter').value } })).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    clear(status);
    renderFunctionRows(list);
    const onList = currentRoute && currentRoute.tab === 'functions' && !currentRoute.arg;
    if (onList && list.some(function (l) { return l.deployment_state === 'Deploying'; })) {
      listTimer = setTimeout(loadFunctionList, LIST_REFRESH_MS);
    }
  }

  function deploymentCell(l) {
    const cell = el('td', { 'data-label': 'Deployment' },
      badge(l.deployment_state || 'never deployed', l.deployment_state || 'none'));
    if (l.deployment_state === 'Deploying') cell.append(' ', el('span', { class: 'spinner', 'aria-hidden': 'true' }));
    if (l.deployment_state === 'Failed' && l.deployment_cause) {
      cell.append(el('div', { class: 'cause' }, l.deployment_cause));
    }
    return cell;
  }

  function versionText(l) {
    let text = 'v' + l.version;
    if (l.deployed_version !== null && l.deployed_version !== undefined && l.deployed_version !== l.version) {
      text += ' (deployed v' + l.deployed_version + ')';
    }
    return text;
  }

  function renderFunctionRows(list) {
    const body = clear($('#fn-rows'));
    $('#fn-empty').hidden = list.length > 0;
    if (!list.length && $('#fn-filter').value) {
      clear($('#fn-empty')).append('No functions in state ' + $('#fn-filter').value + '.');
    } else if (!list.length) {
      clear($('#fn-empty')).append('No functions here yet. Start with ',
        el('a', { href: '#functions/new' }, 'New function'), '.');
    }
    list.forEach(function (l) {
      body.append(el('tr', null,
        el('td', { 'data-label': 'Name' },
          el('a', { href: '#functions/' + enc(l.id), class: 'strong' }, l.name),
          l.description ? el('div', { class: 'sub' }, l.description) : null),
        el('td', { 'data-label': 'State' }, badge(l.state)),
        deploymentCell(l),
        el('td', { 'data-label': 'Runtime' }, l.runtime),
        el('td', { 'data-label': 'Event' }, l.event_id ? el('code', null, l.event_id) : el('span', { class: 'muted' }, 'none')),
        el('td', { 'data-label': 'Version' }, versionText(l)),
        el('td', { 'data-label': 'Updated' }, formatTime(l.updated_ms))));
    });
  }

  // create -------------------------------------------------------------------------------

  const createState = { events: [], templateCode: '', templateDescription: '' };

  async function showCreate() {
    const status = $('#fn-create-status');
    clear(status);
    $('#c-name').value = '';
    $('#c-description').value = '';
    $('#c-skills').value = '';
    let templates;
    let events;
    try {
      const both = await Promise.all([loadTemplates(), api('GET', '/events')]);
      templates = both[0];
      events = both[1].data;
    } catch (err) {
      showError(status, err);
      return;
    }
    createState.events = events;
    const eventSelect = clear($('#c-event'));
    eventSelect.append(el('option', { value: '' }, 'none (HTTP, schedules and tests)'));
    events.forEach(function (ev) {
      let label = ev.name;
      if (ev.limit !== null && ev.limit !== undefined) {
        const used = ev.used === null || ev.used === undefined ? '?' : ev.used;
        label += ' — ' + used + ' of ' + ev.limit + ' used' + (ev.used >= ev.limit ? ' (full)' : '');
      }
      eventSelect.append(el('option', { value: ev.id }, label));
    });
    const templateSelect = clear($('#c-template'));
    templateSelect.append(el('option', { value: '' }, 'none: write the code yourself'));
    templates.forEach(function (t) {
      templateSelect.append(el('option', { value: t.id }, t.name + ' (' + t.runtime + ')'));
    });
    createState.templateCode = '';
    createState.templateDescription = '';
    $('#c-code').value = '';
    const first = templates.find(function (t) { return t.id === 'hello-world'; }) || templates[0];
    templateSelect.value = first ? first.id : '';
    applyTemplate(true);
    $('#c-name').focus();
  }

  function applyTemplate(force) {
    const id = $('#c-template').value;
    const t = (cache.templates || []).find(function (x) { return x.id === id; });
    const code = $('#c-code');
    const description = $('#c-description');
    clear($('#c-template-about'));
    if (!t) {
      updateSkillsField();
      return;
    }
    $('#c-template-about').append(t.description || 'Template ' + t.name + '.');
    const edited = code.value.trim() && code.value !== createState.templateCode;
    if (force || !edited || window.confirm('Replace the code in the editor with the template\'s code?')) {
      code.value = t.code;
      createState.templateCode = t.code;
    }
    if (!description.value || description.value === createState.templateDescription) {
      description.value = t.description || '';
      createState.templateDescription = description.value;
    }
    $('#c-runtime').value = t.runtime;
    $('#c-event').value = t.event_id || '';
    updateSkillsField();
  }

  function updateSkillsField() {
    const ev = createState.events.find(function (e) { return e.id === $('#c-event').value; });
    $('#c-skills-label').hidden = !(ev && ev.skill_filter);
  }

  async function submitCreate(e) {
    e.preventDefault();
    const status = $('#fn-create-status');
    const name = $('#c-name').value.trim();
    const code = $('#c-code').value;
    if (!name) return invalidInput($('#c-name'), status, 'missing_name', 'Give the function a name.');
    if (!code.trim()) return invalidInput($('#c-code'), status, 'missing_code', 'Write the code or choose a template.');
    const body = {
      name: name,
      description: $('#c-description').value,
      runtime: $('#c-runtime').value,
      event_id: $('#c-event').value || null,
      code: code,
    };
    if ($('#c-template').value) body.template_id = $('#c-template').value;
    if (!$('#c-skills-label').hidden) body.skills = parseList($('#c-skills').value);
    showInfo(status, 'Creating…');
    await busy([$('#c-submit')], async function () {
      try {
        const created = (await api('POST', '/lambdas', { body: body })).data;
        clear(status);
        noticeOk('Created ' + created.name + ' (Draft). Deploy it to invoke it.');
        location.hash = '#functions/' + enc(created.id);
      } catch (err) {
        showError(status, err);
      }
    });
  }

  // detail -------------------------------------------------------------------------------

  function envText(obj) {
    return JSON.stringify(obj || {}, null, 2);
  }

  function isDirty() {
    if (!detail || !detail.lambda || $('#fn-detail-view').hidden) return false;
    const l = detail.lambda;
    return $('#d-name').value !== l.name || $('#d-description').value !== l.description ||
      $('#d-code').value !== (l.code || '') || $('#d-env').value !== envText(l.env) ||
      $('#d-deps').value !== envText(l.dependencies);
  }

  function fillDetailForm(l) {
    $('#d-name').value = l.name;
    $('#d-description').value = l.description || '';
    $('#d-code').value = l.code || '';
    $('#d-env').value = envText(l.env);
    $('#d-deps').value = envText(l.dependencies);
    ['#d-name', '#d-code', '#d-env', '#d-deps'].forEach(function (s) { $(s).removeAttribute('aria-invalid'); });
  }

  async function showDetail(id) {
    const token = ++detailToken;
    detail = null;
    $('#d-title').textContent = 'Loading…';
    clear($('#d-badges'));
    clear($('#d-meta'));
    clear($('#d-status'));
    clear($('#d-form-status'));
    $('#d-progress').hidden = true;
    ['#d-versions', '#d-deployments'].forEach(function (s) {
      $(s).open = false;
      clear($(s + '-body'));
      clear($(s + '-status'));
    });
    setDetailButtons(null, false);
    let l;
    try {
      l = (await api('GET', '/lambdas/' + enc(id))).data;
    } catch (err) {
      if (token !== detailToken) return;
      $('#d-title').textContent = 'Function';
      showError($('#d-status'), err);
      return;
    }
    if (token !== detailToken) return;
    detail = { id: id, lambda: l };
    renderDetail(l);
    fillDetailForm(l);
    if (l.deployment_state === 'Deploying') {
      watchDeployment('Deploying', function (x) { return x.deployment_state !== 'Deploying'; });
    }
  }

  function setDetailButtons(l, working) {
    const deploying = !!l && l.deployment_state === 'Deploying';
    const deployed = !!l && l.deployed_version !== null && l.deployed_version !== undefined;
    $('#d-deploy').disabled = !l || working || deploying;
    $('#d-deploy').textContent = deployed ? 'Deploy v' + l.version : 'Deploy';
    $('#d-undeploy').disabled = !l || working || !(deployed || deploying);
    $('#d-delete').disabled = !l || working || deployed || deploying;
    $('#d-delete').title = deployed || deploying ? 'Undeploy the function before deleting it' : '';
    $('#d-save').disabled = !l || working;
    $('#d-try').hidden = !deployed;
    if (l) $('#d-try').setAttribute('href', '#invoke/' + enc(l.id));
  }

  function renderDetail(l, working) {
    $('#d-title').textContent = l.name;
    clear($('#d-badges')).append(badge(l.state),
      badge(l.deployment_state || 'never deployed', l.deployment_state || 'none'));
    const deploymentValue = el('span', null, badge(l.deployment_state || 'never deployed', l.deployment_state || 'none'));
    if (l.deployment_state === 'Failed') {
      deploymentValue.append(el('div', { class: 'cause' }, 'Cause: ' + (l.deployment_cause || 'not reported')));
    }
    meta($('#d-meta'), [
      ['Id', el('code', null, l.id)],
      ['Runtime', l.runtime],
      ['Event', l.event_id ? el('code', null, l.event_id) : 'none'],
      l.skills && l.skills.length ? ['Skills', l.skills.join(', ')] : null,
      ['State', badge(l.state)],
      ['Saved version', 'v' + l.version],
      ['Deployed version', l.deployed_version ? 'v' + l.deployed_version : 'none'],
      ['Deployment', deploymentValue],
      l.template_id ? ['Template', el('code', null, l.template_id)] : null,
      ['Created', formatTime(l.created_ms)],
      ['Updated', formatTime(l.updated_ms)],
    ]);
    setDetailButtons(l, !!working);
  }

  /** Poll the lambda until settled(lambda) holds, showing "Label… N s". */
  async function watchDeployment(label, settled) {
    const token = detailToken;
    const id = detail.id;
    const status = $('#d-status');
    const progress = startProgress($('#d-progress'), label);
    setDetailButtons(detail.lambda, true);
    let l = detail.lambda;
    try {
      for (;;) {
        const answer = (await api('GET', '/lambdas/' + enc(id))).data;
        if (token !== detailToken) return; // the page moved on; the deployment goes on anyway
        l = answer;
        detail.lambda = l;
        renderDetail(l, true);
        if (settled(l)) break;
        if (progress.elapsedMs() > WATCH_LIMIT_MS) {
          showError(status, new ApiError(0, 'still_' + label.toLowerCase(),
            'Still ' + label.toLowerCase() + ' after ' + formatDuration(progress.elapsedMs()) +
            '; this page stopped watching. Refresh later to see the outcome.'));
          return;
        }
        await sleep(POLL_INTERVAL_MS);
        if (token !== detailToken) return;
      }
      const took = formatDuration(progress.elapsedMs());
      if (l.deployment_state === 'Failed') {
        showError(status, new ApiError(0, 'deployment_failed',
          'Deployment of v' + l.version + ' failed after ' + took + ': ' + (l.deployment_cause || 'no cause reported')));
      } else if (l.deployment_state === 'Deployed') {
        showOk(status, 'Deployed v' + l.deployed_version + ' in ' + took + '.');
      } else {
        showOk(status, 'Undeployed in ' + took + '.');
      }
    } catch (err) {
      if (token === detailToken) showError(status, err);
    } finally {
      progress.done();
      if (token === detailToken && detail) setDetailButtons(detail.lambda, false);
    }
  }

  async function deploy() {
    if (!detail) return;
    const l = detail.lambda;
    if (isDirty() && !window.confirm('Your unsaved changes are not part of the deployment: v' + l.version +
        ' (the saved version) is deployed. Deploy anyway?')) return;
    const status = clear($('#d-status'));
    setDetailButtons(l, true);
    try {
      await api('POST', '/lambdas/' + enc(detail.id) + '/deployments');
    } catch (err) {
      showError(status, err);
      setDetailButtons(l, false);
      return;
    }
    await watchDeployment('Deploying', function (x) { return x.deployment_state !== 'Deploying'; });
  }

  async function undeploy() {
    if (!detail) return;
    const l = detail.lambda;
    if (!window.confirm('Undeploy ' + l.name + '? It stops receiving events and invocations.')) return;
    const status = clear($('#d-status'));
    setDetailButtons(l, true);
    try {
      await api('DELETE', '/lambdas/' + enc(detail.id) + '/deployments');
    } catch (err) {
      showError(status, err);
      setDetailButtons(l, false);
      return;
    }
    await watchDeployment('Undeploying', function (x) {
      return (x.deployed_version === null || x.deployed_version === undefined) && x.deployment_state !== 'Deploying';
    });
  }

  async function deleteLambda() {
    if (!detail) return;
    const l = detail.lambda;
    if (!window.confirm('Delete ' + l.name + ' and all its versions? This cannot be undone.')) return;
    const status = clear($('#d-status'));
    await busy([$('#d-delete')], async function () {
      try {
        await api('DELETE', '/lambdas/' + enc(detail.id));
      } catch (err) {
        showError(status, err);
        return;
      }
      detailToken += 1;
      detail = null;
      noticeOk('Deleted ' + l.name + '.');
      location.hash = '#functions';
    });
  }

  async function saveDetail(e) {
    e.preventDefault();
    if (!detail) return;
    const status = $('#d-form-status');
    const l = detail.lambda;
    const patch = {};
    const name = $('#d-name').value.trim();
    if (!name) return invalidInput($('#d-name'), status, 'missing_name', 'The name cannot be empty.');
    if (name !== l.name) patch.name = name;
    if ($('#d-description').value !== l.description) patch.description = $('#d-description').value;
    if ($('#d-code').value !== (l.code || '')) {
      if (!$('#d-code').value.trim()) return invalidInput($('#d-code'), status, 'missing_code', 'The code cannot be empty.');
      patch.code = $('#d-code').value;
    }
    const maps = [['#d-env', 'Environment variables', 'env'], ['#d-deps', 'Dependencies', 'dependencies']];
    for (const m of maps) {
      const field = $(m[0]);
      if (field.value === envText(l[m[2]])) continue;
      const parsed = readJson(field, m[1], status);
      if (!parsed.ok) return;
      const problem = stringMapProblem(parsed.value, m[1]);
      if (problem) return invalidInput(field, status, 'invalid_' + m[2], problem);
      if (JSON.stringify(parsed.value) !== JSON.stringify(l[m[2]] || {})) patch[m[2]] = parsed.value;
    }
    if (!Object.keys(patch).length) {
      showInfo(status, 'Nothing to save: nothing changed.');
      return;
    }
    showInfo(status, 'Saving…');
    await busy([$('#d-save')], async function () {
      let saved;
      try {
        saved = (await api('PATCH', '/lambdas/' + enc(detail.id), { body: patch })).data;
      } catch (err) {
        showError(status, err);
        return;
      }
      detail.lambda = saved;
      renderDetail(saved);
      fillDetailForm(saved);
      let text = 'Saved';
      if (saved.version !== l.version) text += ' as v' + saved.version;
      text += '.';
      if (saved.state === 'Modified') text += ' The deployed v' + saved.deployed_version + ' keeps running until you deploy again.';
      showOk(status, text);
      if ($('#d-versions').open) loadVersions();
    });
  }

  function revertDetail() {
    if (!detail) return;
    fillDetailForm(detail.lambda);
    showInfo($('#d-form-status'), 'Changes discarded.');
  }

  async function loadVersions() {
    if (!detail) return;
    const id = detail.id;
    const status = $('#d-versions-status');
    const body = $('#d-versions-body');
    showInfo(status, 'Loading versions…');
    let versions;
    try {
      versions = (await api('GET', '/lambdas/' + enc(id) + '/versions')).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    if (!detail || detail.id !== id) return;
    clear(status);
    clear(body);
    if (!versions.length) body.append(el('p', { class: 'empty' }, 'No versions.'));
    const l = detail.lambda;
    versions.forEach(function (v) {
      const tags = [];
      if (v.version === l.version) tags.push(badge('saved', 'info'));
      if (v.version === l.deployed_version) tags.push(badge('deployed', 'deployed'));
      const hasEnv = v.env && Object.keys(v.env).length;
      const hasDeps = v.dependencies && Object.keys(v.dependencies).length;
      body.append(el('details', { class: 'version' },
        el('summary', null, el('strong', null, 'v' + v.version), ' · ', formatTime(v.created_ms), ' ', tags),
        el('pre', { class: 'code-view' }, v.code),
        hasEnv ? el('div', null, el('h4', null, 'Environment'), el('pre', { class: 'code-view' }, prettyJson(v.env))) : null,
        hasDeps ? el('div', null, el('h4', null, 'Dependencies'), el('pre', { class: 'code-view' }, prettyJson(v.dependencies))) : null,
        el('div', { class: 'actions' }, el('button', {
          type: 'button',
          onclick: function () {
            $('#d-code').value = v.code;
            $('#d-env').value = envText(v.env);
            $('#d-deps').value = envText(v.dependencies);
            showInfo($('#d-form-status'), 'v' + v.version + ' is in the editor. Save to make it the newest version.');
            $('#d-code').focus();
          },
        }, 'Copy v' + v.version + ' into the editor'))));
    });
  }

  async function loadDeployments() {
    if (!detail) return;
    const id = detail.id;
    const status = $('#d-deployments-status');
    const body = $('#d-deployments-body');
    showInfo(status, 'Loading deployments…');
    let list;
    try {
      list = (await api('GET', '/lambdas/' + enc(id) + '/deployments')).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    if (!detail || detail.id !== id) return;
    clear(status);
    clear(body);
    if (!list.length) {
      body.append(el('p', { class: 'empty' }, 'Never deployed.'));
      return;
    }
    body.append(el('div', { class: 'table-wrap' }, el('table', { class: 'list' },
      el('thead', null, el('tr', null, ['Requested', 'Action', 'Version', 'State', 'Cause', 'Last change'].map(function (h) {
        return el('th', null, h);
      }))),
      el('tbody', null, list.map(function (d) {
        return el('tr', null,
          el('td', { 'data-label': 'Requested' }, formatTime(d.created_ms)),
          el('td', { 'data-label': 'Action' }, d.action),
          el('td', { 'data-label': 'Version' }, 'v' + d.version),
          el('td', { 'data-label': 'State' }, badge(d.state)),
          el('td', { 'data-label': 'Cause', class: d.cause ? 'cause' : 'muted' }, d.cause || '—'),
          el('td', { 'data-label': 'Last change' }, formatTime(d.updated_ms)));
      })))));
  }

  function setUpFunctions() {
    $('#fn-filter').addEventListener('change', loadFunctionList);
    $('#fn-refresh').addEventListener('click', function () {
      busy([$('#fn-refresh')], loadFunctionList);
    });
    $('#c-template').addEventListener('change', function () { applyTemplate(false); });
    $('#c-event').addEventListener('change', updateSkillsField);
    $('#fn-create-form').addEventListener('submit', submitCreate);
    $('#d-form').addEventListener('submit', saveDetail);
    $('#d-revert').addEventListener('click', revertDetail);
    $('#d-deploy').addEventListener('click', deploy);
    $('#d-undeploy').addEventListener('click', undeploy);
    $('#d-delete').addEventListener('click', deleteLambda);
    $('#d-versions').addEventListener('toggle', function () { if ($('#d-versions').open) loadVersions(); });
    $('#d-deployments').addEventListener('toggle', function () { if ($('#d-deployments').open) loadDeployments(); });
    ['#c-code', '#d-code'].forEach(function (s) { enableTabIndent($(s)); });
    ['#c-name', '#c-code', '#d-name', '#d-code', '#d-env', '#d-deps'].forEach(function (s) { clearInvalidOnInput($(s)); });
    window.addEventListener('beforeunload', function (e) {
      if (isDirty()) {
        e.preventDefault();
        e.returnValue = '';
      }
    });
  }

  // -- Test / Invoke -----------------------------------------------------------------------

  const invokeState = { lambdas: [] };

  function selectedLambda() {
    const id = $('#i-lambda').value;
    return invokeState.lambdas.find(function (l) { return l.id === id; }) || null;
  }

  async function showInvoke(arg) {
    const status = $('#i-list-status');
    const select = $('#i-lambda');
    const previous = arg || select.value;
    let list;
    try {
      list = (await api('GET', '/lambdas')).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    clear(status);
    invokeState.lambdas = list.filter(function (l) { return l.deployed_version !== null && l.deployed_version !== undefined; });
    clear(select);
    invokeState.lambdas.forEach(function (l) {
      select.append(el('option', { value: l.id }, l.name + ' — ' + l.state + ', runs v' + l.deployed_version));
    });
    const none = !invokeState.lambdas.length;
    if (none) {
      clear(status).append(el('div', { class: 'msg msg-info' }, el('p', { class: 'msg-text' },
        'No function is deployed. Deploy one on the ', el('a', { href: '#functions' }, 'Functions'), ' tab first.')));
    } else if (previous && invokeState.lambdas.some(function (l) { return l.id === previous; })) {
      select.value = previous;
    } else if (arg) {
      const wanted = list.find(function (l) { return l.id === arg; });
      showInfo(status, wanted ? wanted.name + ' is not deployed: deploy it before invoking it.'
        : 'The function ' + arg + ' is not in this account.');
    }
    ['#i-lambda', '#i-invoke', '#i-test', '#i-load-sample'].forEach(function (s) { $(s).disabled = none; });
    describeSelected();
  }

  function describeSelected() {
    const about = clear($('#i-lambda-about'));
    const l = selectedLambda();
    if (!l) return;
    about.append(l.runtime + ' · event ', l.event_id ? el('code', null, l.event_id) : 'none', ' · ');
    if (l.state === 'Modified') {
      about.append('Modified: runs the deployed v' + l.deployed_version + '; the saved v' + l.version + ' is not deployed.');
    } else {
      about.append('runs v' + l.deployed_version + '.');
    }
    about.append(' ', el('a', { href: '#functions/' + enc(l.id) }, 'Open'));
  }

  async function loadSample() {
    const status = $('#i-status');
    const l = selectedLambda();
    if (!l) return;
    let templates;
    try {
      templates = await loadTemplates();
    } catch (err) {
      showError(status, err);
      return;
    }
    const t = templates.find(function (x) { return l.event_id && x.id === l.event_id; }) ||
      templates.find(function (x) { return l.template_id && x.id === l.template_id; });
    if (!t) {
      showInfo(status, l.name + ' has no event, so there is no sample payload; the test button sends {}.');
      return;
    }
    const sample = samplePayload(t);
    $('#i-payload').value = prettyJson(sample.payload);
    $('#i-headers').value = JSON.stringify(sample.headers);
    showInfo(status, 'Loaded the sample payload of ' + t.name + '.');
  }

  async function runInvocation(label, suffix, body) {
    const l = selectedLambda();
    const status = $('#i-status');
    if (!l) {
      showInfo(status, 'Choose a deployed function first.');
      return;
    }
    clear(status);
    $('#i-result').hidden = true;
    const progress = startProgress($('#i-progress'), label + ' ' + l.name);
    const started = performance.now();
    await busy([$('#i-invoke'), $('#i-test')], async function () {
      try {
        const answer = await api('POST', '/lambdas/' + enc(l.id) + suffix, { body: body });
        renderResult(answer.status, answer.data, null, performance.now() - started);
        showOk(status, 'Succeeded in ' + formatDuration(performance.now() - started) + ' (round trip).');
      } catch (err) {
        const e = asApiError(err);
        if (e.body && typeof e.body === 'object' && 'outcome' in e.body) {
          renderResult(e.status, e.body, e, performance.now() - started);
        }
        showError(status, e);
      } finally {
        progress.done();
      }
    });
  }

  function renderResult(httpStatus, data, err, roundTripMs) {
    $('#i-result').hidden = false;
    meta($('#i-result-meta'), [
      ['Outcome', badge(data.outcome || (err ? 'failed' : 'succeeded'))],
      ['HTTP status', String(httpStatus)],
      ['Activation', data.activation_id ? el('code', null, data.activation_id) : '—'],
      ['Duration', formatDuration(data.duration_ms)],
      ['Cold start', data.cold_start === undefined ? '—' : (data.cold_start ? 'yes' : 'no')],
      ['Round trip', formatDuration(roundTripMs)],
    ]);
    const body = clear($('#i-result-body'));
    if (err) body.append(errorNode(err));
    else body.append(el('h3', null, 'Result'), el('pre', { class: 'code-view' }, prettyJson(data.result)));
    const logs = clear($('#i-logs'));
    const lines = Array.isArray(data.logs) ? data.logs : [];
    if (!lines.length) logs.append(el('p', { class: 'empty' }, 'No log lines.'));
    else {
      logs.append(el('div', { class: 'table-wrap' }, el('table', { class: 'list logs' },
        el('thead', null, el('tr', null, el('th', null, 'Time'), el('th', null, 'Level'), el('th', null, 'Message'))),
        el('tbody', null, lines.map(function (line) {
          return el('tr', null,
            el('td', { 'data-label': 'Time', class: 'nowrap' }, formatClock(line.ts_ms)),
            el('td', { 'data-label': 'Level' }, badge(line.level, 'level-' + line.level)),
            el('td', { 'data-label': 'Message' }, el('pre', { class: 'log-line' }, line.message)));
        })))));
    }
    if (data.logs_truncated) logs.append(el('p', { class: 'hint' }, 'The log was truncated: only the first lines are shown.'));
  }

  function setUpInvoke() {
    $('#i-refresh').addEventListener('click', function () {
      busy([$('#i-refresh')], function () { return showInvoke(''); });
    });
    $('#i-lambda').addEventListener('change', describeSelected);
    $('#i-form').addEventListener('submit', function (e) {
      e.preventDefault();
      const status = $('#i-status');
      const payload = readJson($('#i-payload'), 'Payload', status);
      if (!payload.ok) return;
      const headers = readJson($('#i-headers'), 'Headers', status);
      if (!headers.ok) return;
      const problem = headersProblem(headers.value);
      if (problem) return invalidInput($('#i-headers'), status, 'invalid_headers', problem);
      runInvocation('Invoking', '/invoke', { headers: headers.value, payload: payload.value });
    });
    $('#i-test').addEventListener('click', function () {
      runInvocation('Testing', '/test', {});
    });
    $('#i-load-sample').addEventListener('click', loadSample);
    $('#i-payload').addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        $('#i-form').requestSubmit();
      }
    });
    ['#i-payload', '#i-headers'].forEach(function (s) { clearInvalidOnInput($(s)); });
  }

  // -- Settings ------------------------------------------------------------------------

  function showSettings() {
    return Promise.all([loadSecrets(), loadDomains(), loadUsers()]);
  }

  async function loadSecrets() {
    const status = $('#s-status');
    let list;
    try {
      list = (await api('GET', '/secrets', { query: { include_default: $('#s-include-default').checked ? 'true' : 'false' } })).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    clear(status);
    const rows = clear($('#s-rows'));
    $('#s-empty').hidden = list.length > 0;
    rows.closest('.table-wrap').hidden = !list.length;
    list.forEach(function (s) {
      rows.append(el('tr', null,
        el('td', { 'data-label': 'Key' }, el('code', null, s.key)),
        el('td', { 'data-label': 'Value' }, el('code', { class: 'muted' }, s.value)),
        el('td', { 'data-label': 'Kind' }, s.is_default ? badge('default', 'info') : 'account'),
        el('td', { 'data-label': 'Updated' }, formatTime(s.updated_ms)),
        el('td', { class: 'row-actions' }, s.is_default ? null : el('button', {
          type: 'button', class: 'danger small',
          onclick: function (e) { deleteSecret(s.key, e.currentTarget); },
        }, 'Delete'))));
    });
  }

  async function deleteSecret(key, button) {
    if (!window.confirm('Delete the secret ' + key + '? Functions reading it will fail.')) return;
    const status = $('#s-status');
    await busy([button], async function () {
      try {
        await api('DELETE', '/secrets/' + enc(key));
      } catch (err) {
        showError(status, err);
        return;
      }
      await loadSecrets();
      showOk(status, 'Deleted the secret ' + key + '.');
    });
  }

  async function addSecret(e) {
    e.preventDefault();
    const status = $('#s-status');
    const key = $('#s-key').value.trim();
    const value = $('#s-value').value;
    if (!key) return invalidInput($('#s-key'), status, 'missing_key', 'Enter the secret\'s key.');
    if (!/^[A-Za-z0-9_-]{1,100}$/.test(key)) {
      return invalidInput($('#s-key'), status, 'invalid_key', 'A secret key may contain letters, digits, - and _ (at most 100).');
    }
    if (!value) return invalidInput($('#s-value'), status, 'missing_value', 'Enter the secret\'s value.');
    await busy([$('#s-add')], async function () {
      try {
        await api('POST', '/secrets', { body: { key: key, value: value } });
      } catch (err) {
        showError(status, err);
        return;
      }
      $('#s-key').value = '';
      $('#s-value').value = '';
      await loadSecrets();
      showOk(status, 'Added the secret ' + key + '.');
    });
  }

  async function loadDomains() {
    const status = $('#w-status');
    let list;
    try {
      list = (await api('GET', '/domains')).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    clear(status);
    const ul = clear($('#w-list'));
    $('#w-empty').hidden = list.length > 0;
    list.forEach(function (d) {
      ul.append(el('li', null,
        el('code', null, d.domain),
        el('span', { class: 'muted' }, ' added ' + formatTime(d.created_ms)),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', class: 'danger small',
          onclick: function (e) { deleteDomain(d.domain, e.currentTarget); } }, 'Remove')));
    });
  }

  async function deleteDomain(domain, button) {
    if (!window.confirm('Remove ' + domain + ' from the allowlist? Functions can no longer call it.')) return;
    const status = $('#w-status');
    await busy([button], async function () {
      try {
        await api('DELETE', '/domains/' + enc(domain));
      } catch (err) {
        showError(status, err);
        return;
      }
      await loadDomains();
      showOk(status, 'Removed ' + domain + '.');
    });
  }

  async function addDomain(e) {
    e.preventDefault();
    const status = $('#w-status');
    const domain = $('#w-domain').value.trim();
    if (!domain) return invalidInput($('#w-domain'), status, 'missing_domain', 'Enter a host name.');
    await busy([$('#w-add')], async function () {
      try {
        await api('POST', '/domains', { body: { domain: domain } });
      } catch (err) {
        showError(status, err);
        return;
      }
      $('#w-domain').value = '';
      await loadDomains();
      showOk(status, 'Added ' + domain + '.');
    });
  }

  async function loadUsers() {
    const status = $('#u-status');
    let list;
    try {
      list = (await api('GET', '/users')).data;
    } catch (err) {
      showError(status, err);
      return;
    }
    clear(status);
    const rows = clear($('#u-rows'));
    list.forEach(function (u) {
      const credRow = el('tr', { class: 'sub-row', hidden: true }, el('td', { colspan: '4' }));
      rows.append(el('tr', null,
        el('td', { 'data-label': 'Name' }, el('strong', null, u.name), el('div', { class: 'sub' }, el('code', null, u.id))),
        el('td', { 'data-label': 'Roles' }, u.roles.map(function (r) { return badge(r, 'role'); })),
        el('td', { 'data-label': 'Created' }, formatTime(u.created_ms)),
        el('td', { class: 'row-actions' },
          el('button', { type: 'button', class: 'small', onclick: function (e) { createCredential(u, '/api-keys', e.currentTarget); } }, 'New API key'),
          el('button', { type: 'button', class: 'small', onclick: function (e) { createCredential(u, '/oauth-clients', e.currentTarget); } }, 'New OAuth client'),
          el('button', { type: 'button', class: 'small', onclick: function (e) { toggleCredentials(u, credRow, e.currentTarget); } }, 'Credentials'))),
        credRow);
    });
  }

  async function toggleCredentials(user, row, button) {
    if (!row.hidden) {
      row.hidden = true;
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    row.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    await loadCredentials(user, row.firstChild);
  }

  async function loadCredentials(user, cell) {
    clear(cell).append(messageNode('info', 'Loading credentials of ' + user.name + '…'));
    let list;
    try {
      list = (await api('GET', '/users/' + enc(user.id) + '/credentials')).data;
    } catch (err) {
      showError(cell, err);
      return;
    }
    clear(cell);
    if (!list.length) {
      cell.append(el('p', { class: 'empty' }, user.name + ' has no API keys or OAuth clients.'));
      return;
    }
    const status = el('div', { class: 'status' });
    cell.append(status, el('table', { class: 'list inner' },
      el('thead', null, el('tr', null, ['Kind', 'Key prefix / client id', 'Created', 'Revoked', ''].map(function (h) {
        return el('th', null, h);
      }))),
      el('tbody', null, list.map(function (c) {
        return el('tr', null,
          el('td', { 'data-label': 'Kind' }, c.kind === 'oauth_client' ? 'OAuth client' : 'API key'),
          el('td', { 'data-label': 'Prefix' }, el('code', null, c.prefix)),
          el('td', { 'data-label': 'Created' }, formatTime(c.created_ms)),
          el('td', { 'data-label': 'Revoked' }, c.revoked_ms ? formatTime(c.revoked_ms) : '—'),
          el('td', { class: 'row-actions' }, c.revoked_ms ? null : el('button', {
            type: 'button', class: 'danger small',
            onclick: function (e) { revokeCredential(user, c, cell, status, e.currentTarget); },
          }, 'Revoke')));
      }))));
  }

  async function revokeCredential(user, cred, cell, status, button) {
    const what = cred.kind === 'oauth_client' ? 'the OAuth client ' : 'the API key ';
    if (!window.confirm('Revoke ' + what + cred.prefix + '…? Whatever uses it stops working at once.')) return;
    await busy([button], async function () {
      try {
        await api('DELETE', '/credentials/' + enc(cred.id));
      } catch (err) {
        showError(status, err);
        return;
      }
      await loadCredentials(user, cell);
      noticeOk('Revoked ' + what + cred.prefix + '….');
    });
  }

  async function createCredential(user, kind, button) {
    const status = $('#u-status');
    await busy([button], async function () {
      let cred;
      try {
        cred = (await api('POST', '/users/' + enc(user.id) + kind)).data;
      } catch (err) {
        showError(status, err);
        return;
      }
      clear(status);
      showSecretOnce(user, cred);
    });
  }

  function copyField(input, button) {
    const done = function () { button.textContent = 'Copied'; };
    const fallback = function () {
      input.focus();
      input.select();
      let copied = false;
      try {
        copied = document.execCommand('copy');
      } catch (_) {
        copied = false;
      }
      if (copied) done();
      else button.textContent = 'Selected: press Ctrl+C';
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, fallback);
    } else fallback();
  }

  function secretField(label, value) {
    const input = el('input', { type: 'text', readOnly: true, value: value, class: 'code', spellcheck: 'false' });
    const button = el('button', { type: 'button', class: 'small', onclick: function () { copyField(input, button); } }, 'Copy');
    return el('label', { class: 'secret-field' }, label, el('span', { class: 'with-button' }, input, button));
  }

  function showSecretOnce(user, cred) {
    const box = clear($('#u-secret'));
    const oauth = cred.kind === 'oauth_client';
    if (!cred.secret) {
      showError($('#u-status'), new ApiError(0, 'missing_secret',
        'The credential ' + cred.prefix + ' was created but the answer carried no secret: revoke it and create another.'));
      return;
    }
    appendChildren(box, [
      el('h3', null, (oauth ? 'New OAuth client for ' : 'New API key for ') + user.name),
      el('p', null, el('strong', null, 'Copy the secret now: it is shown only this once.')),
      oauth ? secretField('Client id', cred.prefix) : null,
      secretField(oauth ? 'Client secret' : 'API key', cred.secret),
      oauth
        ? el('p', { class: 'hint' }, 'Exchange them for a token at ', el('code', null, 'POST /oauth/token'),
          ' (grant type client_credentials).')
        : el('p', { class: 'hint' }, 'Send it as ', el('code', null, 'Authorization: Bearer <key>'), '.'),
      el('div', { class: 'actions' }, el('button', {
        type: 'button', class: 'primary',
        onclick: function () { clear(box); box.hidden = true; },
      }, 'I have saved it'))]);
    box.hidden = false;
    box.scrollIntoView({ block: 'nearest' });
  }

  async function addUser(e) {
    e.preventDefault();
    const status = $('#u-status');
    const name = $('#u-name').value.trim();
    const roles = Array.prototype.slice.call(document.querySelectorAll('#u-roles input:checked'))
      .map(function (c) { return c.value; });
    if (!name) return invalidInput($('#u-name'), status, 'missing_name', 'Enter the user\'s name.');
    if (!roles.length) {
      return invalidInput(document.querySelector('#u-roles input'), status, 'missing_roles', 'Choose at least one role.');
    }
    await busy([$('#u-add')], async function () {
      let user;
      try {
        user = (await api('POST', '/users', { body: { name: name, roles: roles } })).data;
      } catch (err) {
        showError(status, err);
        return;
      }
      $('#u-name').value = '';
      await loadUsers();
      showOk(status, 'Created ' + user.name + '. Give them an API key or an OAuth client from the table.');
    });
  }

  function setUpSettings() {
    $('#s-include-default').addEventListener('change', loadSecrets);
    $('#s-refresh').addEventListener('click', function () { busy([$('#s-refresh')], loadSecrets); });
    $('#s-form').addEventListener('submit', addSecret);
    $('#w-refresh').addEventListener('click', function () { busy([$('#w-refresh')], loadDomains); });
    $('#w-form').addEventListener('submit', addDomain);
    $('#u-refresh').addEventListener('click', function () { busy([$('#u-refresh')], loadUsers); });
    $('#u-form').addEventListener('submit', addUser);
    const roles = $('#u-roles');
    ROLES.forEach(function (r) {
      roles.append(el('label', { class: 'check role' },
        el('input', { type: 'checkbox', value: r[0], checked: r[0] === 'FaaS-Developer' }),
        el('span', null, el('strong', null, r[0]), el('span', { class: 'muted' }, ' — ' + r[1]))));
    });
    roles.addEventListener('change', function () {
      roles.querySelectorAll('input').forEach(function (i) { i.removeAttribute('aria-invalid'); });
    });
    ['#s-key', '#s-value', '#w-domain', '#u-name'].forEach(function (s) { clearInvalidOnInput($(s)); });
  }

  // -- Account -------------------------------------------------------------------------

  function renderAccount(a) {
    meta($('#a-meta'), [
      ['Account id', el('code', null, a.id)],
      ['Name', a.name],
      ['Provisioned', a.provisioned ? badge('yes', 'ok') : badge('no', 'failed')],
      ['Terms of use accepted', formatTime(a.terms_accepted_ms)],
    ]);
    $('#a-terms').hidden = !!a.provisioned;
  }

  async function showAccount() {
    const status = $('#a-status');
    try {
      renderAccount((await api('GET', '')).data);
      clear(status);
    } catch (err) {
      showError(status, err);
    }
  }

  async function acceptTerms() {
    const status = $('#a-status');
    showInfo(status, 'Accepting the terms of use…');
    await busy([$('#a-accept')], async function () {
      try {
        renderAccount((await api('POST', '/terms-of-use', { body: { accept: true } })).data);
      } catch (err) {
        showError(status, err);
        return;
      }
      showOk(status, 'Terms of use accepted: the account is provisioned.');
      clear($('#notices'));
    });
  }

  function setUpAccount() {
    $('#a-refresh').addEventListener('click', function () { busy([$('#a-refresh')], showAccount); });
    $('#a-accept').addEventListener('click', acceptTerms);
  }

  // -- start -------------------------------------------------------------------------------

  function start() {
    setUpSignIn();
    setUpFunctions();
    setUpInvoke();
    setUpSettings();
    setUpAccount();
    window.addEventListener('hashchange', onHashChange);
    window.addEventListener('unhandledrejection', function (e) { noticeError(e.reason); });
    window.addEventListener('error', function (e) { noticeError(e.error || e.message); });
    try { window.localStorage.removeItem(STORE_KEY); } catch (_) { /* storage disabled */ }
    const account = storageGet(STORE_ACCOUNT);
    const key = storageGet(STORE_KEY);
    $('#signin-account').value = account;
    $('#signin-key').value = key;
    $('#signin-view').hidden = false;
    if (account && key) {
      showInfo($('#signin-status'), 'Signing in with the remembered key…');
      signIn(account, key, true);
    } else {
      (account ? $('#signin-key') : $('#signin-account')).focus();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
