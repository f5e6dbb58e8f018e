/**
 * Builds, once per deploy run, the release that goes onto every host: the `npm pack` tarball of this
 * checkout plus its production dependencies, as one self-contained .tgz.
 *
 * Why the dependencies travel with it instead of `npm install` on each host: database machines often have
 * no route to a registry, N hosts would resolve N possibly different trees, and the test hosts (network
 * namespaces) have no network at all. The tree is copied from this checkout's node_modules as `npm ls
 * --omit=dev` resolves it (the package-lock's production subset), and install scripts are never run —
 * ssh2's optional native add-on is skipped and it uses its pure-JS crypto.
 *
 * The archive is reproducible (sorted, mtime 0, numeric owner 0, gzip without timestamp), so the release
 * name — version + content hash — is stable across runs with the same code: a re-deploy of the same
 * code finds the release already unpacked and only switches/restarts.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { cp, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { DispatcherError } from '../api/errors.js';

export interface BuiltPackage {
  /** The bundle to upload (.tgz with a top-level `package/`). */
  file: string;
  sha256: string;
  version: string;
  /** `<version>-<first 12 hex of sha256>`: the release directory name on hosts. */
  releaseName: string;
}

export interface BuildOptions {
  /** Checkout with package.json, node_modules and (unless build) a fresh dist/. */
  checkout: string;
  /** Private scratch dir for the pack and the bundle. */
  workDir: string;
  /** Run the package's `prepare` (tsc) through `npm pack`; false: pack the dist/ that is there. */
  build: boolean;
  /** Use this existing `npm pack` tarball instead of packing. */
  tarball?: string;
}

function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new DispatcherError('operation_failed', `${cmd} ${args.join(' ')} failed: ${String(stderr).trim().split('\n').slice(-5).join(' / ') || err.message}`));
      else resolve(stdout);
    });
  });
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}

export async function buildPackage(o: BuildOptions): Promise<BuiltPackage> {
  await mkdir(o.workDir, { recursive: true });
  let tarball = o.tarball;
  if (!tarball) {
    const args = ['pack', '--json', '--pack-destination', o.workDir, ...(o.build ? [] : ['--ignore-scripts'])];
    const out = await run('npm', args, o.checkout);
    // With prepare, tsc's output precedes the JSON: take the last JSON array in the output.
    const json = out.slice(out.lastIndexOf('\n[') + 1 || out.indexOf('['));
    const info = JSON.parse(json) as { filename: string }[];
    tarball = path.join(o.workDir, info[0].filename.replace(/^@[^/]+\//, '').replace('/', '-'));
  }
  const stage = path.join(o.workDir, 'stage');
  await mkdir(stage, { recursive: true });
  await run('tar', ['-xzf', tarball, '-C', stage, '--no-same-owner'], o.checkout);
  const pkgDir = path.join(stage, 'package');
  const pkg = JSON.parse(await readFile(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string };

  // Production dependency tree, as this checkout resolved it.
  const parseable = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], o.checkout).catch((e: Error) => {
    throw new DispatcherError('operation_failed', `cannot list production dependencies (is node_modules installed?): ${e.message}`);
  });
  const nm = path.join(path.resolve(o.checkout), 'node_modules') + path.sep;
  const dirs = parseable.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(nm)).sort();
  const copied: string[] = [];
  for (const dir of dirs) {
    if (copied.some((c) => dir.startsWith(c + path.sep))) continue; // inside a package already copied
    const rel = dir.slice(nm.length);
    await cp(dir, path.join(pkgDir, 'node_modules', rel), { recursive: true, dereference: false, verbatimSymlinks: true });
    copied.push(dir);
  }

  // Smoke test before anything leaves this machine: the packed daemon must at least load.
  await run(process.execPath, [path.join(pkgDir, 'bin', 'dispatcherd'), '--help'], pkgDir).catch((e: Error) => {
    throw new DispatcherError('operation_failed', `the packed package does not start (${e.message}); check package.json "files" covers every dist/ folder the daemon imports`);
  });

  const bundle = path.join(o.workDir, `cluster-dispatcher-${pkg.version}-bundle.tgz`);
  const tar = spawn('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '-C', stage, 'package'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tarErr = '';
  tar.stderr.on('data', (d: Buffer) => (tarErr += d.toString()));
  const exited = new Promise<number | null>((r) => tar.on('close', r));
  await pipeline(tar.stdout, createGzip({ level: 6 }), createWriteStream(bundle, { mode: 0o644 }));
  const code = await exited;
  if (code !== 0) throw new DispatcherError('operation_failed', `tar failed: ${tarErr.trim()}`);
  const sha256 = await sha256File(bundle);
  await stat(bundle);
  return { file: bundle, sha256, version: pkg.version, releaseName: `${pkg.version}-${sha256.slice(0, 12)}` };
}
