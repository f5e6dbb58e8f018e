/**
 * The baseline for bench/launch-overhead.ts: the SAME processes a dispatcher launch starts (same rendered
 * argv, config files, unprivileged user, data dirs), started by a plain ordered script — no HTTPS, no
 * dispatchers, no propagation, no preflight, no supervisor — with the SAME readiness checks: each process's
 * own probe (polled at the engine's interval), then the same cluster-level health gate per role (polled
 * every HEALTH_GATE_POLL_MS, as the orchestrator does). Agents, then DB servers, then coordinators.
 *
 * Used as a module by launch-overhead.ts: plainLaunch() resolves when the cluster is ready; stop() stops it.
 */
import { chown, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { ClusterClientTls } from '../server/engines/cluster-https.js';
import { launchGroups, shutdownGroups } from '../server/core/order.js';
import { loadEngine, renderProcess, type Engine } from '../server/engines/index.js';
import { runProbe } from '../server/supervisor/probes.js';
import { spawnProcess, type Spawned } from '../server/supervisor/spawner.js';
import { engineHealth } from '../server/cluster/setup.js';
import { HEALTH_GATE_POLL_MS } from '../server/cluster/launch-steps.js';
import type { Plan } from '../api/plan.js';
import type { DispatcherConfig } from '../server/config.js';
import type { PlanPki } from '../server/pki/issue-plan.js';
import { sleep } from './stats.js';

export interface PlainCluster {
  /** ms from the first spawn to "coordinators healthy". */
  readyMs: number;
  stop(): Promise<void>;
}

export async function plainLaunch(
  plan: Plan,
  opts: { dataDirOf: (dispatcherId: string) => string; binaries: Record<string, string>; secrets: Record<string, string>; runAs?: { uid: number; gid: number; user?: string }; timeoutMs?: number; pki?: PlanPki; engine?: Engine; healthGates?: boolean },
): Promise<PlainCluster> {
  const engine = opts.engine ?? loadEngine(plan.engine);
  // psql verifies the DB servers' certificates (verify-full) against a CA *file*, as a dispatcher's health
  // check does with its own; without one every replica read as "not streaming" and the gate never passed.
  let clientTls: ClusterClientTls | undefined;
  let caDir: string | undefined;
  if (opts.pki) {
    caDir = mkdtempSync(join(tmpdir(), 'plain-launch-ca-'));
    const caFile = join(caDir, 'ca.pem');
    writeFileSync(caFile, opts.pki.client.ca, { mode: 0o644 });
    clientTls = { ...opts.pki.client, caFile };
  }
  const health = engineHealth({ engines: { [plan.engine]: { binaries: opts.binaries } } } as unknown as DispatcherConfig, () => clientTls);
  const spawned = new Map<string, { s: Spawned; leftover?: string }>();
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  const stop = async () => {
    for (const group of shutdownGroups(plan)) {
      await Promise.all(
        group.processes.map(async (p) => {
          const e = spawned.get(p.id);
          if (!e) return;
          try {
            process.kill(-e.s.pid, 'SIGTERM');
          } catch {
            /* gone */
          }
          const t = setTimeout(() => {
            try {
              process.kill(-e.s.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }, 60_000);
          await e.s.exited;
          clearTimeout(t);
        }),
      );
    }
    if (caDir) rmSync(caDir, { recursive: true, force: true });
  };
  const t0 = performance.now();
  try {
    for (const group of launchGroups(plan)) {
      await Promise.all(
        group.processes.map(async (p) => {
          const r = renderProcess(engine, plan, p.id, { dispatcherDataDir: opts.dataDirOf(p.dispatcher), binaries: opts.binaries, secrets: opts.secrets, runAs: opts.runAs, ...(opts.pki ? { tls: opts.pki.processes[p.id] } : {}) });
          // The unprivileged user must traverse the parents (as LocalNode.letRunAsTraverse arranges).
          await mkdir(dirname(r.spec.dir), { recursive: true, mode: 0o711 });
          await mkdir(r.spec.dir, { recursive: true, mode: 0o700 });
          if (opts.runAs) await chown(r.spec.dir, opts.runAs.uid, opts.runAs.gid);
          for (const f of r.files) {
            await mkdir(dirname(f.path), { recursive: true, mode: 0o700 });
            if (opts.runAs) await chown(dirname(f.path), opts.runAs.uid, opts.runAs.gid);
            await writeFile(f.path, f.content, { mode: f.mode });
            if (opts.runAs) await chown(f.path, opts.runAs.uid, opts.runAs.gid);
          }
          const s = await spawnProcess(r.spec, `${r.spec.dir}.run`);
          spawned.set(p.id, { s, leftover: r.leftoverPidFile });
          for (;;) {
            if ((await runProbe(r.spec.readiness)).ok) return;
            if (Date.now() > deadline) throw new Error(`${p.id} not ready`);
            await sleep(r.spec.readinessIntervalMs ?? 250);
          }
        }),
      );
      // Without gates (bench/tls-overhead.ts) each process's own probe is the only check, for both variants.
      for (; opts.healthGates !== false; ) {
        const h = await health.check(plan, group.role, group.processes, opts.secrets).catch((e) => ({ ok: false, detail: String(e) }));
        if (h.ok) break;
        if (Date.now() > deadline) throw new Error(`${group.role}s not healthy: ${h.detail}`);
        await sleep(HEALTH_GATE_POLL_MS);
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { readyMs: performance.now() - t0, stop };
}
