// The console's shell: sign-in, navigation and the hash router.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import * as api from './api.js';
import { html, ErrorBox } from './ui.js';
import { Home } from './home.js';
import { Functions } from './functions.js';
import { Editor } from './editor.js';
import { Deployments } from './deployments.js';
import { Schedules } from './schedules.js';
import { Logs } from './logs.js';
import { Settings } from './settings.js';
import './style.css';
import { SECTIONS, parseRoute } from './route.js';


function SignIn({ onDone }) {
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    api.signIn(String(form.get('account')).trim(), String(form.get('key')).trim());
    try {
      await api.account();
      onDone();
    } catch (err) {
      api.signOut();
      setError(err);
    }
  };
  return html`<main class="signin">
    <h1>fnbus console</h1>
    <form onSubmit=${submit}>
      <label>Account id <input name="account" required autocomplete="username" /></label>
      <label>API key <input name="key" type="password" required autocomplete="current-password" /></label>
      <p class="hint">The key is kept for this browser tab only (sessionStorage).</p>
      <button type="submit">Sign in</button>
      <${ErrorBox} error=${error} />
    </form>
  </main>`;
}

function Page({ route }) {
  switch (route.page) {
    case 'functions':
      return route.arg && route.arg !== 'new' ? html`<${Editor} id=${route.arg} />` : html`<${Functions} wizard=${route.arg === 'new'} />`;
    case 'deployments': return html`<${Deployments} />`;
    case 'schedules': return html`<${Schedules} params=${route.params} />`;
    case 'logs': return html`<${Logs} params=${route.params} />`;
    case 'settings': return html`<${Settings} tab=${route.arg || 'domains'} />`;
    default: return html`<${Home} />`;
  }
}

function App() {
  const [signedIn, setSignedIn] = useState(!!api.auth());
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  if (!signedIn) return html`<${SignIn} onDone=${() => setSignedIn(true)} />`;
  const out = () => { api.signOut(); setSignedIn(false); };
  return html`<div class="shell">
    <nav aria-label="Sections">
      <span class="brand">fnbus</span>
      ${SECTIONS.map(([id, label]) => html`<a href=${'#' + id} aria-current=${route.page === id ? 'page' : undefined}>${label}</a>`)}
      <span class="who">${api.auth().account}</span>
      <button class="link" onClick=${out}>Sign out</button>
    </nav>
    <main id="page"><${Page} route=${route} key=${route.page + '/' + route.arg + '?' + route.params} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
