// Submit: upload a file (progress bar), choose what to make of it, and go to the job's page.
import { useState } from 'preact/hooks';

import { api, upload } from '../api.js';
import { Failure, html } from '../ui.js';

const VIDEO = { codec: 'h264', method: 'crf', quality: 23, bitrate: 2000, target_size_mb: 10, resolution: '' };
const IMAGE = { format: 'webp', width: '', height: '', quality: 80 };

function isImage(file) {
  return !!file && (file.type.startsWith('image/') || /\.(jpe?g|png|webp|avif|gif|tiff?|heic|heif|bmp)$/i.test(file.name));
}

// The output object POST /jobs takes, from the form.
function output(kind, v, img) {
  if (kind === 'image') {
    const o = { type: 'image', format: img.format, quality: Number(img.quality) };
    if (img.width) o.width = Number(img.width);
    if (img.height) o.height = Number(img.height);
    return o;
  }
  const o = { type: 'video', codec: v.codec, method: v.method };
  if (v.method === 'crf') o.quality = Number(v.quality);
  if (v.method === 'bitrate') o.bitrate = Number(v.bitrate);
  if (v.method === 'size') o.target_size_mb = Number(v.target_size_mb);
  if (v.resolution) o.resolution = v.resolution;
  return o;
}

export function Submit() {
  const [file, setFile] = useState(null);
  const [kind, setKind] = useState('video');
  const [video, setVideo] = useState(VIDEO);
  const [image, setImage] = useState(IMAGE);
  const [sent, setSent] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const pick = (e) => {
    const f = e.target.files[0] || null;
    setFile(f);
    if (f) setKind(isImage(f) ? 'image' : 'video');
  };
  const setV = (k) => (e) => setVideo({ ...video, [k]: e.target.value });
  const setI = (k) => (e) => setImage({ ...image, [k]: e.target.value });

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      setSent(0);
      const up = await upload(file, setSent);
      setSent(1);
      const res = await api('POST', '/jobs', {
        source: { upload_id: up.upload_id },
        outputs: [output(kind, video, image)],
      });
      location.hash = `#/jobs/${res.jobs[0].id}`;
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return html`<section>
    <h1>Submit a job</h1>
    <form onSubmit=${submit} class="form" data-testid="submit-form">
      <label>File <input type="file" name="file" onChange=${pick} required /></label>
      <label>Kind
        <select name="kind" value=${kind} onChange=${(e) => setKind(e.target.value)}>
          <option value="video">Video</option><option value="image">Image</option>
        </select></label>
      ${kind === 'video'
        ? html`<fieldset><legend>Video</legend>
            <label>Codec <select name="codec" value=${video.codec} onChange=${setV('codec')}>
              <option value="h264">H.264</option><option value="h265">H.265</option><option value="av1">AV1</option>
            </select></label>
            <label>Quality by <select name="method" value=${video.method} onChange=${setV('method')}>
              <option value="crf">CRF</option><option value="bitrate">bitrate</option><option value="size">target size</option>
            </select></label>
            ${video.method === 'crf' && html`<label>CRF (18–51) <input type="number" name="quality" min="18" max="51" value=${video.quality} onInput=${setV('quality')} /></label>`}
            ${video.method === 'bitrate' && html`<label>Bitrate (kbps) <input type="number" name="bitrate" min="50" value=${video.bitrate} onInput=${setV('bitrate')} /></label>`}
            ${video.method === 'size' && html`<label>Target size (MB) <input type="number" name="target_size_mb" min="0.1" step="0.1" value=${video.target_size_mb} onInput=${setV('target_size_mb')} /></label>`}
            <label>Resolution <select name="resolution" value=${video.resolution} onChange=${setV('resolution')}>
              <option value="">as the source</option><option>2160p</option><option>1440p</option><option>1080p</option>
              <option>720p</option><option>480p</option><option>360p</option><option>240p</option>
            </select></label>
          </fieldset>`
        : html`<fieldset><legend>Image</legend>
            <label>Format <select name="format" value=${image.format} onChange=${setI('format')}>
              ${['webp', 'avif', 'jpg', 'png', 'gif', 'tiff'].map((f) => html`<option>${f}</option>`)}
            </select></label>
            <label>Width <input type="number" name="width" min="1" value=${image.width} onInput=${setI('width')} /></label>
            <label>Height <input type="number" name="height" min="1" value=${image.height} onInput=${setI('height')} /></label>
            <label>Quality (1–100) <input type="number" name="image_quality" min="1" max="100" value=${image.quality} onInput=${setI('quality')} /></label>
          </fieldset>`}
      ${sent != null && html`<label>Upload <progress max="1" value=${sent} data-testid="upload-progress"></progress> ${Math.round(sent * 100)}%</label>`}
      <button type="submit" disabled=${busy || !file}>Upload and submit</button>
      <${Failure} error=${error} />
    </form>
  </section>`;
}
