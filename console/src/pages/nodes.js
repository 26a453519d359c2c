// Nodes (admin): each node's state, GPUs and engines, classes, slots, load and heartbeat,
// read every few seconds; drain a node (it finishes its jobs and takes no more) or resume it.
import { useState } from 'preact/hooks';

import { api, get } from '../api.js';
import { Failure, html, usePoll } from '../ui.js';

function Gpus({ node }) {
  const gpus = node.capabilities?.gpus || [];
  if (!gpus.length) return html`<span class="hint">none: CPU encoders</span>`;
  return gpus.map((g) => {
    const now = node.gpus?.find((s) => s.index === g.index);
    const e = g.engines || {};
    return html`<div class="gpu" data-testid="gpu">
      <strong>${g.index}: ${g.name}</strong>
      <span>NVENC ${e.nvenc ?? 0} · NVDEC ${e.nvdec ?? 0}</span>
      ${now && html`<span class=${`status status-${now.health}`}>${now.health}</span>
        <span>${now.jobs} jobs · ${(now.utilisation || []).map((u) => `${u.engine} ${u.percent}%`).join(' · ')}</span>`}
    </div>`;
  });
}

export function Nodes() {
  const [tick, setTick] = useState(0);
  const [error, setError] = useState(null);
  const { data, error: loadError } = usePoll(() => get('/nodes'), 3000, [tick]);

  const command = async (node, what) => {
    setError(null);
    try {
      await api('POST', `/nodes/${encodeURIComponent(node)}/${what}`);
      setTick(tick + 1);
    } catch (e) {
      setError(e);
    }
  };

  return html`<section>
    <h1>Nodes</h1>
    <${Failure} error=${error || loadError} />
    <table data-testid="nodes">
      <thead><tr><th>Node</th><th>State</th><th>GPUs and engines</th><th>Classes</th><th>Slots busy / total</th>
        <th>Load</th><th>Jobs done</th><th>Last heartbeat</th><th></th></tr></thead>
      <tbody>
        ${(data?.nodes || []).map((n) => html`<tr key=${n.node_id} data-node=${n.node_id}>
          <td><strong>${n.node_id}</strong><br /><span class="hint">${n.hostname} · ${n.version}</span></td>
          <td><span class=${`status status-${n.state}`} data-testid="node-state">${n.state}</span></td>
          <td><${Gpus} node=${n} /></td>
          <td class="classes">${n.classes.join(', ')}</td>
          <td data-testid="slots">${n.busy} / ${n.slots}</td>
          <td>${n.load1.toFixed(2)}</td>
          <td>${n.jobs_done}</td>
          <td>${(n.last_heartbeat_age_ms / 1000).toFixed(1)} s ago</td>
          <td>${n.state === 'draining' || n.state === 'drained'
            ? html`<button onClick=${() => command(n.node_id, 'resume')} data-testid="resume">Resume</button>`
            : html`<button class="danger" onClick=${() => command(n.node_id, 'drain')} data-testid="drain">Drain</button>`}</td>
        </tr>`)}
      </tbody>
    </table>
    ${data && !data.nodes.length && html`<p class="hint">No node has registered.</p>`}
  </section>`;
}
