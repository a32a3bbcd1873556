// Small shared widgets: the error box, a loader hook, time and duration formats.
import { h } from 'preact';
import { useEffect, useState, useCallback } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

// An API error shown in place, with its message and code.
export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${error.message}${error.code ? html` <code>${error.code}</code>` : ''}</div>`;
}

// Load data with fn(); returns [data, error, reload].
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: null, error: null });
  const load = useCallback(() => {
    fn().then((data) => setState({ data, error: null }), (error) => setState({ data: null, error }));
  }, deps);
  useEffect(load, [load]);
  return [state.data, state.error, load];
}

// Run an action, keeping its error and busy state for the button that started it.
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true); setError(null);
    try { return await fn(); } catch (e) { setError(e); return undefined; } finally { setBusy(false); }
  };
  return { busy, error, run, setError };
}

export const localTime = (ms) => (ms ? new Date(ms).toLocaleString() : '—');
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return ms + ' ms';
  return (ms / 1000).toFixed(1) + ' s';
}

export function StateBadge({ state }) {
  return html`<span class=${'badge state-' + String(state || 'none').toLowerCase()}>${state || '—'}</span>`;
}

// Parse JSON text from a form field; returns {ok, value} or {ok: false, message}.
export function parseJson(text, label) {
  if (!text.trim()) return { ok: true, value: null };
  try { return { ok: true, value: JSON.parse(text) }; } catch (e) {
    return { ok: false, message: label + ' is not valid JSON: ' + e.message };
  }
}
