// A function's page: code editor, environment variables, dependencies, save and
// deploy with progress, and a test panel (payload, result, logs of that call).
import { useEffect, useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction, StateBadge, duration, parseJson } from './ui.js';
import { CodeEditor } from './code-editor.js';

// A template's sample: {payload, headers} or the bare payload.
export function samplePayload(template) {
  const s = (template && template.sample_payload) || {};
  return 'payload' in s ? s.payload : s;
}

const pretty = (v) => JSON.stringify(v ?? {}, null, 2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll the lambda while its deployment is in progress; onStep(lambda) after each read.
export async function waitDeployed(id, onStep) {
  for (let i = 0; i < 300; i++) {
    const l = await api.getLambda(id);
    onStep(l);
    if (l.deployment_state !== 'Deploying') return l;
    await sleep(1000);
  }
  throw new api.ApiError(0, 'timeout', 'Still deploying after 5 minutes');
}

function TestPanel({ lambda }) {
  const [templates] = useLoad(() => api.listTemplates(), []);
  const [payload, setPayload] = useState(null);
  const [result, setResult] = useState(null);
  const [logs, setLogs] = useState([]);
  const act = useAction();
  useEffect(() => {
    if (payload !== null || !templates) return;
    const t = templates.find((x) => x.id === lambda.template_id) || templates.find((x) => x.event_id && x.event_id === lambda.event_id);
    setPayload(pretty(samplePayload(t)));
  }, [templates]);
  const run = () => act.run(async () => {
    const p = parseJson(payload || '', 'Payload');
    if (!p.ok) throw new api.ApiError(0, 'invalid_json', p.message);
    setResult(null); setLogs([]);
    const r = await api.testInvoke(lambda.id, { payload: p.value });
    setResult(r);
    setLogs(r.logs || (r.activation_id ? await api.activationLogs(r.activation_id) : []));
  });
  return html`<section class="panel" aria-label="Test">
    <h2>Test</h2>
    <label>Payload (JSON)<textarea class="mono" rows="8" name="payload" value=${payload || ''}
      onInput=${(e) => setPayload(e.target.value)} /></label>
    <button onClick=${run} disabled=${act.busy || !lambda.deployed_version}>${act.busy ? 'Running…' : 'Run test'}</button>
    ${!lambda.deployed_version ? html`<span class="muted"> Deploy the function to test it.</span>` : ''}
    <${ErrorBox} error=${act.error} />
    ${result && html`<div class="result" data-testid="test-result">
      <p><strong>${result.outcome}</strong> in ${duration(result.duration_ms)}${result.cold_start ? ' (cold start)' : ''}
        — <a href=${'#logs?activation_id=' + encodeURIComponent(result.activation_id)}>activation ${result.activation_id}</a></p>
      ${result.error && html`<div class="error">${result.error.message || JSON.stringify(result.error)}</div>`}
      <pre class="mono">${JSON.stringify(result.result, null, 2)}</pre>
      <h3>Logs of this call</h3>
      <ul class="log-lines">${logs.map((l) => html`<li class=${'lvl-' + l.level}><span>${l.level}</span> ${l.message}</li>`)}</ul>
    </div>`}
  </section>`;
}

export function Editor({ id }) {
  const [lambda, error, reload] = useLoad(() => api.getLambda(id), [id]);
  const [draft, setDraft] = useState(null);
  const [progress, setProgress] = useState(null);
  const act = useAction();
  useEffect(() => {
    if (lambda && !draft) setDraft({ code: lambda.code || '', env: pretty(lambda.env), deps: pretty(lambda.dependencies) });
  }, [lambda]);
  if (error) return html`<section><p><a href="#functions">← All functions</a></p><${ErrorBox} error=${error} /></section>`;
  if (!lambda || !draft) return html`<p class="muted">Loading…</p>`;

  const save = async () => {
    const env = parseJson(draft.env, 'Environment variables');
    const deps = parseJson(draft.deps, 'Dependencies');
    for (const p of [env, deps]) if (!p.ok) throw new api.ApiError(0, 'invalid_json', p.message);
    const body = {};
    if (draft.code !== lambda.code) body.code = draft.code;
    if (JSON.stringify(env.value || {}) !== JSON.stringify(lambda.env || {})) body.env = env.value || {};
    if (JSON.stringify(deps.value || {}) !== JSON.stringify(lambda.dependencies || {})) body.dependencies = deps.value || {};
    if (Object.keys(body).length) await api.updateLambda(lambda.id, body);
  };
  const onSave = () => act.run(async () => { await save(); reload(); });
  const onDeploy = () => act.run(async () => {
    await save();
    setProgress({ state: 'Deploying', started: Date.now() });
    await api.deploy(lambda.id);
    const done = await waitDeployed(lambda.id, (l) => setProgress({ state: l.deployment_state, started: Date.now() }));
    setProgress({ state: done.deployment_state, cause: done.deployment_cause });
    reload();
  });
  const onUndeploy = () => act.run(async () => { await api.undeploy(lambda.id); reload(); });
  const onDelete = () => act.run(async () => { await api.deleteLambda(lambda.id); location.hash = '#functions'; });
  const set = (k) => (v) => setDraft((d) => ({ ...d, [k]: v }));
  const failed = lambda.deployment_state === 'Failed' ? lambda.deployment_cause : null;
  return html`<section>
    <p><a href="#functions">← All functions</a></p>
    <h1>${lambda.name} <${StateBadge} state=${lambda.state} /></h1>
    <p class="muted">${lambda.description} · ${lambda.runtime} · version ${lambda.version}
      ${lambda.deployed_version ? ` · deployed version ${lambda.deployed_version} (${lambda.deployment_state})` : ''}</p>
    <div class="toolbar">
      <button onClick=${onSave} disabled=${act.busy}>Save</button>
      <button class="primary" onClick=${onDeploy} disabled=${act.busy}>Save and deploy</button>
      ${lambda.deployed_version ? html`<button onClick=${onUndeploy} disabled=${act.busy}>Undeploy</button>`
                                : html`<button onClick=${onDelete} disabled=${act.busy}>Delete</button>`}
      ${progress && html`<span class="progress" role="status" data-testid="deploy-progress">
        ${progress.state === 'Deploying' ? html`<progress></progress> Deploying…` : html`Deployment: <${StateBadge} state=${progress.state} />`}</span>`}
    </div>
    <${ErrorBox} error=${act.error} />
    ${failed && html`<div class="error" role="alert">Deployment failed: ${failed}</div>`}
    <div class="editor-layout">
      <div>
        <${CodeEditor} value=${draft.code} runtime=${lambda.runtime} failure=${failed} onChange=${set('code')} />
        <details><summary>Environment variables and dependencies</summary>
          <label>Environment variables (JSON object)<textarea class="mono" rows="4" name="env" value=${draft.env}
            onInput=${(e) => set('env')(e.target.value)} /></label>
          <label>Dependencies (JSON: package → version range)<textarea class="mono" rows="4" name="deps"
            value=${draft.deps} onInput=${(e) => set('deps')(e.target.value)} /></label>
        </details>
      </div>
      <${TestPanel} lambda=${lambda} key=${lambda.deployed_version} />
    </div>
  </section>`;
}
