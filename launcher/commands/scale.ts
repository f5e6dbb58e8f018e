/**
 * `dispatch scale FILE`: grow the running cluster to the plan in FILE (docs/DESIGN.md, "Scaling") — new
 * dispatchers and new agents, DB servers or coordinators; everything that stays must stay the same.
 * `--dry-run` is the diff view of `dispatch plan --diff` (nothing changes).
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import type { PlanDiffView } from '../../api/plan-version.js';
import { planVersionArg, wholeNumber } from '../args.js';
import { globals, runOperation, withClient } from '../command-kit.js';
import { formatPlanDiff } from '../plan-diff-view.js';
import { loadPeerCredentials } from '../plan-input.js';
import { proposedPlan } from './plan.js';

export function registerScaleCommand(program: Command): void {
  program
    .command('scale')
    .argument('<file>', 'the plan (or spec) the running cluster should become: the running plan plus new, or minus removed, dispatchers and processes')
    .description('scale the running cluster out or in: adopt new dispatchers, widen every firewall, then add agents, DB servers and coordinators one at a time, each healthy before the next; or move leaders away, remove processes keeping quorum, shrink the firewalls and release dispatchers that leave (their data dirs are KEPT)')
    .addOption(new Option('--base-version <version:hash>', 'refuse unless the running plan is still this version (as `dispatch plan --diff` prints it)').argParser(planVersionArg))
    .option('--dry-run', 'show what would change and the steps it would take (the `dispatch plan --diff` view); change nothing')
    .option('--peer-credentials <file>', 'YAML {dispatcherId: {user, passwordFile}} for NEW dispatchers whose password differs from yours (first contact, as a launch)')
    .addOption(new Option('--ready-timeout <seconds>', 'how long each new process may take to become ready and healthy').default(120).argParser(wholeNumber(1)))
    .addHelpText(
      'after',
      `
What happens, in order (each step is an event; a step that adds something stores a new plan version first):
  1. every new dispatcher is contacted with your credential (or --peer-credentials), adopts the plan, is
     preflighted and gets certificates from the cluster CA (run this on the dispatcher that launched the cluster);
  2. every host's firewall lets the new hosts' addresses in, and every DB server's pg_hba, before anything starts;
  3. new agents join the agency one at a time (etcd member add, then start), each healthy before the next;
  4. new DB servers start as Patroni replicas (healthy once streaming); new coordinators start;
  5. coordinators that stay learn new DB servers: HAProxy restarts while its pooler holds new transactions.
Scale in (processes or dispatchers left out of FILE), after the steps above:
  6. coordinators that go stop; if the Patroni leader is on a DB server that goes, it moves to one that stays;
     DB servers that go stop and leave Patroni; coordinators that stay learn the smaller list;
  7. agents that go hand the etcd leadership to one that stays and leave the agency one at a time (quorum kept);
  8. only then every firewall stops letting the gone hosts in (and they are no longer trusted);
  9. each dispatcher that leaves stops what is left there, removes its firewall guard and forgets the cluster.
     Its data dirs are KEPT: nothing here deletes data; delete them by hand once you are sure.
Processes or hosts that are down when it starts (a dead machine) leave first and are asked nothing
(to put a new machine in a dead one's place in one step: dispatch replace DEAD --with NEW).
A failure stops at the failed step, undoes that step only and names what is left; completed steps stay.
Refused before anything changes: a plan that changes anything that stays (ports, binaries, firewall policy),
an agency that would lose quorum, another base version (--base-version), another operation running.
Example:  dispatch plan --diff bigger.json   then   dispatch scale bigger.json --base-version 3:0123456789abcdef`,
    )
    .action(async (file: string, o: { baseVersion?: { number: number; hash: string }; dryRun?: boolean; peerCredentials?: string; readyTimeout: number }, cmd: Command) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (e) {
        throw new DispatcherError('bad_request', `cannot read ${file}: ${(e as Error).message}`);
      }
      const plan = proposedPlan(text, file);
      if (o.dryRun) {
        const view = await withClient(cmd, (client) => client.post<PlanDiffView>('/v1/cluster/plan/diff', { plan }));
        process.stdout.write(globals(cmd).json ? JSON.stringify(view, null, 2) + '\n' : formatPlanDiff(view));
        return;
      }
      const peerCredentials = await loadPeerCredentials(o.peerCredentials);
      await runOperation(cmd, `scale ${plan.name}`, [], (k) =>
        k.scale({ plan, peerCredentials, readyTimeoutMs: o.readyTimeout * 1000, ...(o.baseVersion ? { baseVersion: o.baseVersion } : {}) }),
      );
    });
}
