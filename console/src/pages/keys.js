// Keys (admin): every key (never the key itself), create one with scopes (shown once), revoke.
import { useState } from 'preact/hooks';

import { api, get } from '../api.js';
import { Failure, html, usePoll, when } from '../ui.js';

const SCOPES = ['jobs:create', 'jobs:read', 'jobs:cancel', 'usage:read', 'credentials:manage', 'webhooks:manage', 'admin'];

export function Keys() {
  const [tick, setTick] = useState(0);
  const { data, error: loadError } = usePoll(() => get('/keys'), 15000, [tick]);
  const [name, setName] = useState('');
  const [account, setAccount] = useState('');
  const [scopes, setScopes] = useState(['jobs:create', 'jobs:read', 'jobs:cancel', 'usage:read']);
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);

  const toggle = (s) => setScopes(scopes.includes(s) ? scopes.filter((x) => x !== s) : [...scopes, s]);
  const create = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { name, scopes };
      if (account.trim()) body.account_id = account.trim();
      else body.account_name = name;
      setCreated(await api('POST', '/keys', body));
      setName('');
      setTick(tick + 1);
    } catch (err) {
      setError(err);
    }
  };
  const revoke = async (id) => {
    setError(null);
    try {
      await api('DELETE', `/keys/${id}`);
      setTick(tick + 1);
    } catch (err) {
      setError(err);
    }
  };

  return html`<section>
    <h1>API keys</h1>
    <form class="form" onSubmit=${create} data-testid="key-form">
      <label>Name <input name="name" value=${name} onInput=${(e) => setName(e.target.value)} required /></label>
      <label>Account id <input name="account_id" value=${account} placeholder="empty: a new account of that name"
        onInput=${(e) => setAccount(e.target.value)} /></label>
      <fieldset><legend>Scopes</legend>
        ${SCOPES.map((s) => html`<label class="check"><input type="checkbox" name=${`scope-${s}`} checked=${scopes.includes(s)}
          onChange=${() => toggle(s)} /> ${s}</label>`)}
      </fieldset>
      <button type="submit">Create key</button>
    </form>
    ${created && html`<p class="notice" data-testid="new-key">New key for ${created.name}: <code>${created.key}</code>
      <br /><span class="hint">Shown once: copy it now.</span></p>`}
    <${Failure} error=${error || loadError} />
    <table data-testid="keys">
      <thead><tr><th>Name</th><th>Prefix</th><th>Account</th><th>Scopes</th><th>Created</th><th>Revoked</th><th></th></tr></thead>
      <tbody>${(data?.keys || []).map((k) => html`<tr key=${k.id} data-key=${k.id} data-name=${k.name}>
        <td>${k.name}</td><td><code>${k.prefix}…</code></td><td>${k.account_id}</td><td>${k.scopes.join(', ')}</td>
        <td>${when(k.created_at)}</td><td data-testid="revoked">${k.revoked_at ? when(k.revoked_at) : '—'}</td>
        <td>${!k.revoked_at && html`<button class="danger" onClick=${() => revoke(k.id)} data-testid="revoke">Revoke</button>`}</td>
      </tr>`)}</tbody>
    </table>
  </section>`;
}
