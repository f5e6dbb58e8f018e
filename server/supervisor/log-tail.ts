/** The last lines of a process's own stdout/stderr logs, for failures and `dispatch logs`. */
import { join } from 'node:path';
import { openOwnFileForRead } from '../safe-files.js';
import { processLogDir, STDERR_LOG, STDOUT_LOG } from './spawner.js';

/** Last `n` lines of one of the daemon's own log files (never a link, FIFO or foreign file), at most its last 256 KiB. */
async function tailFile(path: string, n: number): Promise<string[]> {
  const fh = await openOwnFileForRead(path);
  if (!fh) return [];
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    if (len < size) lines.shift(); // first line is probably cut
    return n > 0 ? lines.slice(-n) : [];
  } finally {
    await fh.close();
  }
}

/** The last `n` lines of a process's stdout then stderr log. */
export async function processLogTail(stateDir: string, processId: string, n: number): Promise<string[]> {
  const dir = processLogDir(stateDir, processId);
  const out = await tailFile(join(dir, STDOUT_LOG), n);
  const err = await tailFile(join(dir, STDERR_LOG), n);
  return [...out, ...err].slice(-n);
}
