// Small shared pieces: html (htm bound to Preact), formatting, and the hash router's hook.
import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

export function bytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i && v < 10 ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toISOString().replace('T', ' ').slice(0, 19);
}

export function duration(s) {
  if (s == null) return '—';
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function useHash() {
  const [hash, setHash] = useState(location.hash || '#/jobs');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/jobs');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

// Run `load` now and every `ms` (for pages without an event stream: nodes, queue).
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let alive = true;
    const run = () =>
      load().then(
        (data) => alive && setState({ data, error: null }),
        (error) => alive && setState((s) => ({ data: s.data, error })),
      );
    run();
    const t = setInterval(run, ms);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, deps);
  return state;
}

export function Status({ status }) {
  return html`<span class=${`status status-${status}`} data-testid="status">${status}</span>`;
}

export function Failure({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.code ? `${error.code}: ` : ''}${error.message}</p>`;
}
