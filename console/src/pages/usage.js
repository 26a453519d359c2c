// Usage: the account's jobs, bytes, encoded minutes and credits over the last 30 days, with
// a chart of jobs per day (completed, failed, other) drawn as SVG.
import { get } from '../api.js';
import { Failure, bytes, html, usePoll } from '../ui.js';

const DAY = 86400000;

function day(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function Chart({ days, from }) {
  const n = 30;
  const byDate = Object.fromEntries(days.map((d) => [d.date, d]));
  const series = Array.from({ length: n }, (_, i) => {
    const date = day(from + i * DAY);
    return { date, ...(byDate[date] || { jobs: 0, completed: 0, failed: 0 }) };
  });
  const max = Math.max(1, ...series.map((d) => d.jobs));
  const [w, h, bw] = [n * 24, 160, 18];
  const y = (v) => (v / max) * (h - 20);
  return html`<svg class="chart" viewBox=${`0 0 ${w} ${h + 30}`} role="img" aria-label="Jobs per day" data-testid="usage-chart">
    ${series.map((d, i) => {
      const x = i * 24 + 3;
      const other = d.jobs - d.completed - d.failed;
      const parts = [['completed', d.completed], ['failed', d.failed], ['other', other]];
      let top = h;
      return html`<g>
        <title>${d.date}: ${d.jobs} jobs (${d.completed} completed, ${d.failed} failed)</title>
        ${parts.map(([cls, v]) => {
          if (!v) return null;
          top -= y(v);
          return html`<rect class=${`bar-${cls}`} x=${x} y=${top} width=${bw} height=${y(v)} />`;
        })}
        ${i % 5 === 0 && html`<text x=${x} y=${h + 16}>${d.date.slice(5)}</text>`}
      </g>`;
    })}
    <text x="0" y="12">${max} jobs</text>
  </svg>`;
}

export function Usage() {
  const today = Math.floor(Date.now() / DAY) * DAY;
  const from = today - 29 * DAY;
  const { data, error } = usePoll(() => get30(from, today + DAY), 10000);
  return html`<section>
    <h1>Usage</h1>
    <p class="hint">The last 30 days (UTC), jobs counted by the day they were submitted.</p>
    <${Failure} error=${error} />
    ${data && html`
      <p class="tiles">
        <span class="tile"><strong data-testid="usage-jobs">${data.jobs.total}</strong> jobs</span>
        <span class="tile"><strong>${data.jobs.completed}</strong> completed</span>
        <span class="tile"><strong>${data.jobs.failed}</strong> failed</span>
        <span class="tile"><strong>${bytes(data.input_bytes)}</strong> in</span>
        <span class="tile"><strong>${bytes(data.output_bytes)}</strong> out</span>
        <span class="tile"><strong>${data.encoded_minutes}</strong> encoded minutes</span>
        <span class="tile"><strong>${data.credits_used}</strong> credits${data.credits_remaining != null ? ` (${data.credits_remaining} left)` : ''}</span>
      </p>
      <${Chart} days=${data.days} from=${from} />
      <p class="legend"><span class="bar-completed">■</span> completed <span class="bar-failed">■</span> failed <span class="bar-other">■</span> other</p>`}
  </section>`;
}

function get30(from, to) {
  return get(`/usage?from=${day(from)}&to=${day(to)}`);
}
