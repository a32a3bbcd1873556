// Settings: Domain Allowlist (default tab), Secrets, Users and permissions (with their
// API keys and OAuth clients), mTLS certificates, Email reports.
import { useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction, localTime } from './ui.js';

const TABS = [['domains', 'Domain Allowlist'], ['secrets', 'Secrets'], ['users', 'Users and permissions'],
              ['certificates', 'mTLS certificates'], ['reports', 'Email reports']];
const ROLES = ['FaaS-Admin', 'FaaS-Developer', 'FaaS-Invocation'];

// A one-field form that runs `submit(value)` and reloads.
function AddForm({ label, name, submit, reload, type = 'text', children }) {
  const act = useAction();
  const on = (e) => {
    e.preventDefault();
    const form = e.target;
    act.run(async () => { await submit(new FormData(form)); form.reset(); reload(); });
  };
  return html`<form class="inline-form" onSubmit=${on} aria-label=${'Add ' + label}>
    <label>${label} <input name=${name} type=${type} required /></label>${children}
    <button type="submit" disabled=${act.busy}>Add</button><${ErrorBox} error=${act.error} /></form>`;
}

function RemoveButton({ label, run, reload, text = 'Remove' }) {
  const act = useAction();
  return html`<button aria-label=${label} disabled=${act.busy} onClick=${() => act.run(async () => { await run(); reload(); })}>${text}</button>
    <${ErrorBox} error=${act.error} />`;
}

function Domains() {
  const [items, error, reload] = useLoad(() => api.listDomains(), []);
  return html`<div>
    <p class="hint">Functions may call only the hosts listed here. A redirect is followed only to an allowlisted host,
      so list the target of every redirect too. <code>*.example.com</code> allows every subdomain of example.com
      but not example.com itself; add both if both are called.</p>
    <${AddForm} label="Domain" name="domain" reload=${reload} submit=${(f) => api.addDomain(String(f.get('domain')).trim())} />
    <${ErrorBox} error=${error} />
    <ul class="items" data-testid="domains">${(items || []).map((d) => html`<li><code>${d.domain}</code>
      <span class="muted">${localTime(d.created_ms)}</span>
      <${RemoveButton} label=${'Remove ' + d.domain} run=${() => api.removeDomain(d.domain)} reload=${reload} /></li>`)}</ul>
  </div>`;
}

function Secrets() {
  const [withDefault, setWithDefault] = useState(false);
  const [items, error, reload] = useLoad(() => api.listSecrets(withDefault), [withDefault]);
  return html`<div>
    <p class="hint">Values are never shown again after saving; functions read them with <code>SecretClient</code>.</p>
    <${AddForm} label="Key" name="key" reload=${reload}
      submit=${(f) => api.createSecret(String(f.get('key')).trim(), String(f.get('value')))}>
      <label>Value <input name="value" type="password" required /></label></${AddForm}>
    <label class="inline"><input type="checkbox" checked=${withDefault} onChange=${(e) => setWithDefault(e.target.checked)} />
      Show default secrets</label>
    <${ErrorBox} error=${error} />
    <ul class="items" data-testid="secrets">${(items || []).map((s) => html`<li><code>${s.key}</code>
      ${s.is_default ? html`<span class="badge">default</span>` : ''}<span class="muted">${localTime(s.updated_ms)}</span>
      ${!s.is_default && html`<${RemoveButton} label=${'Remove secret ' + s.key} run=${() => api.deleteSecret(s.key)} reload=${reload} />`}</li>`)}</ul>
  </div>`;
}

function Credentials({ user }) {
  const [items, error, reload] = useLoad(() => api.listCredentials(user.id), [user.id]);
  const [shown, setShown] = useState(null);
  const act = useAction();
  const create = (fn) => act.run(async () => { setShown(await fn(user.id)); reload(); });
  return html`<div class="credentials">
    <button onClick=${() => create(api.createApiKey)}>New API key</button>
    <button onClick=${() => create(api.createOAuthClient)}>New OAuth client</button>
    ${shown && html`<p class="notice">Copy it now, it is shown once: ${shown.kind === 'oauth_client' ? html`client id <code>${shown.prefix}</code>, ` : ''}secret <code>${shown.secret}</code></p>`}
    <${ErrorBox} error=${error || act.error} />
    <ul>${(items || []).map((c) => html`<li>${c.kind === 'oauth_client' ? 'OAuth client' : 'API key'} <code>${c.prefix}</code>
      <span class="muted">${c.revoked_ms ? 'revoked ' + localTime(c.revoked_ms) : 'created ' + localTime(c.created_ms)}</span>
      ${!c.revoked_ms && html`<${RemoveButton} text="Revoke" label=${'Revoke ' + c.prefix} run=${() => api.revokeCredential(c.id)} reload=${reload} />`}</li>`)}</ul>
  </div>`;
}

function Users() {
  const [items, error, reload] = useLoad(() => api.listUsers(), []);
  return html`<div>
    <${AddForm} label="User name" name="name" reload=${reload}
      submit=${(f) => api.createUser(String(f.get('name')).trim(), f.getAll('roles').map(String))}>
      <fieldset><legend>Roles</legend>${ROLES.map((r) => html`<label class="inline"><input type="checkbox" name="roles" value=${r} />${r}</label>`)}</fieldset>
    </${AddForm}>
    <${ErrorBox} error=${error} />
    ${(items || []).map((u) => html`<div class="panel"><h3>${u.name} <span class="muted">${u.roles.join(', ')}</span></h3>
      <${Credentials} user=${u} />
      <${RemoveButton} text="Remove user" label=${'Remove user ' + u.name} run=${() => api.deleteUser(u.id)} reload=${reload} /></div>`)}
  </div>`;
}

function Certificates() {
  const [items, error, reload] = useLoad(() => api.listCertificates(), []);
  const act = useAction();
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { name: f.get('name'), cert: f.get('cert'), key: f.get('key') };
    if (String(f.get('ca')).trim()) body.ca = f.get('ca');
    act.run(async () => { await api.addCertificate(body); e.target.reset(); reload(); });
  };
  return html`<div>
    <form class="panel" onSubmit=${submit} aria-label="New certificate">
      <label>Name <input name="name" required /></label>
      <label>Certificate (PEM) <textarea class="mono" name="cert" rows="4" required /></label>
      <label>Private key (PEM) <textarea class="mono" name="key" rows="4" required /></label>
      <label>CA (PEM, optional) <textarea class="mono" name="ca" rows="3" /></label>
      <button type="submit" disabled=${act.busy}>Add certificate</button><${ErrorBox} error=${act.error} /></form>
    <${ErrorBox} error=${error} />
    <ul class="items">${(items || []).map((c) => html`<li><code>${c.name}</code> <span class="muted">${c.subject || ''}</span>
      <${RemoveButton} label=${'Remove certificate ' + c.name} run=${() => api.deleteCertificate(c.name)} reload=${reload} /></li>`)}</ul>
  </div>`;
}

function Reports() {
  const [settings, error, reload] = useLoad(() => api.reportSettings(), []);
  const act = useAction();
  if (!settings) return html`<${ErrorBox} error=${error} />`;
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const recipients = String(f.get('recipients')).split(/[\s,]+/).filter(Boolean);
    act.run(async () => { await api.saveReportSettings({ ...settings, recipients, frequency: f.get('frequency') }); reload(); });
  };
  return html`<form class="panel" onSubmit=${submit} aria-label="Email reports">
    <label>Recipients <input name="recipients" value=${settings.recipients.join(', ')} /></label>
    <label>Frequency <select name="frequency" value=${settings.frequency}>
      ${['off', 'daily', 'weekly'].map((v) => html`<option value=${v}>${v}</option>`)}</select></label>
    <button type="submit" disabled=${act.busy}>Save</button><${ErrorBox} error=${act.error} /></form>`;
}

const PANES = { domains: Domains, secrets: Secrets, users: Users, certificates: Certificates, reports: Reports };

export function Settings({ tab }) {
  const Pane = PANES[tab] || Domains;
  return html`<section>
    <h1>Settings</h1>
    <nav class="tabs" aria-label="Settings">${TABS.map(([id, label]) => html`
      <a href=${'#settings/' + id} aria-current=${tab === id ? 'page' : undefined}>${label}</a>`)}</nav>
    <${Pane} />
  </section>`;
}
