// The public API as the console uses it: the key from this browser session, JSON errors as
// exceptions with the API's stable code, uploads with progress, and Server-Sent Events read
// over fetch (EventSource cannot send the Authorization header).

const KEY = 'kiln.key';

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (k) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = session.key();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function fail(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const err = body && (body.error || body);
  throw new ApiError(res.status, err && err.code, (err && err.message) || res.statusText);
}

export async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`/api/v1${path}`, init);
  if (!res.ok) await fail(res);
  if (res.status === 204) return null;
  return res.json();
}

export const get = (path) => api('GET', path);

// POST a file as multipart `file` to /uploads, reporting progress (0–1).
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1/uploads');
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const err = body && (body.error || body);
      reject(new ApiError(xhr.status, err && err.code, (err && err.message) || xhr.statusText));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was interrupted'));
    const form = new FormData();
    form.append('file', file);
    xhr.send(form);
  });
}

// Parse one SSE block (the lines between blank lines).
export function parseEvent(block) {
  const ev = { event: 'message', data: [], id: null };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const at = line.indexOf(':');
    const field = at < 0 ? line : line.slice(0, at);
    let value = at < 0 ? '' : line.slice(at + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data.push(value);
    else if (field === 'id') ev.id = value;
  }
  if (!ev.data.length) return null;
  return { ...ev, data: ev.data.join('\n') };
}

const FINAL = new Set(['job.completed', 'job.failed', 'job.cancelled']);
const LIVE = new Set(['pending', 'processing']);

// Follow an event stream, reconnecting with Last-Event-ID until `stop()` (a job's stream
// also stops after the job's final event). `onEvent({event, id, job})`; `onState(text)`.
export function follow(path, onEvent, onState = () => {}, { ends = false } = {}) {
  const abort = new AbortController();
  let last = null;
  let done = false;
  (async () => {
    while (!done) {
      try {
        const h = headers({ accept: 'text/event-stream' });
        if (last) h['Last-Event-ID'] = last;
        const res = await fetch(`/api/v1${path}`, { headers: h, signal: abort.signal });
        if (!res.ok) {
          onState(`stream refused: HTTP ${res.status}`);
          if (res.status < 500) return;
          throw new Error(`HTTP ${res.status}`);
        }
        onState('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          buf += value.replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const ev = parseEvent(buf.slice(0, i));
            buf = buf.slice(i + 2);
            if (!ev) continue;
            if (ev.id) last = ev.id;
            const job = JSON.parse(ev.data);
            onEvent({ event: ev.event, id: ev.id, job });
            if (ends && (FINAL.has(ev.event) || (ev.event === 'job.snapshot' && !LIVE.has(job.status)))) {
              done = true;
            }
          }
        }
        if (done) break;
      } catch (e) {
        if (abort.signal.aborted) return;
      }
      if (done) break;
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, 1500));
    }
    onState('ended');
  })();
  return () => {
    done = true;
    abort.abort();
  };
}
