/**
 * Reads an HTTP Basic `Authorization` header strictly. passport-http's BasicStrategy splits the decoded
 * text at the first ':' and drops everything after a second one, so `user:password:anything` logged in
 * (docs/SECURITY.md, "Identities"). Here a credential is exactly `user:password` with ONE colon — the same
 * rule users.ts enforces when a password is set — so no two different headers verify as one credential.
 */
import { DispatcherError } from '../../../api/errors.js';

export interface BasicCredential {
  user: string;
  password: string;
}

const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2})$/i;

/** undefined when no Basic credential was presented; throws `unauthorized` when one was, but malformed. */
export function parseBasicCredential(header: string | undefined): BasicCredential | undefined {
  if (header === undefined || header === '') return undefined;
  const m = BASIC.exec(header.trim());
  if (!m) {
    if (/^basic\b/i.test(header.trim())) throw new DispatcherError('unauthorized', 'malformed Basic credential (expected base64 of user:password)');
    throw new DispatcherError('unauthorized', 'only HTTP Basic authentication is offered');
  }
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const parts = text.split(':');
  if (parts.length !== 2) throw new DispatcherError('unauthorized', 'malformed Basic credential: exactly one ":" between user name and password');
  const [user, password] = parts;
  if (!user || !password || /[\0\r\n]/.test(text)) throw new DispatcherError('unauthorized', 'malformed Basic credential: empty user name or password');
  return { user, password };
}
