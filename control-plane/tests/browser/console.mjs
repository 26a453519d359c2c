// The console in Debian's headless Chromium, driven by playwright-core (which never downloads a
// browser of its own): sign in, submit a real clip through the page and watch it complete over
// SSE, play the output, drain the node from the page, see a job wait in the queue and cancel
// it, resume the node, see usage, create and revoke a key. A screenshot of each page goes to
// KILN_SHOTS. Prints one JSON line of what it saw; exits non-zero (with a screenshot) on failure.
//
// Env: KILN_URL (the control plane), KILN_KEY (an admin key), KILN_CLIP (a video file),
// KILN_SHOTS (a folder), KILN_CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const base = process.env.KILN_URL;
const key = process.env.KILN_KEY;
const clip = process.env.KILN_CLIP;
const shots = process.env.KILN_SHOTS;
const seen = {};

const browser = await chromium.launch({
  executablePath: process.env.KILN_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
// Every API request the page makes, to show progress arrives over SSE and not by polling.
const requests = [];
page.on('request', (r) => requests.push(new URL(r.url()).pathname));

const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = (sel) => page.locator(sel).first().innerText();
const step = async (name, fn) => {
  try {
    await fn();
  } catch (e) {
    await shot(`failed-${name}`).catch(() => {});
    throw new Error(`${name}: ${e.message}`);
  }
};

try {
  await step('sign-in', async () => {
    await page.goto(`${base}/console/`);
    await page.getByLabel('API key').waitFor();
    await shot('01-sign-in');
    await page.getByLabel('API key').fill('not-a-key-at-all-0000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').waitFor();
    seen.bad_key = await text('[role=alert]');
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid=account]').waitFor();
    await page.locator('[data-testid=jobs]').waitFor();
    await shot('02-jobs');
  });


  // The node is drained first, so the job waits and its page is open before it starts: the
  // page must then see it start, progress and complete over its event stream.
  let node;
  const api = (method, path) =>
    fetch(`${base}/api/v1${path}`, { method, headers: { Authorization: `Bearer ${key}` } });
  const nodeState = async () => (await (await api('GET', '/nodes')).json()).nodes.find((n) => n.node_id === node).state;
  const until = async (what, want) => {
    const t0 = Date.now();
    while ((await what()) !== want) {
      if (Date.now() - t0 > 30000) throw new Error(`never ${want}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  await step('drain', async () => {
    await page.click('a[href="#/nodes"]');
    const row = page.locator('[data-testid=nodes] tbody tr').first();
    await row.waitFor();
    node = await row.getAttribute('data-node');
    seen.slots = await row.locator('[data-testid=slots]').innerText();
    seen.node_state = await row.locator('[data-testid=node-state]').innerText();
    await shot('03-nodes');
    await row.locator('[data-testid=drain]').click();
    await row.locator('[data-testid=node-state]', { hasText: 'drained' }).waitFor({ timeout: 30000 });
    await shot('04-nodes-drained');
  });

  const submit = async () => {
    await page.click('a[href="#/submit"]');
    await page.locator('input[type=file]').setInputFiles(clip);
    await page.selectOption('select[name=codec]', 'h264');
    await page.selectOption('select[name=resolution]', '240p');
    await page.getByRole('button', { name: 'Upload and submit' }).click();
    await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/, { timeout: 60000 });
    await page.locator('[data-testid=job] [data-testid=status]', { hasText: 'pending' }).waitFor();
    return page.url().split('/').pop();
  };

  let jobId;
  await step('submit', async () => {
    jobId = await submit();
    await shot('05-submitted');
    await page.click('a[href="#/queue"]');
    await page.locator('[data-testid=waiting]').waitFor();
    seen.waiting = Number(await text('[data-testid=waiting]'));
    await shot('06-queue');
  });

  await step('progress', async () => {
    requests.length = 0;
    await page.goto(`${base}/console/#/jobs/${jobId}`);
    await page.locator('[data-testid=stream]', { hasText: 'live' }).waitFor();
    await api('POST', `/nodes/${node}/resume`);
    await page.locator('[data-testid=job] [data-testid=status]', { hasText: 'completed' }).waitFor({ timeout: 180000 });
    seen.stream = await text('[data-testid=stream]');
    seen.events = await page.locator('[data-testid=events] li').allTextContents();
    seen.job_reads = requests.filter((p) => p === `/api/v1/jobs/${jobId}`).length;
    seen.job_streams = requests.filter((p) => p === `/api/v1/jobs/${jobId}/events`).length;
  });

  await step('play', async () => {
    const player = page.locator('[data-testid=player]');
    await player.waitFor();
    seen.played = await player.evaluate(async (v) => {
      v.muted = true;
      await v.play();
      const t0 = Date.now();
      while (v.currentTime < 1 && Date.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 100));
      return { time: v.currentTime, width: v.videoWidth, height: v.videoHeight, error: v.error && v.error.code };
    });
    await page.evaluate(() => document.querySelector('[data-testid=player]').pause());
    seen.encoder = await text('[data-testid=encoding]');
    await shot('07-job-completed');
  });

  await step('cancel', async () => {
    await until(nodeState, 'ready');
    await api('POST', `/nodes/${node}/drain`);
    await until(nodeState, 'drained');
    const second = await submit();
    await page.locator('[data-testid=cancel]').click();
    await page.locator('[data-testid=job] [data-testid=status]', { hasText: 'cancelled' }).waitFor({ timeout: 30000 });
    seen.cancelled = second;
    await shot('08-job-cancelled');
  });

  await step('resume', async () => {
    await page.click('a[href="#/nodes"]');
    const row = page.locator(`[data-testid=nodes] tr[data-node="${node}"]`);
    await row.locator('[data-testid=resume]').click();
    await row.locator('[data-testid=node-state]', { hasText: 'ready' }).waitFor({ timeout: 30000 });
  });

  await step('jobs-and-usage', async () => {
    await page.click('a[href="#/jobs"]');
    await page.locator(`[data-testid=jobs] tr[data-job="${seen.cancelled}"]`).waitFor();
    seen.listed = await page.locator('[data-testid=jobs] tbody tr').count();
    await shot('09-jobs-list');
    await page.click('a[href="#/usage"]');
    await page.locator('[data-testid=usage-chart]').waitFor();
    seen.usage_jobs = Number(await text('[data-testid=usage-jobs]'));
    seen.usage_bars = await page.locator('[data-testid=usage-chart] rect').count();
    await shot('10-usage');
  });

  await step('keys', async () => {
    await page.click('a[href="#/keys"]');
    await page.locator('[data-testid=key-form] input[name=name]').fill('console-made');
    await page.locator('[data-testid=key-form] input[name="scope-jobs:cancel"]').uncheck();
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.locator('[data-testid=new-key] code').waitFor();
    const made = await text('[data-testid=new-key] code');
    const before = await fetch(`${base}/api/v1/jobs`, { headers: { Authorization: `Bearer ${made}` } });
    await shot('11-keys-created');
    const row = page.locator('[data-testid=keys] tr[data-name="console-made"]');
    await row.locator('[data-testid=revoke]').click();
    await row.locator('[data-testid=revoked]', { hasText: /\d{4}-/ }).waitFor();
    const after = await fetch(`${base}/api/v1/jobs`, { headers: { Authorization: `Bearer ${made}` } });
    seen.new_key = { before: before.status, after: after.status, scopes: await row.locator('td').nth(3).innerText() };
    await shot('12-keys-revoked');
  });

  seen.page_errors = errors;
  console.log(JSON.stringify(seen));
  await browser.close();
} catch (e) {
  console.error(e.message);
  console.error(`page errors: ${JSON.stringify(errors)}`);
  await browser.close();
  process.exit(1);
}
