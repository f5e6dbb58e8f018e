/**
 * The template language of engine profiles (templates/<engine>/): one handlebars instance with HTML
 * escaping off (these are config files and argv, not HTML), strict lookups (a typo fails loudly instead of
 * rendering ""), and one escaping helper per config-file format (docs/SECURITY.md, "Operator account").
 */
import { isIP } from 'node:net';
import { createRequire } from 'node:module';
import type Handlebars from 'handlebars';
import { DispatcherError } from '../../api/errors.js';

/** "host:port", with brackets for IPv6 (URLs, HAProxy server lines, etcd URLs). */
export function hostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** An address as a CIDR for pg_hba and firewall rules: /32 or /128 unless it has a prefix already. */
export function toCidr(address: string): string {
  if (address.includes('/')) return address;
  return isIP(address) === 6 ? `${address}/128` : `${address}/32`;
}

/**
 * A word in haproxy.cfg. HAProxy splits on spaces and reads quotes, backslashes, `#` and `$`/`%`
 * (environment and log-format expansion) itself; a word made only of plain path characters means the same
 * in every context, anything else is refused rather than quoted (its quoting rules differ by keyword).
 */
export function haproxyWord(v: string): string {
  // `@`, `,`, `=` and `+` mean something in address and socket arguments (haproxy -c refuses `a+b@c,d=e`).
  if (!/^[A-Za-z0-9_./:[\]-]+$/.test(v)) {
    throw new DispatcherError('config_invalid', `"${v.replace(/[^\x20-\x7e]/g, '?')}" cannot be written into haproxy.cfg: only letters, digits and "_./:[]-" are allowed there (choose a data dir without spaces or quotes)`);
  }
  return v;
}

/** A libpq connection-string value: single-quoted, backslash and quote escaped (libpq "Keyword/Value"). */
export function conninfoValue(v: string): string {
  return `'${v.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

/** A field of a libpq password file: `:` and `\` escaped with a backslash. */
export function pgpassField(v: string): string {
  return v.replace(/[\\:]/g, (c) => `\\${c}`);
}

const requireCjs = createRequire(import.meta.url);
let instance: typeof Handlebars | undefined;

/**
 * The handlebars instance, made on first render: a daemon renders templates only when it adopts a plan or
 * starts a process, and the library (parser, compiler, inline source maps) is ~2 MiB of an idle daemon
 * (docs/BENCHMARKS.md, "Daemon memory and authenticated throughput"). A CommonJS package: a synchronous
 * require keeps renderTemplate synchronous.
 */
/** Loads the library now (a dispatcher that adopted a plan is about to render its processes' files). */
export function loadTemplateEngine(): void {
  handlebars();
}

function handlebars(): typeof Handlebars {
  if (instance) return instance;
  const hb = (requireCjs('handlebars') as typeof Handlebars).create();
  hb.registerHelper('hostport', (a: unknown, p: unknown) => hostPort(String(a), Number(p)));
  hb.registerHelper('cidr', (a: unknown) => toCidr(String(a)));
  // JSON string literals are valid YAML scalars: safe quoting for passwords and paths in YAML configs.
  hb.registerHelper('json', (v: unknown) => JSON.stringify(v));
  // Per-format escaping (docs/SECURITY.md, "Operator account"): every value a template puts into a config
  // file goes through the helper of that file's format. Plan strings cannot hold control characters
  // (api/plan.ts); these helpers make the rest (quotes, spaces, separators) impossible to misread.
  hb.registerHelper('haproxy', (v: unknown) => haproxyWord(String(v)));
  hb.registerHelper('conninfo', (v: unknown) => conninfoValue(String(v)));
  hb.registerHelper('pgpass', (v: unknown) => pgpassField(String(v)));
  hb.registerHelper('concat', (...args: unknown[]) => args.slice(0, -1).map(String).join(''));
  // Every address a process listens on, for programs that take a list (IPv6 parity, docs/FIREWALL.md):
  // `{{urls 'http' hostAddresses ports.client}}` → "http://10.0.0.11:2381,http://[fd00::11]:2381" (the scheme
  // stays its own token); `{{listenList hostAddresses ports.postgres}}` → "10.0.0.11,fd00::11:5433" (Patroni's
  // postgresql.listen: addresses, then the port after the last one).
  hb.registerHelper('urls', (scheme: unknown, addrs: unknown, p: unknown) => (addrs as string[]).map((a) => `${String(scheme)}://${hostPort(a, Number(p))}`).join(','));
  hb.registerHelper('listenList', (addrs: unknown, p: unknown) => `${(addrs as string[]).join(',')}:${Number(p)}`);
  hb.registerHelper('dirname', (p: unknown) => String(p).replace(/\/[^/]*$/, '') || '/');
  instance = hb;
  return hb;
}

/** Renders one template string; any error names what was being rendered. */
export function renderTemplate(template: string, data: object, what: string): string {
  try {
    return handlebars().compile(template, { noEscape: true, strict: true })(data);
  } catch (err) {
    throw new DispatcherError('config_invalid', `cannot render ${what}: ${(err as Error).message}`, { cause: err });
  }
}
