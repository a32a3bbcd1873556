// Logs: search by function, levels, time range and text; live tail; each line links
// to its invocation (the lines of that activation).
import { useEffect, useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox, useLoad, useAction } from './ui.js';

const LEVELS = ['debug', 'info', 'warn', 'error'];

function Line({ line, names }) {
  return html`<li class=${'lvl-' + line.level}>
    <time>${new Date(line.ts_ms).toLocaleString()}</time> <span class="lvl">${line.level}</span>
    <span class="fn">${names[line.lambda_id] || line.lambda_id}</span> <span class="msg">${line.message}</span>
    <a href=${'#logs?activation_id=' + encodeURIComponent(line.activation_id)}>invocation</a></li>`;
}

const toLocalInput = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);

export function Logs({ params }) {
  const [lambdas] = useLoad(() => api.listLambdas(), []);
  const names = Object.fromEntries((lambdas || []).map((l) => [l.id, l.name]));
  const [filter, setFilter] = useState({
    lambda_id: params.get('lambda_id') || '', levels: LEVELS, q: params.get('q') || '',
    since: toLocalInput(Date.now() - 3600_000), until: '', activation_id: params.get('activation_id') || '',
  });
  const [result, setResult] = useState(null);
  const [tail, setTail] = useState(null);
  const act = useAction();
  const query = () => ({
    lambda_id: filter.lambda_id || undefined, levels: filter.levels.join(','), q: filter.q || undefined,
    activation_id: filter.activation_id || undefined,
  });
  const search = (cursor) => act.run(async () => {
    const r = await api.searchLogs({ ...query(), limit: 100, cursor,
      since: filter.activation_id ? undefined : (filter.since ? new Date(filter.since).getTime() : undefined),
      until: filter.until ? new Date(filter.until).getTime() : undefined });
    setResult((old) => (cursor && old ? { items: old.items.concat(r.items), next_cursor: r.next_cursor } : r));
  });
  useEffect(() => { search(); }, [filter.activation_id]);
  useEffect(() => () => tail && tail.stop(), [tail]);
  const toggleTail = () => {
    if (tail) { tail.stop(); setTail(null); return; }
    const t = { lines: [] };
    const stop = api.tailLogs(query(), (line) => setTail((cur) => cur && { ...cur, lines: [line, ...cur.lines].slice(0, 500) }),
      (e) => { act.setError(e); setTail(null); });
    setTail({ ...t, stop });
  };
  const set = (k) => (e) => setFilter({ ...filter, [k]: e.target.value });
  const toggleLevel = (lvl) => setFilter({ ...filter, levels: filter.levels.includes(lvl)
    ? filter.levels.filter((l) => l !== lvl) : [...filter.levels, lvl] });
  return html`<section>
    <h1>Logs</h1>
    <form class="filters" onSubmit=${(e) => { e.preventDefault(); search(); }}>
      <label>Function <select value=${filter.lambda_id} onChange=${set('lambda_id')}>
        <option value="">All functions</option>
        ${(lambdas || []).map((l) => html`<option value=${l.id}>${l.name}</option>`)}</select></label>
      <fieldset><legend>Levels</legend>${LEVELS.map((lvl) => html`<label class="inline">
        <input type="checkbox" checked=${filter.levels.includes(lvl)} onChange=${() => toggleLevel(lvl)} />${lvl}</label>`)}</fieldset>
      <label>From <input type="datetime-local" value=${filter.since} onInput=${set('since')} /></label>
      <label>To <input type="datetime-local" value=${filter.until} onInput=${set('until')} /></label>
      <label>Text <input name="q" value=${filter.q} onInput=${set('q')} maxlength="500" /></label>
      <label>Invocation <input name="activation_id" value=${filter.activation_id} onInput=${set('activation_id')} /></label>
      <button type="submit" class="primary">Search</button>
      <button type="button" onClick=${toggleTail} aria-pressed=${!!tail}>${tail ? 'Stop live tail' : 'Live tail'}</button>
    </form>
    <${ErrorBox} error=${act.error} />
    ${tail && html`<h2>Live <span class="muted">(${tail.lines.length} lines)</span></h2>
      <ul class="log-lines" data-testid="tail">${tail.lines.map((l) => html`<${Line} line=${l} names=${names} />`)}</ul>`}
    ${result && html`<h2>Results</h2>
      <ul class="log-lines" data-testid="results">${result.items.map((l) => html`<${Line} line=${l} names=${names} />`)}</ul>
      ${!result.items.length ? html`<p class="muted">No lines match.</p>` : ''}
      ${result.next_cursor ? html`<button onClick=${() => search(result.next_cursor)}>More</button>` : ''}`}
  </section>`;
}
