/**
 * The checks that refuse to start a dispatcher that could serve a cluster unsafely: a data dir others can
 * write into, or root allowing engines without a runAs user. They run at start whether or not the cluster
 * side is loaded then (server/cluster-daemon.ts loads it on first use when no plan is stored), so a daemon
 * still refuses to start instead of failing its first cluster request (docs/DESIGN.md, "The lazy
 * cluster side"). Synchronous and light: no cluster module is imported here.
 */
import { DispatcherError, formatProblems } from '../../api/errors.js';
import { checkDataTree } from '../data-tree.js';
import type { DispatcherConfig } from '../config.js';

export function refuseUnsafeClusterStart(config: DispatcherConfig): void {
  const treeProblems = checkDataTree(config.dataDir, process.getuid?.() ?? 0);
  if (treeProblems.length) {
    throw new DispatcherError('config_invalid', `refusing to start: the data dir is not safe:\n${formatProblems(treeProblems)}`, { problems: treeProblems });
  }
  if (!config.runAs && process.getuid?.() === 0 && Object.keys(config.engines).length > 0) {
    throw new DispatcherError('config_invalid', 'refusing to start: this dispatcher runs as root and allows engines, but no runAs user is configured, so cluster processes would run as root. Set runAs to an unprivileged user (dispatcherd init --run-as cluster-dispatcher, or DISPATCHER_RUN_AS).');
  }
}
