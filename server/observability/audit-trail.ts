/**
 * The audit trail: who asked for which change, from where, and what came of it (docs/SECURITY.md, audit).
 * Every authenticated request that changes something is one entry (app.ts's audit middleware feeds it);
 * an entry whose request started an operation names the operation, and GET /v1/audit joins the
 * operation's outcome in when read — so "who ran the rolling restart, and did it succeed" is one answer.
 *
 * Bounded: the newest `maxEntries` are kept, older ones fall off. Persisted to <dataDir>/audit.json
 * (0600) atomically, writes serialized and coalesced, so the file is always a whole, recent trail.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export const AuditEntrySchema = z
  .object({
    seq: z.number().int(),
    at: z.string(),
    user: z.string().nullable(),
    source: z.string(),
    action: z.string(),
    path: z.string(),
    outcome: z.enum(['success', 'failure', 'denied']),
    status: z.number().int().optional(),
    operation: z.string().optional(),
  })
  .strict();
export type AuditEntry = z.infer<typeof AuditEntrySchema>;

const AuditFileSchema = z.object({ version: z.literal(1), entries: z.array(AuditEntrySchema) }).strict();

export interface AuditQuery {
  limit: number;
  user?: string;
  outcome?: AuditEntry['outcome'];
  /** Only entries after this sequence number (for polling). */
  after?: number;
}

export class AuditTrail {
  private entries: AuditEntry[] = [];
  private seq = 0;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;

  private constructor(
    private readonly file: string,
    readonly maxEntries: number,
    private readonly onWriteError: (err: Error) => void,
    private readonly clock: Clock,
  ) {}

  /**
   * Reads the trail on disk. A damaged file is copied to <file>.damaged (never deleted: it is evidence)
   * and reported through onWriteError; the trail goes on from empty rather than stopping the daemon.
   */
  static async open(file: string, opts: { maxEntries?: number; onWriteError?: (err: Error) => void; clock?: Clock } = {}): Promise<AuditTrail> {
    const t = new AuditTrail(file, opts.maxEntries ?? 2000, opts.onWriteError ?? (() => {}), opts.clock ?? systemClock);
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      return t; // no trail yet
    }
    const parsed = AuditFileSchema.safeParse((() => {
      try {
        return JSON.parse(text);
      } catch {
        return undefined;
      }
    })());
    if (!parsed.success) {
      // Keep the damaged file for inspection under another name; the trail goes on from empty.
      await writeFileAtomic(`${file}.damaged`, text, 0o600).catch(() => {});
      t.onWriteError(new Error(`${file} is damaged; kept as ${file}.damaged, starting a new trail`));
      return t;
    }
    t.entries = parsed.data.entries.slice(-t.maxEntries);
    t.seq = t.entries.at(-1)?.seq ?? 0;
    return t;
  }

  record(e: Omit<AuditEntry, 'seq' | 'at'>): AuditEntry {
    const entry: AuditEntry = { seq: ++this.seq, at: new Date(this.clock.now()).toISOString(), ...e };
    this.entries.push(entry);
    if (this.entries.length > this.maxEntries) this.entries.splice(0, this.entries.length - this.maxEntries);
    this.schedule();
    return entry;
  }

  /** Newest first. */
  query(q: AuditQuery): AuditEntry[] {
    const out: AuditEntry[] = [];
    for (let i = this.entries.length - 1; i >= 0 && out.length < q.limit; i--) {
      const e = this.entries[i];
      if (q.after !== undefined && e.seq <= q.after) break;
      if (q.user !== undefined && e.user !== q.user) continue;
      if (q.outcome !== undefined && e.outcome !== q.outcome) continue;
      out.push(e);
    }
    return out;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Resolves when everything recorded so far is on disk. */
  async flush(): Promise<void> {
    while (this.dirty) await this.writing;
    await this.writing;
  }

  /** One write in flight at a time; records arriving meanwhile are coalesced into the next write. */
  private schedule(): void {
    if (this.dirty) return;
    this.dirty = true;
    this.writing = this.writing.then(async () => {
      this.dirty = false;
      try {
        await writeFileAtomic(this.file, JSON.stringify({ version: 1, entries: this.entries }), 0o600);
      } catch (err) {
        this.onWriteError(err as Error);
      }
    });
  }
}
