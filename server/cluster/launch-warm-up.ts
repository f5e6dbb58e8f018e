/**
 * What a dispatcher loads as soon as it has adopted a plan: the certificate library (the launch's next
 * steps make keys, requests and certificates) and the template engine (every process start renders files).
 * Both are loaded lazily so that an idle daemon does not carry them (docs/BENCHMARKS.md, "Daemon memory and
 * authenticated throughput"); loading them on first use put ~150 ms of module compilation on the launch's
 * critical path, once on the contacted dispatcher and again on every peer (docs/BENCHMARKS.md, "Launch
 * overhead"). Loading right after the adoption is answered overlaps it with the other dispatchers' work
 * and the network round trips instead.
 */
import { loadCertificateLibrary } from '../pki/certificates.js';
import { loadTemplateEngine } from '../engines/template.js';

/** Schedules the loads after the current request's answer has been written (a failure here is harmless: the first real use loads again and reports). */
export function warmUpAfterAdoption(): void {
  setImmediate(() => {
    try {
      loadCertificateLibrary();
      loadTemplateEngine();
    } catch {
      /* the first real use loads the library again and reports its error where it matters */
    }
  });
}
