// Schedules: create with a productive-function picker, cron validation with the next
// invocations in local time (the scheduler's preview route), the 8,000-character payload
// limit; last and next invocation and last state per schedule.
import { useEffect, useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction, localTime, StateBadge, parseJson } from './ui.js';

export const PAYLOAD_LIMIT = 8000;
const EXAMPLES = [['*/5 * * * *', 'every 5 minutes'], ['0 * * * *', 'every hour'],
                  ['30 8 * * 1-5', '08:30 UTC on weekdays'], ['0 0 1 * *', 'midnight UTC on the 1st']];

function CronPreview({ cron }) {
  const [state, setState] = useState({ next: null, error: null });
  useEffect(() => {
    if (!cron.trim()) { setState({ next: null, error: null }); return undefined; }
    const t = setTimeout(() => api.previewCron(cron.trim()).then(
      (p) => setState({ next: p.next_ms, error: null }), (error) => setState({ next: null, error })), 300);
    return () => clearTimeout(t);
  }, [cron]);
  if (state.error) {
    return html`<div><${ErrorBox} error=${state.error} />
      <p class="hint">Valid examples: ${EXAMPLES.map(([c, d]) => html`<code>${c}</code> (${d}) `)}</p></div>`;
  }
  return state.next && html`<div class="hint" data-testid="cron-next">Next invocations (your local time):
    <ul>${state.next.map((ms) => html`<li>${localTime(ms)}</li>`)}</ul></div>`;
}

function Create({ lambdas, onCreated }) {
  const productive = (lambdas || []).filter((l) => l.state === 'Productive' || l.state === 'Modified');
  const [form, setForm] = useState({ lambda_id: '', cron: '*/5 * * * *', payload: '{}' });
  const act = useAction();
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    act.run(async () => {
      const p = parseJson(form.payload, 'Payload');
      if (!p.ok) throw new api.ApiError(0, 'invalid_json', p.message);
      await api.createSchedule({ lambda_id: form.lambda_id, cron: form.cron.trim(), payload: p.value });
      onCreated();
    });
  };
  const over = form.payload.length > PAYLOAD_LIMIT;
  return html`<form class="panel" onSubmit=${submit} aria-label="New schedule">
    <h2>New schedule</h2>
    <label>Function (productive only) <select name="lambda_id" required value=${form.lambda_id} onChange=${set('lambda_id')}>
      <option value="">Choose…</option>
      ${productive.map((l) => html`<option value=${l.id}>${l.name}</option>`)}</select></label>
    <label>Cron expression (UTC, five fields) <input name="cron" value=${form.cron} onInput=${set('cron')} required /></label>
    <${CronPreview} cron=${form.cron} />
    <label>Payload (JSON) <textarea class="mono" name="payload" rows="5" value=${form.payload} onInput=${set('payload')} /></label>
    <p class=${over ? 'error' : 'hint'}>${form.payload.length} / ${PAYLOAD_LIMIT} characters</p>
    <button type="submit" class="primary" disabled=${act.busy || over || !form.lambda_id}>Create schedule</button>
    <${ErrorBox} error=${act.error} />
  </form>`;
}

function Row({ s, reload }) {
  const act = useAction();
  return html`<tr>
    <td>${s.lambda_name || s.lambda_id}</td><td><code>${s.cron}</code></td>
    <td>${localTime(s.last_invocation_ms)}</td><td>${localTime(s.next_invocation_ms)}</td>
    <td title=${s.last_error ? JSON.stringify(s.last_error) : ''}>
      ${s.last_state ? html`<${StateBadge} state=${s.last_state} />` : '—'}
      ${s.last_activation_id ? html` <a href=${'#logs?activation_id=' + encodeURIComponent(s.last_activation_id)}>logs</a>` : ''}</td>
    <td class="actions">
      <button disabled=${act.busy} onClick=${() => act.run(async () => { await api.updateSchedule(s.id, { enabled: !s.enabled }); reload(); })}>
        ${s.enabled ? 'Disable' : 'Enable'}</button>
      <button disabled=${act.busy} onClick=${() => act.run(async () => { await api.deleteSchedule(s.id); reload(); })}>Delete</button>
      <${ErrorBox} error=${act.error} /></td></tr>`;
}

export function Schedules() {
  const [lambdas] = useLoad(() => api.listLambdas(), []);
  const [schedules, error, reload] = useLoad(() => api.listSchedules(), []);
  return html`<section>
    <h1>Schedules</h1>
    <${ErrorBox} error=${error} />
    <table><thead><tr><th>Function</th><th>Cron (UTC)</th><th>Last invocation</th><th>Next invocation</th>
      <th>Last state</th><th>Actions</th></tr></thead>
      <tbody>${(schedules || []).map((s) => html`<${Row} s=${s} reload=${reload} key=${s.id} />`)}</tbody></table>
    ${schedules && !schedules.length ? html`<p class="muted">No schedules yet.</p>` : ''}
    <${Create} lambdas=${lambdas} onCreated=${reload} />
  </section>`;
}
