// Deployments: deployed functions with version and state, the failure cause on hover,
// undeploy, and rollback to one of the last 5 deployed versions.
// The API has no rollback call and deploys only a lambda's current version, so a rollback
// saves the chosen version's code, environment and dependencies as a new version and deploys it.
import { useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction, StateBadge, localTime } from './ui.js';
import { waitDeployed } from './editor.js';

async function load() {
  const lambdas = (await api.listLambdas()).filter((l) => l.deployed_version || l.deployment_state);
  return Promise.all(lambdas.map(async (l) => ({ lambda: l, history: await api.listDeployments(l.id) })));
}

// The last 5 distinct versions that were deployed successfully, newest first.
export function rollbackChoices(history, current) {
  const seen = new Set();
  return history.filter((d) => d.action !== 'undeploy' && d.state === 'Deployed')
    .sort((a, b) => b.created_ms - a.created_ms)
    .filter((d) => d.version !== current && !seen.has(d.version) && seen.add(d.version)).slice(0, 5);
}

function Row({ lambda, history, reload }) {
  const act = useAction();
  const [state, setState] = useState(null);
  const choices = rollbackChoices(history, lambda.deployed_version);
  const rollback = (version) => act.run(async () => {
    const v = (await api.listVersions(lambda.id)).find((x) => x.version === version);
    await api.updateLambda(lambda.id, { code: v.code, env: v.env, dependencies: v.dependencies });
    await api.deploy(lambda.id);
    await waitDeployed(lambda.id, (l) => setState(l.deployment_state));
    reload();
  });
  const shown = state || lambda.deployment_state;
  return html`<tr>
    <td><a href=${'#functions/' + encodeURIComponent(lambda.id)}>${lambda.name}</a></td>
    <td>${lambda.deployed_version || '—'}</td>
    <td title=${lambda.deployment_cause || ''}><${StateBadge} state=${shown} />${shown === 'Deploying' ? html` <progress></progress>` : ''}</td>
    <td>${localTime(history.length ? Math.max(...history.map((d) => d.updated_ms)) : null)}</td>
    <td class="actions">
      <button disabled=${act.busy || !lambda.deployed_version} onClick=${() => act.run(async () => { await api.undeploy(lambda.id); reload(); })}>Undeploy</button>
      <select aria-label=${'Roll back ' + lambda.name} disabled=${act.busy || !choices.length}
        onChange=${(e) => e.target.value && rollback(Number(e.target.value))}>
        <option value="">Roll back to…</option>
        ${choices.map((d) => html`<option value=${d.version}>version ${d.version} (${localTime(d.created_ms)})</option>`)}
      </select>
      <${ErrorBox} error=${act.error} />
    </td></tr>`;
}

export function Deployments() {
  const [rows, error, reload] = useLoad(load, []);
  return html`<section>
    <h1>Deployments</h1>
    <${ErrorBox} error=${error} />
    <table><thead><tr><th>Function</th><th>Deployed version</th><th>State</th><th>Updated</th><th>Actions</th></tr></thead>
      <tbody>${(rows || []).map((r) => html`<${Row} ...${r} reload=${reload} key=${r.lambda.id} />`)}</tbody></table>
    ${rows && !rows.length ? html`<p class="muted">Nothing deployed yet.</p>` : ''}
    <p class="hint">Hover a state for the failure cause. A rollback saves the chosen version's code, environment and
      dependencies as a new version and deploys it.</p>
  </section>`;
}
