/**
 * Module customization hooks (node:module register) that append the URL of every module of this repository
 * a process loads to the file named by MODULE_LOG: a test can then say which of our modules a real daemon
 * has loaded, whichever way they were imported. Runs in node's hooks thread.
 */
import { appendFileSync } from 'node:fs';

type NextLoad = (url: string, context: unknown) => Promise<unknown>;

export async function load(url: string, context: unknown, nextLoad: NextLoad): Promise<unknown> {
  const file = process.env.MODULE_LOG;
  if (file && url.startsWith('file:') && !url.includes('/node_modules/')) appendFileSync(file, url + '\n');
  return nextLoad(url, context);
}
