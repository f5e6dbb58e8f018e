/**
 * Extra arguments a plan adds to a role's command line, checked against the engine's ALLOW list
 * (docs/SECURITY.md, "Operator account"): every option a user may pass is named in the engine profile with a
 * pattern for its value; anything else is refused naming the option. A deny list cannot be complete (a
 * program's option set changes between versions and short-option bundles hide names), an allow list is.
 *
 * Only long options are accepted, in the two spellings every engine program reads the same way:
 * `--name=value` and `--name value`. Short options, bundles (`-fX`), `--` and positional words are refused:
 * they cannot be classified without each program's own parser. Pure: no I/O.
 */
import type { Problem } from '../../api/errors.js';
import type { AllowedOption, RoleOptions } from '../../api/engine-catalog.js';

export type { AllowedOption, RoleOptions };

const LONG_OPTION = /^--([a-z][a-z0-9._-]*)(?:=([\s\S]*))?$/;

function anchored(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`, 'u');
}

/** The option name an argument sets (`--log.file=x` → `log.file`), or undefined when it is no long option. */
export function longOptionName(arg: string): string | undefined {
  return LONG_OPTION.exec(arg)?.[1];
}

/** Every problem of a role's extra args; [] when each one is an allowed option with a matching value. */
export function extraArgProblems(args: readonly string[], options: RoleOptions, basePath: string, engine: string, role: string): Problem[] {
  const problems: Problem[] = [];
  const allowed = new Map(options.allowed.map((o) => [o.name, o]));
  const managed = new Set(options.managed);
  const known = options.allowed.length ? `allowed: ${options.allowed.map((o) => `--${o.name}`).join(', ')}` : `engine ${engine} takes no extra arguments for role ${role}`;
  for (let i = 0; i < args.length; i++) {
    const at = `${basePath}[${i}]`;
    const arg = args[i];
    const m = LONG_OPTION.exec(arg);
    if (!m) {
      problems.push({ path: at, message: `"${printable(arg)}" is not a --long-option (short options, bundles, "--" and positional arguments are refused); ${known}` });
      continue;
    }
    const [, name, inlineValue] = m;
    if (managed.has(name)) {
      problems.push({ path: at, message: `option "--${name}" is managed by engine ${engine} for role ${role} and may not be overridden` });
      continue;
    }
    const rule = allowed.get(name);
    if (!rule) {
      problems.push({ path: at, message: `option "--${name}" is not allowed for role ${role} of engine ${engine}; ${known}` });
      continue;
    }
    if (rule.value === undefined) {
      if (inlineValue !== undefined) problems.push({ path: at, message: `option "--${name}" is a flag and takes no value` });
      continue;
    }
    let value = inlineValue;
    let valuePath = at;
    if (value === undefined) {
      if (i + 1 >= args.length) {
        problems.push({ path: at, message: `option "--${name}" needs a value matching ${rule.value}` });
        continue;
      }
      value = args[++i];
      valuePath = `${basePath}[${i}]`;
    }
    if (!anchored(rule.value).test(value)) {
      problems.push({ path: valuePath, message: `value "${printable(value)}" of option "--${name}" does not match ${rule.value}` });
    }
  }
  return problems;
}

/** Problems of an engine profile's option lists: a managed option may never be allowed, every pattern compiles. */
export function optionListProblems(options: RoleOptions, where: string): string[] {
  const out: string[] = [];
  for (const o of options.allowed) {
    if (options.managed.includes(o.name)) out.push(`${where}: option ${o.name} is both allowed and managed`);
    if (o.value !== undefined) {
      try {
        anchored(o.value);
      } catch (e) {
        out.push(`${where}: pattern of option ${o.name} does not compile: ${(e as Error).message}`);
      }
    }
  }
  return out;
}

/** A string shortened and with control characters made visible, for messages (never echo raw input). */
export function printable(s: string): string {
  const cut = s.length > 60 ? `${s.slice(0, 60)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
