// Home: invocations, failures by state and latency over 24 h / 7 d; busiest and most
// failing functions; recent deployments.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import * as api from './api.js';
import { html, ErrorBox, useLoad, localTime, StateBadge } from './ui.js';

const STATES = ['SUCCEEDED', 'CODING_FAILURE', 'PLATFORM_FAILURE', 'TIMEOUT', 'UNKNOWN'];
const COLORS = ['#2e7d32', '#c62828', '#6a1b9a', '#ef6c00', '#757575'];

function Plot({ title, series, data, label }) {
  const box = useRef(null);
  useEffect(() => {
    const opts = {
      title, width: Math.max(320, (box.current.clientWidth || 600) - 8), height: 220,
      series: [{}, ...series.map(([name, stroke]) => ({ label: name, stroke, width: 2, points: { show: true } }))],
      axes: [{}, { label }],
    };
    const plot = new uPlot(opts, data, box.current);
    return () => plot.destroy();
  }, [data]);
  return html`<div class="plot" ref=${box}></div>`;
}

// Sum metric buckets of many lambdas into one series per state + latency.
export function toSeries(items) {
  const x = items.map((b) => Math.round(b.bucket_start_ms / 1000));
  const byState = STATES.map((s) => items.map((b) => (b.invocations || {})[s] || 0));
  const p50 = items.map((b) => (b.duration_ms ? b.duration_ms.p50 : null));
  const p95 = items.map((b) => (b.duration_ms ? b.duration_ms.p95 : null));
  return { x, byState, p50, p95, total: items.reduce((n, b) => n + (b.total || 0), 0) };
}

function Charts({ last }) {
  const [m, error] = useLoad(() => api.metrics({ last, bucket: last === '7d' ? 'day' : 'hour' }), [last]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!m) return html`<p class="muted">Loading metrics…</p>`;
  const s = toSeries(m.items);
  const failures = s.byState.slice(1).reduce((n, arr) => n + arr.reduce((a, b) => a + b, 0), 0);
  return html`<div>
    <p class="summary"><strong data-testid="total-invocations">${s.total}</strong>${" invocations, "}
      <strong>${failures}</strong> failed in the last ${last}.</p>
    <div class="plots">
      <${Plot} title="Invocations by state" label="count" data=${[s.x, ...s.byState]}
        series=${STATES.map((st, i) => [st, COLORS[i]])} />
      <${Plot} title="Latency (ms)" label="ms" data=${[s.x, s.p50, s.p95]}
        series=${[['p50', '#1565c0'], ['p95', '#ad1457']]} />
    </div>
  </div>`;
}

// Per-function totals over 24 h, for the busiest / most failing lists.
async function perFunction() {
  const lambdas = await api.listLambdas();
  const rows = await Promise.all(lambdas.filter((l) => l.deployed_version).map(async (l) => {
    const [m, deps] = await Promise.all([api.metrics({ lambda_id: l.id, last: '24h' }), api.listDeployments(l.id)]);
    const total = m.items.reduce((n, b) => n + b.total, 0);
    const ok = m.items.reduce((n, b) => n + ((b.invocations || {}).SUCCEEDED || 0), 0);
    return { lambda: l, total, failed: total - ok, deployments: deps };
  }));
  return rows;
}

export function Home() {
  const [last, setLast] = useState('24h');
  const [rows, error] = useLoad(perFunction, []);
  const busiest = (rows || []).filter((r) => r.total).sort((a, b) => b.total - a.total).slice(0, 5);
  const failing = (rows || []).filter((r) => r.failed).sort((a, b) => b.failed - a.failed).slice(0, 5);
  const recent = (rows || []).flatMap((r) => r.deployments.map((d) => ({ ...d, name: r.lambda.name })))
    .sort((a, b) => b.created_ms - a.created_ms).slice(0, 8);
  return html`<section>
    <h1>Home</h1>
    <div class="tabs" role="tablist">
      ${['24h', '7d'].map((l) => html`<button role="tab" aria-selected=${last === l} onClick=${() => setLast(l)}>Last ${l}</button>`)}
    </div>
    <${Charts} last=${last} key=${last} />
    <${ErrorBox} error=${error} />
    <div class="columns">
      <div><h2>Busiest functions (24 h)</h2>
        <ol>${busiest.map((r) => html`<li><a href=${'#functions/' + r.lambda.id}>${r.lambda.name}</a> — ${r.total}</li>`)}</ol>
        ${rows && !busiest.length ? html`<p class="muted">No invocations yet.</p>` : ''}</div>
      <div><h2>Most failing functions (24 h)</h2>
        <ol>${failing.map((r) => html`<li><a href=${'#functions/' + r.lambda.id}>${r.lambda.name}</a> — ${r.failed} of ${r.total}</li>`)}</ol>
        ${rows && !failing.length ? html`<p class="muted">No failures.</p>` : ''}</div>
    </div>
    <h2>Recent deployments</h2>
    <table><thead><tr><th>Function</th><th>Version</th><th>Action</th><th>State</th><th>When</th></tr></thead>
      <tbody>${recent.map((d) => html`<tr><td>${d.name}</td><td>${d.version}</td><td>${d.action}</td>
        <td title=${d.cause || ''}><${StateBadge} state=${d.state} /></td><td>${localTime(d.created_ms)}</td></tr>`)}</tbody></table>
  </section>`;
}
