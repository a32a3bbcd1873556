// Functions: lists by state and the create wizard (template → event → name and
// description → domains to allowlist).
import { useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction, StateBadge } from './ui.js';

const GROUPS = [['Draft', ['Draft']], ['Productive / Modified', ['Productive', 'Modified']]];

function List() {
  const [lambdas, error] = useLoad(() => api.listLambdas(), []);
  return html`<div>
    <${ErrorBox} error=${error} />
    ${GROUPS.map(([title, states]) => {
      const rows = (lambdas || []).filter((l) => states.includes(l.state));
      return html`<h2>${title} <span class="muted">(${rows.length})</span></h2>
        <table><thead><tr><th>Name</th><th>Runtime</th><th>Event</th><th>State</th><th>Version</th></tr></thead>
        <tbody>${rows.map((l) => html`<tr>
          <td><a href=${'#functions/' + encodeURIComponent(l.id)}>${l.name}</a><div class="muted">${l.description}</div></td>
          <td>${l.runtime}</td><td>${l.event_id || '—'}</td><td><${StateBadge} state=${l.state} /></td>
          <td>${l.version}${l.deployed_version ? ' (deployed ' + l.deployed_version + ')' : ''}</td></tr>`)}</tbody></table>`;
    })}
  </div>`;
}

function Wizard() {
  const [templates, tErr] = useLoad(() => api.listTemplates(), []);
  const [events, eErr] = useLoad(() => api.listEvents(), []);
  const [step, setStep] = useState(0);
  const [form, setForm] = useState({ template: null, event_id: '', name: '', description: '', domains: '' });
  const act = useAction();
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const pickTemplate = (t) => { setForm({ ...form, template: t, event_id: t.event_id || '' }); setStep(1); };
  const create = () => act.run(async () => {
    const t = form.template;
    const created = await api.createLambda({
      name: form.name.trim(), description: form.description.trim(), runtime: t.runtime,
      template_id: t.id, event_id: form.event_id || null,
    });
    for (const d of form.domains.split(/[\s,]+/).filter(Boolean)) {
      try { await api.addDomain(d); } catch (e) { if (e.status !== 409) throw e; }
    }
    location.hash = '#functions/' + encodeURIComponent(created.id);
  });
  const steps = ['Template', 'Event', 'Name and description', 'Domains'];
  return html`<div class="wizard">
    <ol class="steps">${steps.map((s, i) => html`<li aria-current=${i === step ? 'step' : undefined}>${s}</li>`)}</ol>
    <${ErrorBox} error=${tErr || eErr || act.error} />
    ${step === 0 && html`<div class="cards">${(templates || []).map((t) => html`
      <button class="card" onClick=${() => pickTemplate(t)}>
        <strong>${t.name}</strong> <span class="muted">${t.runtime}</span><span>${t.description}</span></button>`)}</div>`}
    ${step === 1 && html`<label>Event
      <select value=${form.event_id} onChange=${set('event_id')}>
        <option value="">No event</option>
        ${(events || []).map((e) => html`<option value=${e.id}>${e.name}${e.limit ? ` (${e.used || 0}/${e.limit})` : ''}</option>`)}
      </select></label>
      <div class="row"><button onClick=${() => setStep(0)}>Back</button><button onClick=${() => setStep(2)}>Next</button></div>`}
    ${step === 2 && html`<label>Name <input name="name" value=${form.name} onInput=${set('name')} maxlength="100" /></label>
      <label>Description <textarea name="description" value=${form.description} onInput=${set('description')} /></label>
      <div class="row"><button onClick=${() => setStep(1)}>Back</button>
        <button disabled=${!form.name.trim()} onClick=${() => setStep(3)}>Next</button></div>`}
    ${step === 3 && html`<label>Domains to allowlist (optional, comma or space separated)
        <input name="domains" value=${form.domains} onInput=${set('domains')} placeholder="api.example.com" /></label>
      <p class="hint">A function may only call hosts on the account's allowlist. Add every host it calls, including
        the hosts its requests are redirected to; <code>*.example.com</code> covers subdomains only, not example.com.</p>
      <div class="row"><button onClick=${() => setStep(2)}>Back</button>
        <button class="primary" disabled=${act.busy} onClick=${create}>Create function</button></div>`}
  </div>`;
}

export function Functions({ wizard }) {
  return html`<section>
    <h1>Functions</h1>
    ${wizard ? html`<p><a href="#functions">← All functions</a></p><h2>Create a function</h2><${Wizard} />`
             : html`<p><a class="button primary" href="#functions/new">Create function</a></p><${List} />`}
  </section>`;
}


