// Jobs: the account's list (filters, cursor pages, updated live from GET /events) and one
// job's page (live from GET /jobs/{id}/events: progress, fps, ETA; then the result, played
// or shown in the page).
import { useEffect, useState } from 'preact/hooks';

import { api, follow, get } from '../api.js';
import { Failure, Status, bytes, duration, html, when } from '../ui.js';

const STATUSES = ['', 'pending', 'processing', 'completed', 'failed', 'cancelled'];

function Progress({ job }) {
  if (job.status !== 'processing' && job.status !== 'pending') return null;
  return html`<span class="progress">
    <progress max="100" value=${job.progress || 0} data-testid="progress"></progress>
    ${(job.progress || 0).toFixed(0)}%</span>`;
}

export function Jobs() {
  const [status, setStatus] = useState('');
  const [pages, setPages] = useState([null]); // cursors of the pages seen, for "newer"
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const cursor = pages[pages.length - 1];

  useEffect(() => {
    const q = new URLSearchParams({ limit: '20' });
    if (status) q.set('status', status);
    if (cursor) q.set('cursor', cursor);
    get(`/jobs?${q}`).then(setPage, setError);
  }, [status, cursor]);

  // Live: rows on this page change in place; new jobs appear on the first page.
  useEffect(
    () =>
      follow('/events', ({ event, job }) =>
        setPage((p) => {
          if (!p) return p;
          const at = p.jobs.findIndex((j) => j.id === job.id);
          if (at >= 0) {
            const jobs = p.jobs.slice();
            jobs[at] = { ...jobs[at], ...job };
            return { ...p, jobs };
          }
          if (event === 'job.created' && !cursor && (!status || status === job.status)) {
            return { ...p, jobs: [job, ...p.jobs].slice(0, 20) };
          }
          return p;
        }),
      ),
    [status, cursor],
  );

  return html`<section>
    <header class="row">
      <h1>Jobs</h1>
      <label>Status
        <select name="status" value=${status}
          onChange=${(e) => { setStatus(e.target.value); setPages([null]); }}>
          ${STATUSES.map((s) => html`<option value=${s}>${s || 'any'}</option>`)}
        </select></label>
      <a class="button" href="#/submit">Submit a job</a>
    </header>
    <${Failure} error=${error} />
    <table data-testid="jobs">
      <thead><tr><th>Job</th><th>Kind</th><th>Status</th><th>Progress</th><th>Input</th><th>Output</th><th>Created</th></tr></thead>
      <tbody>
        ${(page?.jobs || []).map((j) => html`<tr key=${j.id} data-job=${j.id}>
          <td><a href=${`#/jobs/${j.id}`}>${j.input?.filename || j.id.slice(0, 8)}</a></td>
          <td>${j.kind}${j.codec ? ` · ${j.codec}` : ''} · ${j.format}</td>
          <td><${Status} status=${j.status} /></td>
          <td><${Progress} job=${j} /></td>
          <td>${bytes(j.input_size)}</td>
          <td>${bytes(j.output_size)}</td>
          <td>${when(j.created_at)}</td>
        </tr>`)}
      </tbody>
    </table>
    ${page && !page.jobs.length && html`<p class="hint">No jobs${status ? ` ${status}` : ''} yet.</p>`}
    <footer class="row">
      <button disabled=${pages.length < 2} onClick=${() => setPages(pages.slice(0, -1))}>Newer</button>
      <button disabled=${!page?.has_more} onClick=${() => setPages([...pages, page.next_cursor])}>Older</button>
    </footer>
  </section>`;
}

function Preview({ job }) {
  const url = job.signed_download_url;
  if (job.status !== 'completed' || !url) return null;
  const video = ['mp4', 'webm', 'mov', 'mkv'].includes(job.format);
  return html`<div class="preview">
    ${video
      ? html`<video controls preload="metadata" src=${url} data-testid="player"></video>`
      : job.kind === 'image'
        ? html`<img src=${url} alt="output" data-testid="image" />`
        : null}
    <p><a class="button" href=${url} download data-testid="download">Download ${job.output?.filename || ''}</a>
      ${job.expires_at && html` <span class="hint">until ${when(job.expires_at)}</span>`}</p>
  </div>`;
}

function Field({ name, children }) {
  return html`<div class="field"><dt>${name}</dt><dd>${children}</dd></div>`;
}

export function JobDetail({ id }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  const [stream, setStream] = useState('connecting');
  const [events, setEvents] = useState([]);

  const reload = () => get(`/jobs/${id}`).then(setJob, setError);
  useEffect(() => {
    reload();
    return follow(
      `/jobs/${id}/events`,
      ({ event, job: changed }) => {
        setEvents((e) => [...e, event]);
        setJob((j) => ({ ...(j || {}), ...changed }));
        // The final document carries webhook deliveries and the result: read it whole.
        if (['job.completed', 'job.failed', 'job.cancelled'].includes(event)) reload();
      },
      setStream,
      { ends: true },
    );
  }, [id]);

  const cancel = async () => {
    try {
      setJob(await api('DELETE', `/jobs/${id}`));
    } catch (e) {
      setError(e);
    }
  };

  if (!job) return html`<${Failure} error=${error} />`;
  const enc = job.encoding;
  return html`<section data-testid="job" data-job=${job.id}>
    <header class="row">
      <h1>${job.input?.filename || 'Job'} <${Status} status=${job.status} /></h1>
      ${['pending', 'processing'].includes(job.status) &&
      html`<button class="danger" onClick=${cancel} data-testid="cancel">Cancel</button>`}
      <span class="hint" data-testid="stream">events: ${stream}</span>
    </header>
    <ol hidden data-testid="events">${events.map((e) => html`<li>${e}</li>`)}</ol>
    <${Failure} error=${error} />
    <${Progress} job=${job} />
    <dl class="grid">
      <${Field} name="Job id">${job.id}<//>
      <${Field} name="Kind">${job.kind} → ${job.format}<//>
      ${job.codec && html`<${Field} name="Codec">${job.codec} (${job.method || 'crf'}${job.quality != null ? ` ${job.quality}` : ''})<//>`}
      <${Field} name="Frames per second">${job.fps != null ? job.fps.toFixed(1) : '—'}<//>
      <${Field} name="ETA">${duration(job.eta_seconds)}<//>
      <${Field} name="Input">${bytes(job.input_size)}<//>
      <${Field} name="Output">${bytes(job.output_size)}${job.compression_ratio ? ` (${job.compression_ratio.toFixed(1)}× smaller)` : ''}<//>
      <${Field} name="Attempts">${job.attempts}<//>
      <${Field} name="Node">${job.node_id || '—'}<//>
      <${Field} name="Created">${when(job.created_at)}<//>
      <${Field} name="Completed">${when(job.completed_at)}<//>
      ${job.waiting_reason && html`<${Field} name="Waiting">${job.waiting_reason}<//>`}
      ${job.error && html`<${Field} name="Error">${job.error.code}: ${job.error.message}<//>`}
    </dl>
    ${enc && html`<h2>Encoding</h2>
      <dl class="grid" data-testid="encoding">
        <${Field} name="Encoder">${enc.encoder}<//>
        <${Field} name="Decoder">${enc.decoder || '—'}<//>
        <${Field} name="Hardware">${enc.hwaccel || 'CPU'}${enc.gpu != null ? ` (GPU ${enc.gpu})` : ''}<//>
        <${Field} name="Passes">${enc.passes ?? '—'}<//>
        ${enc.hardware_fallback && html`<${Field} name="Fallback">${enc.hardware_fallback}<//>`}
      </dl>`}
    ${job.vmaf && html`<h2>VMAF</h2>
      <dl class="grid" data-testid="vmaf">
        ${Object.entries(job.vmaf).map(([k, v]) => html`<${Field} name=${k}>${typeof v === 'number' ? v.toFixed(2) : JSON.stringify(v)}<//>`)}
      </dl>`}
    <${Preview} job=${job} />
    ${job.webhook && html`<h2>Webhook deliveries</h2>
      <p class="hint">${job.webhook.url}</p>
      <table data-testid="webhooks">
        <thead><tr><th>Event</th><th>Status</th><th>Attempts</th><th>Last answer</th></tr></thead>
        <tbody>${job.webhook.deliveries.map((d) => html`<tr>
          <td>${d.event}</td><td>${d.status}</td><td>${d.attempts}</td><td>${d.last_status_code ?? d.last_error ?? "—"}</td></tr>`)}
        </tbody>
      </table>`}
  </section>`;
}
