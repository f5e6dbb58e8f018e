/** `dispatch restart`: a rolling (or all-at-once) restart, optionally onto new binaries (an upgrade). */
import { Option, type Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import type { RestartRequest } from '../../api/rest.js';
import { planVersionArg, wholeNumber } from '../args.js';
import { runOperation } from '../command-kit.js';

function collect(v: string, prev: string[]) {
  return [...prev, v];
}

export function registerRestartCommand(program: Command): void {
  program
    .command('restart')
    .description('restart processes one at a time, keeping the cluster serving: agents (followers, then leader), DB servers (replicas, switchover, old leader), coordinators')
    .option('--role <role>', 'only this role (agent, dbserver, coordinator); repeatable', collect, [])
    .option('--host <dispatcher>', 'only processes on this dispatcher; repeatable', collect, [])
    .option('--process <id>', 'only this process; repeatable', collect, [])
    .option('--all-at-once', 'restart everything at once (downtime!) instead of rolling')
    .option('--upgrade <program=path>', 'upgrade: run this program from a new binary path (must be allowed on every machine); repeatable', collect, [])
    .option('--force', 'start even when the cluster is not healthy')
    .addOption(new Option('--base-version <version:hash>', 'refuse unless the running plan is still this version (as `dispatch plan --diff` prints it)').argParser(planVersionArg))
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready again').default(120).argParser(wholeNumber(1)))
    .action(async (o, cmd) => {
      const upgrade: Record<string, string> = {};
      for (const u of o.upgrade as string[]) {
        const m = /^([A-Za-z0-9_-]+)=(\/.+)$/.exec(u);
        if (!m) throw new DispatcherError('bad_request', `--upgrade ${u}: expected PROGRAM=/absolute/path`);
        upgrade[m[1]] = m[2];
      }
      const req: RestartRequest = {
        processes: {
          ...(o.role.length ? { roles: o.role } : {}),
          ...(o.host.length ? { hosts: o.host } : {}),
          ...(o.process.length ? { ids: o.process } : {}),
        },
        mode: o.allAtOnce ? 'all-at-once' : 'rolling',
        ...(Object.keys(upgrade).length ? { upgrade } : {}),
        force: !!o.force,
        readyTimeoutMs: (o.readyTimeout as number) * 1000,
        ...(o.baseVersion ? { baseVersion: o.baseVersion } : {}),
      };
      await runOperation(cmd, 'rolling restart', [], (k) => k.rollingRestart(req));
    });

  program
    .command('rotate-certs')
    .description('renew every process and dispatcher certificate of the cluster CA; the running processes re-read them, nothing restarts (run it on the dispatcher that launched the cluster)')
    .option('--ca', 'renew the cluster CA too, in three phases (trust new + old CA, new certificates, trust only the new CA), each re-read in place')
    .option('--ready-timeout <seconds>', 'how long each process may take to become ready again (engines that renew by rolling restart)', '120')
    .action(async (o, cmd) => {
      await runOperation(cmd, 'certificate rotation', [], (k) => k.rotateCertificates({ ...(o.ca ? { ca: true } : {}), readyTimeoutMs: Number(o.readyTimeout) * 1000 }));
    });
}
