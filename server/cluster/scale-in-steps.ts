/**
 * The removal steps of a scale operation (docs/DESIGN.md, "Scaling"): not executed yet — each refuses
 * with a 400 naming the step.
 */
import { DispatcherError } from '../../api/errors.js';
import type { StepRunners } from './scale-steps.js';

type ScaleInKind = 'remove-dead-agent' | 'switchover-away' | 'remove-coordinator' | 'remove-dbserver' | 'remove-agent' | 'shrink-firewall' | 'release-dispatcher';

const notYet = (kind: ScaleInKind) => async () => {
  throw new DispatcherError('bad_request', `not supported yet: the scale step ${kind} (removing processes or dispatchers)`);
};

export const scaleInRunners: Pick<StepRunners, ScaleInKind> = {
  'remove-dead-agent': notYet('remove-dead-agent'),
  'switchover-away': notYet('switchover-away'),
  'remove-coordinator': notYet('remove-coordinator'),
  'remove-dbserver': notYet('remove-dbserver'),
  'remove-agent': notYet('remove-agent'),
  'shrink-firewall': notYet('shrink-firewall'),
  'release-dispatcher': notYet('release-dispatcher'),
};

