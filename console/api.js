// The console's only way to the dispatcher: its public REST API, with the user's Basic credentials.
// The credentials live in this module's memory only (no storage, no cookie): reloading the page logs out.

let authorization = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function login(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  authorization = 'Basic ' + btoa(String.fromCharCode(...bytes));
}

export function logout() {
  authorization = null;
}

function headers(extra = {}) {
  // x-dispatcher-console: the server then leaves WWW-Authenticate off its 401s, so the browser shows
  // no login prompt of its own over ours.
  return { authorization, 'x-dispatcher-console': '1', accept: 'application/json', ...extra };
}

async function fail(res) {
  let message = `${res.status} ${res.statusText}`;
  try {
    const problem = await res.json();
    if (problem.detail) message = problem.detail;
    if (Array.isArray(problem.problems) && problem.problems.length) message += ': ' + problem.problems.map((p) => `${p.path} ${p.message}`).join('; ');
  } catch {
    /* not problem+json */
  }
  throw new ApiError(res.status, message);
}

export async function get(path) {
  const res = await fetch(path, { headers: headers(), cache: 'no-store' });
  if (!res.ok) await fail(res);
  return res.json();
}

export async function post(path, body = {}) {
  const res = await fetch(path, { method: 'POST', headers: headers({ 'content-type': 'application/json' }), body: JSON.stringify(body), cache: 'no-store' });
  if (!res.ok) await fail(res);
  return res.status === 204 ? {} : res.json();
}

/** Reads an NDJSON stream (GET /v1/operations/{id}/events) line by line until it ends or `signal` aborts. */
export async function stream(path, onObject, signal) {
  const res = await fetch(path, { headers: headers({ accept: 'application/x-ndjson' }), cache: 'no-store', signal });
  if (!res.ok) await fail(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) onObject(JSON.parse(line));
    }
  }
}
