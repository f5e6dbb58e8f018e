/**
 * The persisted commit-confirmed change (docs/FIREWALL.md, "Commit-confirmed"): one state file per
 * dispatcher, `<dataDir>/firewall/pending.json` (0600, written atomically), holding the change's token, its
 * deadline, the policy it installed and the policy to go back to. Whoever settles the change — the daemon
 * (confirm, cancel) or the rollback watchdog at the deadline — first CLAIMS the file by renaming it away:
 * rename is atomic, so exactly one of them wins and the other sees it gone. The outcome is written next to
 * it (`outcome.json`), so a daemon that was stopped or restarted learns what happened meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { FirewallPolicy } from '../../api/plan.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';

export interface PendingChange {
  token: string;
  /** ISO time: the watchdog restores `previous` at this moment unless the change was settled. */
  deadline: string;
  backend: 'nftables' | 'iptables' | 'none';
  /** The backend's network namespace, when it runs its tools in one (tests). */
  netns?: string;
  /** What the change installed, and what a rollback installs again (null: remove our rules). */
  next: GuardPolicy;
  previous: GuardPolicy | null;
  /** The plan-level policy of the change (stored in the plan on confirm). */
  firewall?: FirewallPolicy;
  /** The watchdog's pid (a restarted daemon starts a new one when it is gone). */
  watchdogPid?: number;
}

export interface ChangeOutcome {
  token: string;
  outcome: 'confirmed' | 'cancelled' | 'rolled-back' | 'rollback-failed';
  at: string;
  error?: string;
}

export class PendingChangeFile {
  readonly file: string;
  private readonly outcomeFile: string;
  constructor(readonly dir: string) {
    this.file = join(dir, 'pending.json');
    this.outcomeFile = join(dir, 'outcome.json');
  }

  async write(change: PendingChange): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file, JSON.stringify(change, null, 2), 0o600);
  }

  async read(): Promise<PendingChange | undefined> {
    return readJson<PendingChange>(this.file);
  }

  /**
   * Takes the pending change out of play if it is `token`'s: returns it, or undefined when it was already
   * settled by someone else (or is another change). The caller then owns it and must record an outcome.
   */
  async claim(token: string): Promise<PendingChange | undefined> {
    const claimed = join(this.dir, `claimed-${process.pid}-${randomBytes(8).toString('hex')}.json`);
    try {
      await rename(this.file, claimed);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const change = await readJson<PendingChange>(claimed);
    if (!change || change.token !== token) {
      // Not ours (a newer change): put it back unless a newer one appeared meanwhile (link never clobbers).
      await link(claimed, this.file).catch(() => undefined);
      await unlink(claimed).catch(() => undefined);
      return undefined;
    }
    await unlink(claimed).catch(() => undefined);
    return change;
  }

  /** Gives a claimed change back (e.g. the watchdog found its deadline extended). Never clobbers a newer one. */
  async putBack(change: PendingChange): Promise<boolean> {
    const tmp = join(this.dir, `.putback-${process.pid}-${randomBytes(8).toString('hex')}.json`);
    await writeFileAtomic(tmp, JSON.stringify(change, null, 2), 0o600);
    try {
      await link(tmp, this.file);
      return true;
    } catch {
      return false;
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  async writeOutcome(o: ChangeOutcome): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.outcomeFile, JSON.stringify(o, null, 2), 0o600);
  }

  async outcome(token: string): Promise<ChangeOutcome | undefined> {
    const o = await readJson<ChangeOutcome>(this.outcomeFile);
    return o && o.token === token ? o : undefined;
  }
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
