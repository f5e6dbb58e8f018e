/**
 * Writes docs/plan.schema.json from api/plan.ts (the one source of the plan's shape).
 *   node dist/launcher/export-schema.js [--check]
 * --check exits 1 when the committed file is out of date (the unit test does the same).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { PlanSchema, SpecSchema } from '../api/plan.js';

/** The schema document: the plan at the root, the spec under $defs.Spec. Deterministic text. */
export function planSchemaText(): string {
  // io 'input': fields with defaults are optional, as a person or a script may write them.
  const plan = z.toJSONSchema(PlanSchema, { io: 'input' }) as Record<string, unknown>;
  const spec = z.toJSONSchema(SpecSchema, { io: 'input' }) as Record<string, unknown>;
  delete spec.$schema;
  const doc = {
    $schema: plan.$schema,
    $id: 'https://cluster-dispatcher.invalid/schemas/plan.schema.json',
    title: 'cluster-dispatcher launch plan (apiVersion dispatcher/v1)',
    description: 'Generated from api/plan.ts by launcher/export-schema.ts; do not edit. The spec (what the Planner reads) is $defs.Spec.',
    ...Object.fromEntries(Object.entries(plan).filter(([k]) => k !== '$schema')),
    $defs: { ...((plan.$defs as object) ?? {}), Spec: spec },
  };
  return JSON.stringify(doc, null, 2) + '\n';
}

export function schemaFilePath(): string {
  // dist/launcher/export-schema.js or launcher/export-schema.ts → repo root
  let dir = dirname(fileURLToPath(import.meta.url));
  if (dir.endsWith(join('dist', 'launcher'))) dir = dirname(dirname(dir));
  else dir = dirname(dir);
  return join(dir, 'docs', 'plan.schema.json');
}

function main(): void {
  const path = schemaFilePath();
  const text = planSchemaText();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(path, 'utf8');
    } catch {
      /* missing counts as out of date */
    }
    if (current !== text) {
      process.stderr.write(`${path} is out of date: run node dist/launcher/export-schema.js\n`);
      process.exitCode = 1;
    }
    return;
  }
  writeFileSync(path, text);
  process.stdout.write(`wrote ${path}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
