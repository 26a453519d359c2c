// Queue (admin): jobs waiting by class, and the dead letters.
import { get } from '../api.js';
import { Failure, html, usePoll, when } from '../ui.js';

export function Queue() {
  const { data, error } = usePoll(() => get('/queue'), 3000);
  return html`<section>
    <h1>Queue</h1>
    <${Failure} error=${error} />
    ${data && html`
      <p class="tiles"><span class="tile"><strong data-testid="waiting">${data.waiting}</strong> waiting</span>
        <span class="tile"><strong data-testid="dead-letters">${data.dead_letters}</strong> dead letters</span></p>
      <h2>Waiting by class</h2>
      <table data-testid="classes">
        <thead><tr><th>Class</th><th>Waiting</th></tr></thead>
        <tbody>${data.classes.map((c) => html`<tr><td>${c.class}</td><td>${c.waiting}</td></tr>`)}</tbody>
      </table>
      <h2>Latest dead letters</h2>
      ${data.latest_dead_letters.length
        ? html`<table><thead><tr><th>Job</th><th>Account</th><th>Reason</th><th>Failed</th></tr></thead>
            <tbody>${data.latest_dead_letters.map((d) => html`<tr>
              <td>${d.job_id}</td><td>${d.account_id}</td><td>${d.reason}</td><td>${when(d.failed_at)}</td></tr>`)}</tbody></table>`
        : html`<p class="hint">None: every job that lost its node finished on another.</p>`}`}
  </section>`;
}
