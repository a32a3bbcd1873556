// Every call the console makes to the public API, one function each.
// Errors come back as one shape: ApiError {status, code, message}.

const KEY_STORE = 'fnbus.console.auth';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The API key is kept for the browser session only (sessionStorage).
export function auth() {
  try { return JSON.parse(sessionStorage.getItem(KEY_STORE) || 'null'); } catch (e) { return null; }
}
export function signIn(account, key) { sessionStorage.setItem(KEY_STORE, JSON.stringify({ account, key })); }
export function signOut() { sessionStorage.removeItem(KEY_STORE); }

function base() {
  const a = auth();
  if (!a) throw new ApiError(401, 'signed_out', 'Not signed in');
  return { root: '/api/v1/accounts/' + encodeURIComponent(a.account), key: a.key };
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

async function toError(res) {
  let code = 'http_' + res.status;
  let message = res.statusText || 'Request failed';
  try {
    const body = await res.json();
    const err = body.error || body;
    if (err.code) code = err.code;
    if (err.message) message = err.message;
    else if (body.detail) message = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON */ }
  return new ApiError(res.status, code, message);
}

// Low-level request; `path` is relative to the account.
export async function request(method, path, { body, params, okStatuses } = {}) {
  const { root, key } = base();
  const headers = { Authorization: 'Bearer ' + key, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(root + path + query(params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'The gateway cannot be reached: ' + e.message);
  }
  if (!res.ok && !(okStatuses || []).includes(res.status)) throw await toError(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

const enc = encodeURIComponent;

// Account
export const account = () => request('GET', '');
// Functions
export const listLambdas = (state) => request('GET', '/lambdas', { params: { state } });
export const getLambda = (id) => request('GET', '/lambdas/' + enc(id));
export const createLambda = (body) => request('POST', '/lambdas', { body });
export const updateLambda = (id, body) => request('PATCH', '/lambdas/' + enc(id), { body });
export const deleteLambda = (id) => request('DELETE', '/lambdas/' + enc(id));
export const listVersions = (id) => request('GET', '/lambdas/' + enc(id) + '/versions');
export const listTemplates = () => request('GET', '/templates');
export const listEvents = () => request('GET', '/events');
// Deployments
export const listDeployments = (id) => request('GET', '/lambdas/' + enc(id) + '/deployments');
export const deploy = (id) => request('POST', '/lambdas/' + enc(id) + '/deployments');
export const undeploy = (id) => request('DELETE', '/lambdas/' + enc(id) + '/deployments');
// Invocation: failures (502/504) still carry result, logs and error.
export const testInvoke = (id, body) =>
  request('POST', '/lambdas/' + enc(id) + '/test', { body, okStatuses: [502, 504] });
export const invoke = (id, body) =>
  request('POST', '/lambdas/' + enc(id) + '/invoke', { body, okStatuses: [502, 504] });
export const activationLogs = (activationId) => request('GET', '/activations/' + enc(activationId) + '/logs');
export const activation = (activationId) => request('GET', '/activations/' + enc(activationId));
// Observability
export const metrics = (params) => request('GET', '/metrics', { params });
export const searchLogs = (params) => request('GET', '/logs', { params });

// Live tail: the stream route wants the Authorization header, which EventSource cannot
// send, so read the text/event-stream body with fetch() and a stream reader.
export function tailLogs(params, onLine, onError) {
  const { root, key } = base();
  const ctrl = new AbortController();
  (async () => {
    const res = await fetch(root + '/logs/stream' + query(params), {
      headers: { Authorization: 'Bearer ' + key, Accept: 'text/event-stream' }, signal: ctrl.signal,
    });
    if (!res.ok) throw await toError(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (data) onLine(JSON.parse(data));
      }
    }
  })().catch((e) => { if (e.name !== 'AbortError') onError(e instanceof ApiError ? e : new ApiError(0, 'network', e.message)); });
  return () => ctrl.abort();
}
// Schedules
export const listSchedules = () => request('GET', '/schedules');
export const createSchedule = (body) => request('POST', '/schedules', { body });
export const updateSchedule = (id, body) => request('PATCH', '/schedules/' + enc(id), { body });
export const deleteSchedule = (id) => request('DELETE', '/schedules/' + enc(id));
export const previewCron = (cron, count = 5) => request('GET', '/schedules/preview', { params: { cron, count } });
// Settings
export const listDomains = () => request('GET', '/domains');
export const addDomain = (domain) => request('POST', '/domains', { body: { domain } });
export const removeDomain = (domain) => request('DELETE', '/domains/' + enc(domain));
export const listSecrets = (includeDefault) =>
  request('GET', '/secrets', { params: { include_default: includeDefault ? 'true' : undefined } });
export const createSecret = (key, value) => request('POST', '/secrets', { body: { key, value } });
export const deleteSecret = (key) => request('DELETE', '/secrets/' + enc(key));
export const listUsers = () => request('GET', '/users');
export const createUser = (name, roles) => request('POST', '/users', { body: { name, roles } });
export const deleteUser = (id) => request('DELETE', '/users/' + enc(id));
export const createApiKey = (userId) => request('POST', '/users/' + enc(userId) + '/api-keys');
export const createOAuthClient = (userId) => request('POST', '/users/' + enc(userId) + '/oauth-clients');
export const listCredentials = (userId) => request('GET', '/users/' + enc(userId) + '/credentials');
export const revokeCredential = (id) => request('DELETE', '/credentials/' + enc(id));
export const listCertificates = () => request('GET', '/certificates');
export const addCertificate = (body) => request('POST', '/certificates', { body });
export const deleteCertificate = (name) => request('DELETE', '/certificates/' + enc(name));
export const reportSettings = () => request('GET', '/reports/settings');
export const saveReportSettings = (body) => request('PUT', '/reports/settings', { body });
