/**
 * The probe loops of one incarnation (docs/DESIGN.md, "The supervisor"): readiness until it passes,
 * then liveness. Every tick checks the generation, so a loop of an older incarnation ends by itself.
 */
import type { Entry, SupervisorContext } from './context.js';

const LIVENESS_INTERVAL_MS = 2_000;
const LIVENESS_FAILURES = 3;

/** Probes readiness until it passes (then liveness, if any) for one incarnation. */
export function watchReadiness(ctx: SupervisorContext, e: Entry, gen: number): void {
  const spec = e.rec.spec;
  const base = spec.readinessIntervalMs ?? 250;
  const began = ctx.now();
  const tick = async () => {
    if (ctx.closed || gen !== e.gen) return;
    const r = await ctx.probe(spec.readiness);
    if (ctx.closed || gen !== e.gen) return;
    e.lastProbe = r.detail;
    if (r.ok) {
      if (e.rec.state === 'running' || e.rec.state === 'starting') {
        e.rec.state = 'ready';
        e.rec.readySince = ctx.iso(ctx.now());
        ctx.log.info('process ready', { process: spec.id, pid: e.rec.pid });
        ctx.emit(e);
        await ctx.persist();
      }
      if (spec.liveness) ctx.later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(ctx, e, gen, 0));
      return;
    }
    // Keep probing a slow starter, but less often after a minute.
    ctx.later(e, ctx.now() - began > 60_000 ? Math.max(base, 2_000) : base, () => void tick());
  };
  void tick();
}

/**
 * Liveness after readiness: a few failures in a row demote the process from `ready` to `running`
 * (and readiness is probed again). It does not kill: for a database a hard restart on a slow answer
 * does more harm than the supervisor can judge.
 */
async function watchLiveness(ctx: SupervisorContext, e: Entry, gen: number, failures: number): Promise<void> {
  const spec = e.rec.spec;
  if (ctx.closed || gen !== e.gen || !spec.liveness) return;
  const r = await ctx.probe(spec.liveness);
  if (ctx.closed || gen !== e.gen) return;
  e.lastProbe = r.detail;
  if (r.ok) {
    ctx.later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(ctx, e, gen, 0));
    return;
  }
  if (failures + 1 >= LIVENESS_FAILURES) {
    ctx.log.warn('process failed its liveness probe; no longer ready', { process: spec.id, detail: r.detail });
    e.rec.state = 'running';
    e.rec.readySince = undefined;
    ctx.emit(e);
    await ctx.persist();
    watchReadiness(ctx, e, gen);
    return;
  }
  ctx.later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(ctx, e, gen, failures + 1));
}
