/**
 * Cluster tier: the web console in a real browser and the metrics of a real cluster.
 *
 * A `dispatch local` pg-ha cluster (3 dispatchers, 3 etcd, 3 Patroni/PostgreSQL, 1 HAProxy) is driven by
 * Debian's headless Chromium through playwright-core: it trusts the dispatcher's self-signed certificate
 * only by its pinned public key (--ignore-certificate-errors-spki-list; another dispatcher's certificate
 * is refused), logs in through the console's form (a wrong password first), sees every process ready,
 * opens the firewall and log views, starts a rolling restart through the confirmation step and watches its
 * live event stream until it succeeds; the audit view then shows who ran it and its outcome. Last, it shuts
 * the cluster down through the confirmation step that wants the cluster's name typed.
 * Then every metric name the Grafana dashboard (docs/grafana-dashboard.json) queries must have samples in
 * a real scrape of GET /metrics.
 *
 * Screenshots go to $CONSOLE_SCREENSHOT_DIR (the README's come from a run with it set to docs/), else to
 * a temp dir that is removed. Needs root, the pg-ha Debian packages, chromium and the cluster-dispatcher user.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { REPO_ROOT } from '../helpers/daemon.js';
import { startLocalCluster, type LocalCluster } from '../helpers/local-cluster.js';

const CHROMIUM = '/usr/bin/chromium';
const PROCESSES = 7; // 3 agents, 3 DB servers, 1 coordinator
/** Rows: every plan process, and the coordinator's PgBouncer companion right under it. */
const ROWS = PROCESSES + 1;

let cluster: LocalCluster | undefined;
let browser: BrowserContext | undefined;
const profile = mkdtempSync(join(tmpdir(), 'cd-chromium-'));
const shotDir = process.env.CONSOLE_SCREENSHOT_DIR ?? mkdtempSync(join(tmpdir(), 'cd-shots-'));

after(async () => {
  await browser?.close();
  rmSync(profile, { recursive: true, force: true });
  if (!process.env.CONSOLE_SCREENSHOT_DIR) rmSync(shotDir, { recursive: true, force: true });
  if (cluster) assert.deepEqual(await cluster.destroy(), [], 'nothing of the cluster was left running');
});

/** base64 SHA-256 of the certificate's SubjectPublicKeyInfo: Chromium's pin format. */
function spkiPin(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
}

/** An authenticated request to the first dispatcher (certificate verified against its own PEM). */
function call(c: LocalCluster, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // The path goes as given (a URL string would be percent-encoded), so a test can plant raw markup.
    const { hostname, port } = new URL(c.endpoint);
    const req = httpsRequest({ host: hostname, port: Number(port), path, method, ca: c.cert, auth: `operator:${c.password}`, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function scrape(c: LocalCluster): Promise<string> {
  const r = await call(c, 'GET', '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status} ${r.body}`);
  return r.body;
}

/** Every cluster_dispatcher_* name in the dashboard's queries. */
function dashboardMetricNames(): string[] {
  const dash = JSON.parse(readFileSync(join(REPO_ROOT, 'docs', 'grafana-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  const names = new Set<string>();
  for (const p of dash.panels) for (const t of p.targets ?? []) for (const m of t.expr.matchAll(/\bcluster_dispatcher_[a-z0-9_]+/g)) names.add(m[0]);
  return [...names].sort();
}

const readyRows = (page: Page) => page.locator('#process-table tbody tr[data-state="ready"]');

test('the console in headless Chromium: log in, see every process, rolling restart to the end, shut down; the dashboard metrics exist', { timeout: 600_000 }, async () => {
  cluster = await startLocalCluster();
  const c = cluster;
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--ignore-certificate-errors-spki-list=${spkiPin(c.cert)}`],
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const cspViolations: string[] = [];
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });

  // The pin is what makes the certificate acceptable: dispatcher 2's own (unpinned) certificate is refused.
  // (In a page of its own: Chromium's error page would race the next navigation of the same page.)
  const probe = await browser.newPage();
  await assert.rejects(probe.goto(`https://127.0.0.1:${c.basePort + 1}/ui/`), /ERR_CERT/);
  await probe.close();

  await page.goto(`${c.endpoint}/ui/`);
  await page.fill('#login-user', 'operator');
  await page.fill('#login-password', 'not-the-password');
  await page.click('#login-submit');
  await page.waitForFunction(() => /Wrong user name or password/.test(document.getElementById('login-error')!.textContent ?? ''));
  assert.equal(await page.isVisible('#app'), false, 'nothing is shown without a valid login');

  await page.fill('#login-password', c.password);
  await page.click('#login-submit');
  await readyRows(page).nth(ROWS - 1).waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('#process-table tbody tr').count(), ROWS);
  const ids = (await page.locator('#process-table tbody tr:not([data-companion-of])').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-process')))).sort();
  assert.deepEqual(ids, ['agent-1', 'agent-2', 'agent-3', 'coordinator-1', 'dbserver-1', 'dbserver-2', 'dbserver-3']);
  // The coordinator's PgBouncer shows right under it, with its own state (ready: every row above is).
  const order = await page.locator('#process-table tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-process')));
  assert.equal(order[order.indexOf('coordinator-1') + 1], 'coordinator-1.pooler');
  assert.equal(await page.locator('#process-table tbody tr[data-companion-of="coordinator-1"]').getAttribute('data-state'), 'ready');
  // Leader and lag come from GET /v1/cluster/health.
  await page.waitForFunction(() => /^agent-\d$/.test(document.querySelector('[data-fact="Agency leader"]')?.textContent ?? ''), null, { timeout: 20_000 });
  await page.waitForFunction(() => /^dbserver-\d$/.test(document.querySelector('[data-fact="DB leader"]')?.textContent ?? ''), null, { timeout: 20_000 });
  await page.waitForFunction(() => document.querySelectorAll('#process-table tbody tr td:last-child').length > 0 && [...document.querySelectorAll('#process-table tbody tr td:last-child')].some((td) => /lag \d+ B/.test(td.textContent ?? '')), null, { timeout: 20_000 });
  await page.screenshot({ path: join(shotDir, 'console-cluster.png'), fullPage: true });

  // Firewall matrix: the dispatcher ports plus every process port, with who may reach each; guard per host.
  await page.click('#nav button[data-view="firewall"]');
  await page.locator('#guard-table tbody tr').nth(2).waitFor();
  assert.equal(await page.locator('#firewall-matrix tbody tr[data-port="local-1/dispatcher"]').count(), 1);
  const pgPort = page.locator('#firewall-matrix tbody tr[data-port="dbserver-1/postgres"] td');
  assert.equal(await pgPort.nth(3).textContent(), 'cluster', 'PostgreSQL itself is reachable from cluster hosts only');
  assert.equal(await pgPort.nth(6).textContent(), 'no');
  const coordinator = page.locator('#firewall-matrix tbody tr[data-port="coordinator-1/client"] td');
  assert.equal(await coordinator.nth(6).textContent(), 'yes: 0.0.0.0/0, ::/0', 'the client port is open to the plan\'s client sources');
  const dispatcherPort = page.locator('#firewall-matrix tbody tr[data-port="local-1/dispatcher"] td');
  assert.equal(await dispatcherPort.nth(5).textContent(), 'no', 'no operator sources listed: only cluster hosts reach the dispatcher');
  await page.screenshot({ path: join(shotDir, 'console-firewall.png'), fullPage: true });

  // Process logs.
  await page.click('#nav button[data-view="logs"]');
  await page.waitForFunction(() => document.querySelectorAll('#log-process option').length === 7);
  await page.selectOption('#log-process', 'dbserver-1');
  await page.click('#log-form button[type="submit"]');
  await page.waitForFunction(() => (document.getElementById('log-output')!.textContent ?? '').length > 0, null, { timeout: 15_000 });

  // A rolling restart, through its confirmation step, watched live until it ends.
  await page.click('#nav button[data-view="actions"]');
  await page.waitForSelector('#action-restart:not([disabled])');
  await page.click('#action-restart');
  await page.waitForSelector('#confirm:not([hidden])');
  assert.match((await page.textContent('#confirm-text')) ?? '', /Rolling restart of cluster local/);
  await page.screenshot({ path: join(shotDir, 'console-confirm.png') });
  const t0 = Date.now();
  await page.click('#confirm-yes');
  await page.waitForSelector('#view-operations:not([hidden])');
  await page.waitForSelector('#op-events li', { timeout: 30_000 });
  await page.waitForSelector('#op-state[data-state="succeeded"], #op-state[data-state="failed"]', { timeout: 300_000 });
  const events = await page.locator('#op-events li').allTextContents();
  assert.equal(await page.getAttribute('#op-state', 'data-state'), 'succeeded', events.join('\n'));
  console.log(`# rolling restart watched in the browser: ${Date.now() - t0} ms, ${events.length} events`);
  for (const id of ['agent-1', 'dbserver-1', 'coordinator-1']) assert.ok(events.some((e) => e.includes(id)), `an event about ${id}`);
  assert.equal(await page.locator('#op-events li[data-step="done"]').count(), 1, 'the stream ran to its end event');
  await page.waitForSelector('#operation-table tbody tr:first-child[data-state="succeeded"]', { timeout: 10_000 });
  await page.screenshot({ path: join(shotDir, 'console-operation.png'), fullPage: true });

  // Markup in data is shown as text, never run: an unmatched path lands in the audit trail verbatim.
  const markup = '/v1/<img/src=x/onerror=window.__injected=1>';
  assert.equal((await call(c, 'POST', markup)).status, 404);
  // The audit view names who ran it, from where, and the operation's outcome.
  await page.click('#nav button[data-view="audit"]');
  await page.waitForSelector('#audit-table tbody tr');
  assert.equal(await page.locator('#audit-table tbody tr').first().locator('td').nth(3).textContent(), `POST ${markup}`);
  assert.equal(await page.locator('#audit-table img').count(), 0, 'no element was made from the data');
  assert.equal(await page.evaluate(() => (window as unknown as { __injected?: number }).__injected), undefined);
  const audit = await page.locator('#audit-table tbody tr').nth(1).locator('td').allTextContents();
  assert.equal(audit[1], 'operator');
  assert.equal(audit[2], '127.0.0.1');
  assert.equal(audit[3], 'POST /v1/cluster/restart');
  assert.match(audit[5], /succeeded$/);

  await page.click('#nav button[data-view="cluster"]');
  await readyRows(page).nth(ROWS - 1).waitFor({ timeout: 60_000 });
  assert.deepEqual(cspViolations, [], 'the page runs under its CSP without a violation');

  // Every metric the dashboard queries has samples on this running cluster.
  const metrics = await scrape(c);
  const names = dashboardMetricNames();
  assert.ok(names.length >= 20, `only ${names.length} names in the dashboard`);
  const missing = names.filter((n) => !metrics.split('\n').some((l) => l.startsWith(n + '{') || l.startsWith(n + ' ')));
  assert.deepEqual(missing, [], 'every dashboard metric exists in a real scrape');
  assert.match(metrics, /cluster_dispatcher_operations_total\{kind="restart",outcome="succeeded",dispatcher="local-1"\} 1/);
  assert.match(metrics, /cluster_dispatcher_agency_has_leader\{dispatcher="local-1"\} 1/);
  assert.match(metrics, /cluster_dispatcher_db_members\{role="leader",dispatcher="local-1"\} 1/);

  // Shutdown through its confirmation step: Confirm stays disabled until the cluster's name is typed.
  await page.click('#nav button[data-view="actions"]');
  await page.waitForSelector('#action-shutdown:not([disabled])');
  await page.click('#action-shutdown');
  await page.waitForSelector('#confirm:not([hidden])');
  assert.equal(await page.isDisabled('#confirm-yes'), true);
  await page.fill('#confirm-name', 'loca');
  assert.equal(await page.isDisabled('#confirm-yes'), true, 'a wrong name does not confirm');
  await page.fill('#confirm-name', 'local');
  assert.equal(await page.isDisabled('#confirm-yes'), false);
  await page.click('#confirm-yes');
  await page.waitForSelector('#op-state[data-state="succeeded"], #op-state[data-state="failed"]', { timeout: 120_000 });
  assert.equal(await page.getAttribute('#op-state', 'data-state'), 'succeeded');
  await page.click('#nav button[data-view="cluster"]');
  await page.waitForFunction(() => document.getElementById('cluster-state')!.textContent === 'shutdown', null, { timeout: 10_000 });
});
