/** `node --import <this file>`: registers test/helpers/module-log-hooks.ts (every module loaded goes to MODULE_LOG). */
import { register } from 'node:module';

register(new URL('./module-log-hooks.js', import.meta.url));
