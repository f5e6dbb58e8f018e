/**
 * `dispatch replace DEAD --with NEW`: a machine that is gone for good is replaced by a new dispatcher
 * (POST /v1/cluster/replace; docs/DESIGN.md, "Scaling"). NEW is what an operator can type — `ID=ENDPOINT`
 * with `--new-fingerprint` and `--new-address` — or a small file holding one spec dispatcher entry.
 */
import { isIP } from 'node:net';
import { Option, type Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import type { ReplaceRequest } from '../../api/rest.js';
import type { SpecDispatcher } from '../../api/plan.js';
import { planVersionArg, wholeNumber } from '../args.js';
import { runOperation } from '../command-kit.js';
import { loadDispatcherEntry, loadPeerCredentials } from '../plan-input.js';

function collect(v: string, prev: string[]) {
  return [...prev, v];
}

/** `--with ID=ENDPOINT` + `--new-fingerprint` + `--new-address` (default: the endpoint's host, if it is an address). */
function typedDispatcher(withArg: string, fingerprint: string | undefined, addresses: string[]): SpecDispatcher {
  const m = /^([a-z0-9][a-z0-9-]{0,62})=(https:\/\/\S+)$/.exec(withArg);
  if (!m) throw new DispatcherError('bad_request', `--with ${withArg}: expected ID=https://ADDRESS:PORT (or --with-file FILE)`);
  if (!fingerprint) throw new DispatcherError('bad_request', `--with ${m[1]}: give --new-fingerprint SHA256 (the new dispatcher prints it at its first start; \`dispatcherd fingerprint\` shows it)`);
  let host: string;
  try {
    host = new URL(m[2]).hostname.replace(/^\[|\]$/g, '');
  } catch {
    throw new DispatcherError('bad_request', `--with ${withArg}: ${m[2]} is not a URL`);
  }
  const all = addresses.length ? addresses : isIP(host) ? [host] : [];
  if (!all.length) throw new DispatcherError('bad_request', `--with ${m[1]}: the endpoint names no IP address; give its addresses with --new-address`);
  return { id: m[1], endpoint: m[2], fingerprint, addresses: all, allowAgents: true, allowDBservers: true, allowCoordinators: true };
}

export function registerReplaceCommand(program: Command): void {
  program
    .command('replace')
    .argument('<dead>', 'id of the dispatcher whose machine is gone for good')
    .description(
      'replace a dead machine: its etcd member is removed, its processes are re-created on the NEW dispatcher under new ids (its DB server as a Patroni replica), coordinators and every firewall updated. ' +
        'Refused (409) when the agency would lose quorum. The dead machine is asked nothing; if it ever comes back, its data dirs are still there — delete them by hand, it no longer belongs to the cluster.',
    )
    .option('--with <id=endpoint>', 'the new dispatcher, e.g. db4=https://10.0.0.14:8528')
    .option('--new-fingerprint <sha256>', 'SHA-256 fingerprint of the new dispatcher\'s certificate (with --with)')
    .option('--new-address <ip>', 'an address of the new machine (IPv4 or IPv6); repeatable; default: the endpoint\'s', collect)
    .option('--with-file <file>', 'instead of --with: a YAML/JSON file with one dispatcher entry as in a spec (id, endpoint, fingerprint, addresses)')
    .option('--peer-credentials <file>', 'operator account on the new dispatcher, { ID: { user, passwordFile } } (default: the one you use here)')
    .addOption(new Option('--base-version <version:hash>', 'refuse unless the running plan is still this version (as `dispatch plan --diff` prints it)').argParser(planVersionArg))
    .addOption(new Option('--ready-timeout <seconds>', 'how long each new process may take to become ready').default(120).argParser(wholeNumber(1)))
    .action(async (dead: string, o, cmd) => {
      if (!!o.with === !!o.withFile) throw new DispatcherError('bad_request', 'give the new dispatcher with --with ID=ENDPOINT (and --new-fingerprint) or with --with-file FILE');
      const replacement = o.withFile ? await loadDispatcherEntry(o.withFile as string) : typedDispatcher(o.with as string, o.newFingerprint as string | undefined, (o.newAddress as string[] | undefined) ?? []);
      const req: ReplaceRequest = {
        dead,
        with: replacement,
        peerCredentials: await loadPeerCredentials(o.peerCredentials as string | undefined),
        readyTimeoutMs: (o.readyTimeout as number) * 1000,
        ...(o.baseVersion ? { baseVersion: o.baseVersion } : {}),
      };
      await runOperation(cmd, `replace ${dead} with ${replacement.id}`, [], (k) => k.replace(req));
    });
}
