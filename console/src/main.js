// Kiln's console: every page reads and writes through the public API (/api/v1) with the key
// the user signed in with, kept in this browser session only.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';

import './style.css';
import { get, session } from './api.js';
import { html, useHash } from './ui.js';
import { Jobs, JobDetail } from './pages/jobs.js';
import { Submit } from './pages/submit.js';
import { Nodes } from './pages/nodes.js';
import { Queue } from './pages/queue.js';
import { Usage } from './pages/usage.js';
import { Keys } from './pages/keys.js';

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    session.set(key.trim());
    try {
      await onSignedIn();
    } catch (err) {
      session.clear();
      setError(err.status === 401 ? 'That key is not valid (or was revoked).' : err.message);
    }
  };
  return html`<main class="signin">
    <h1>Kiln</h1>
    <form onSubmit=${submit}>
      <label>API key
        <input type="password" name="key" autocomplete="off" value=${key}
          onInput=${(e) => setKey(e.target.value)} required /></label>
      <button type="submit">Sign in</button>
      <p class="hint">The key stays in this browser tab's session and is sent only to this server.</p>
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </form>
  </main>`;
}

function App() {
  const hash = useHash();
  const [who, setWho] = useState(null);
  const [checked, setChecked] = useState(false);

  const identify = async () => {
    const account = await get('/account');
    // Admin pages appear for keys with the admin scope (GET /keys answers 403 otherwise).
    let admin = false;
    try {
      await get('/keys');
      admin = true;
    } catch (e) {
      if (e.status !== 403) throw e;
    }
    setWho({ account, admin });
  };

  useEffect(() => {
    if (!session.key()) return setChecked(true);
    identify()
      .catch(() => session.clear())
      .finally(() => setChecked(true));
  }, []);

  if (!checked) return null;
  if (!who) return html`<${SignIn} onSignedIn=${identify} />`;

  const [, page, id] = hash.split('/');
  const signOut = () => {
    session.clear();
    setWho(null);
  };
  const link = (to, label, admin = false) =>
    (!admin || who.admin) &&
    html`<a href=${`#/${to}`} class=${page === to ? 'active' : ''}>${label}</a>`;
  let body;
  if (page === 'jobs' && id) body = html`<${JobDetail} id=${id} />`;
  else if (page === 'submit') body = html`<${Submit} />`;
  else if (page === 'nodes' && who.admin) body = html`<${Nodes} />`;
  else if (page === 'queue' && who.admin) body = html`<${Queue} />`;
  else if (page === 'usage') body = html`<${Usage} />`;
  else if (page === 'keys' && who.admin) body = html`<${Keys} />`;
  else body = html`<${Jobs} />`;
  return html`<div class="shell">
    <nav>
      <strong class="brand">Kiln</strong>
      ${link('jobs', 'Jobs')} ${link('submit', 'Submit')} ${link('nodes', 'Nodes', true)}
      ${link('queue', 'Queue', true)} ${link('usage', 'Usage')} ${link('keys', 'Keys', true)}
      <span class="who" data-testid="account">${who.account.name || who.account.id}</span>
      <button class="link" onClick=${signOut}>Sign out</button>
    </nav>
    <main>${body}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
