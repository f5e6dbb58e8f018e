/**
 * The fixed set of commands deploy runs on a remote host. Pure: each builder returns one command line
 * (a string for an SSH exec request). Nothing else in deploy/ makes remote command text.
 *
 * Rules: values are validated by the inventory first; every argument goes through shJoin (the one quoting
 * function); compound logic is a CONSTANT script run as `sh -c SCRIPT sh ARG...`, so values only ever
 * arrive as positional parameters ("$1"), never spliced into script text.
 */
import { shJoin } from './quote.js';

/** Prefixes a command that needs root with `sudo -n --` when the SSH user is not root. */
export function asRoot(argv: string[], sudo: boolean): string[] {
  return sudo ? ['sudo', '-n', '--', ...argv] : argv;
}

function script(body: string, args: string[]): string[] {
  return ['sh', '-c', body, 'sh', ...args];
}

/** Walks up to the nearest existing ancestor and prints `df -Pk` for it (the prefix may not exist yet). */
const FREE_KB = 'p=$1; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; df -Pk "$p" | tail -n 1';

const INSTALL_RELEASE = [
  'set -eu',
  'tarball=$1; prefix=$2; name=$3',
  'releases="$prefix/releases"',
  'mkdir -p "$releases"',
  'chmod 0755 "$prefix" "$releases"',
  // A release dir is immutable once complete: unpack beside it and rename, so a broken upload never
  // leaves a half release that a later run would take for complete.
  'if [ ! -d "$releases/$name" ]; then',
  '  rm -rf "$releases/$name.tmp"',
  '  mkdir "$releases/$name.tmp"',
  '  tar -xzf "$tarball" -C "$releases/$name.tmp" --strip-components=1 --no-same-owner',
  '  chmod -R u+rwX,go+rX,go-w "$releases/$name.tmp"',
  '  mv "$releases/$name.tmp" "$releases/$name"',
  'fi',
  // Atomic switch of the `current` symlink: rename over the old link.
  'ln -sfn "releases/$name" "$prefix/current.new"',
  'mv -T "$prefix/current.new" "$prefix/current"',
  // Keep the new release and the one before it (for a manual roll-back); drop older ones.
  'ls -1t "$releases" | grep -v -x -e "$name" | tail -n +2 | while read -r old; do rm -rf "$releases/$old"; done',
].join('\n');

/** useradd takes a lock on /etc/passwd; concurrent deploys to hosts sharing /etc (containers) retry. */
const ENSURE_USER = [
  'if id -u "$1" >/dev/null 2>&1; then exit 0; fi',
  'for i in 1 2 3 4 5 6 7 8 9 10; do',
  '  useradd --system --user-group --no-create-home --home-dir "$2" --shell /usr/sbin/nologin "$1" 2>/dev/null && exit 0',
  '  id -u "$1" >/dev/null 2>&1 && exit 0',
  '  sleep 0.5',
  'done',
  'useradd --system --user-group --no-create-home --home-dir "$2" --shell /usr/sbin/nologin "$1"',
].join('\n');

/**
 * Starts the daemon without systemd: its own session (so it survives the SSH channel closing), stdin from
 * /dev/null, output appended to a file, and its pid in the pid file. In a non-interactive sh a background
 * job is not a process-group leader, so setsid() works without forking and $! is the daemon's own pid.
 */
const DIRECT_START = ['cd /', 'umask 022', 'setsid "$1" start --config "$2" </dev/null >>"$3" 2>&1 &', 'echo $! >"$4"'].join('\n');

/**
 * Stops ONLY the daemon named by the pid file (never by name): SIGTERM to that pid, not its process group,
 * so the cluster processes it supervises keep running and the next daemon adopts them. A stale pid file
 * (gone, a zombie, or a reused pid that is not a dispatcherd) is removed.
 */
const DIRECT_STOP = [
  'pf=$1',
  '[ -f "$pf" ] || exit 0',
  'pid=$(cat "$pf")',
  'case "$pid" in ""|*[!0-9]*) rm -f "$pf"; exit 0;; esac',
  'alive() { [ -r "/proc/$pid/stat" ] && [ "$(sed "s/.*) //" "/proc/$pid/stat" | cut -c1)" != Z ]; }',
  'if ! alive || ! tr "\\000" " " <"/proc/$pid/cmdline" | grep -q dispatcherd; then rm -f "$pf"; exit 0; fi',
  'kill -TERM "$pid"',
  'i=0',
  'while alive; do',
  '  i=$((i+1))',
  '  if [ "$i" -ge 300 ]; then echo "dispatcherd (pid $pid) did not stop within 30 s" >&2; exit 1; fi',
  '  sleep 0.1',
  'done',
  'rm -f "$pf"',
].join('\n');

/** Prints `running PID` or `stopped` for the pid file (same staleness rules as DIRECT_STOP). */
const DIRECT_STATUS = [
  'pf=$1',
  '[ -f "$pf" ] || { echo stopped; exit 0; }',
  'pid=$(cat "$pf")',
  'case "$pid" in ""|*[!0-9]*) echo stopped; exit 0;; esac',
  'if [ -r "/proc/$pid/stat" ] && [ "$(sed "s/.*) //" "/proc/$pid/stat" | cut -c1)" != Z ] && tr "\\000" " " <"/proc/$pid/cmdline" | grep -q dispatcherd; then echo "running $pid"; else echo stopped; fi',
].join('\n');

export const remote = {
  osRelease: (): string => shJoin(['cat', '/etc/os-release']),
  kernel: (): string => shJoin(['uname', '-sm']),
  nodeVersion: (): string => shJoin(['node', '--version']),
  uid: (): string => shJoin(['id', '-u']),
  hasSystemd: (): string => shJoin(script('if [ -d /run/systemd/system ]; then echo yes; else echo no; fi', [])),
  freeKb: (path: string): string => shJoin(script(FREE_KB, [path])),
  exists: (path: string): string => shJoin(['test', '-e', path]),
  /** A private staging dir for uploads, made as the SSH user (mode 0700 by mktemp). */
  mktemp: (): string => shJoin(['mktemp', '-d', '/tmp/dispatcher-deploy.XXXXXXXXXX']),
  removeTemp: (dir: string): string => shJoin(['rm', '-rf', '--', dir]),
  installRelease: (tarball: string, prefix: string, releaseName: string, sudo: boolean): string =>
    shJoin(asRoot(script(INSTALL_RELEASE, [tarball, prefix, releaseName]), sudo)),
  ensureUser: (user: string, home: string, sudo: boolean): string => shJoin(asRoot(script(ENSURE_USER, [user, home]), sudo)),
  /** Directory owned by root, group `group`, with `mode` (install -d is idempotent and fixes mode/owner). */
  ensureDir: (dir: string, mode: string, group: string, sudo: boolean): string =>
    shJoin(asRoot(['install', '-d', '-m', mode, '-o', 'root', '-g', group, dir], sudo)),
  installFile: (src: string, dest: string, mode: string, group: string, sudo: boolean): string =>
    shJoin(asRoot(['install', '-m', mode, '-o', 'root', '-g', group, src, dest], sudo)),
  readFile: (path: string, sudo: boolean): string => shJoin(asRoot(['cat', path], sudo)),
  dispatcherd: (prefix: string, args: string[], sudo: boolean): string => shJoin(asRoot([`${prefix}/current/bin/dispatcherd`, ...args], sudo)),
  systemctl: (args: string[], sudo: boolean): string => shJoin(asRoot(['systemctl', ...args], sudo)),
  directStart: (bin: string, config: string, outFile: string, pidFile: string, sudo: boolean): string =>
    shJoin(asRoot(script(DIRECT_START, [bin, config, outFile, pidFile]), sudo)),
  directStop: (pidFile: string, sudo: boolean): string => shJoin(asRoot(script(DIRECT_STOP, [pidFile]), sudo)),
  directStatus: (pidFile: string, sudo: boolean): string => shJoin(asRoot(script(DIRECT_STATUS, [pidFile]), sudo)),
  tail: (path: string, lines: number, sudo: boolean): string => shJoin(asRoot(['tail', '-n', String(lines), path], sudo)),
  sudoCheck: (): string => shJoin(['sudo', '-n', 'true']),
  removePaths: (paths: string[], sudo: boolean): string => shJoin(asRoot(['rm', '-rf', '--', ...paths], sudo)),
};
