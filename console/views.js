// Rendering helpers and the table views. Data is only ever put into the page as text (textContent),
// never as HTML, so nothing a process log or a host name contains can run in the page.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else if (k === 'onclick') e.addEventListener('click', v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

export const badge = (text, cls = `state-${text}`) => el('span', { class: `badge ${cls}` }, text);
export const yesNo = (v) => (v === null || v === undefined ? badge('unknown', '') : badge(v ? 'yes' : 'no', v ? 'yes' : 'no'));
export const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '—');

export function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

export function renderCluster(view, health) {
  document.getElementById('cluster-name').textContent = view.name ?? '(none)';
  const st = document.getElementById('cluster-state');
  st.textContent = view.state;
  st.className = `badge state-${view.state}`;
  const lag = new Map((health?.dbservers?.members ?? []).map((m) => [m.id, m]));
  const facts = [
    ['Agency leader', health?.checked ? health.agency.leader ?? 'none' : '—'],
    ['Agents answering', health?.checked ? `${health.agency.members.filter((m) => m.reachable).length}/${health.agency.members.length}` : '—'],
    ['DB leader', health?.checked ? health.dbservers.leader ?? 'none' : '—'],
    ['Operation running', view.activeOperation ?? 'none'],
  ];
  document.getElementById('cluster-health').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-fact': k }, v)]));
  const agencyLeader = health?.agency?.leader;
  const procs = [...view.processes].sort((a, b) => a.host.localeCompare(b.host) || a.id.localeCompare(b.id));
  fillTable(
    'process-table',
    procs.map((p) => {
      const m = lag.get(p.id);
      const leaderLag = p.id === agencyLeader ? 'etcd leader' : m ? (m.role === 'leader' ? 'DB leader' : `replica, lag ${m.lagBytes ?? '?'} B`) : '';
      return [
        el('tr', { 'data-process': p.id, 'data-state': p.state }, el('td', {}, p.host), el('td', {}, p.id), el('td', {}, p.role), el('td', {}, badge(p.state)), el('td', {}, p.pid ?? '—'), el('td', {}, time(p.readySince)), el('td', {}, p.restarts), el('td', {}, leaderLag)),
        // Its companions (pg-ha: the coordinator's PgBouncer) right under it, with their own state.
        ...(p.companions ?? []).map((c) =>
          el('tr', { 'data-process': c.id, 'data-state': c.state, 'data-companion-of': p.id }, el('td', {}, p.host), el('td', {}, c.id), el('td', {}, `${p.role} ${c.name}`), el('td', {}, badge(c.state)), el('td', {}, c.pid ?? '—'), el('td', {}, time(c.readySince)), el('td', {}, c.restarts), el('td', {}, '')),
        ),
      ];
    }).flat(),
  );
  fillTable(
    'dispatcher-table',
    view.dispatchers.map((d) =>
      el('tr', { 'data-dispatcher': d.id }, el('td', {}, d.id), el('td', {}, d.endpoint), el('td', {}, yesNo(d.reachable), d.error ? ` ${d.error}` : ''), el('td', {}, d.guard ? `${d.guard.backend}, in sync: ${d.guard.inSync ? 'yes' : 'no'}` : '—')),
    ),
  );
}

/** Which source classes a port of this exposure admits (docs/FIREWALL.md). */
export function reachers(exposure) {
  return { cluster: true, operator: exposure !== 'cluster', client: exposure === 'public' };
}

export function renderFirewall(view, policy) {
  const fw = policy?.firewall;
  const hosts = (policy?.clusterHosts ?? []).map((h) => `${h.id} (${h.addresses.join(', ')})`).join('; ');
  document.getElementById('firewall-summary').textContent = fw
    ? `backend ${fw.backend}, mode ${fw.mode ?? 'allow'} · operators: ${fw.operatorSources.join(', ') || 'cluster hosts only'} · clients: ${fw.clientSources.join(', ')} · cluster hosts: ${hosts}`
    : 'no firewall policy (no cluster)';
  const who = (ok, sources) => (ok ? badge(sources ? `yes: ${sources}` : 'yes', 'yes') : badge('no', 'no'));
  // Operators and clients reach a port only when its exposure admits them AND their source list is not empty.
  const operators = fw?.operatorSources ?? [];
  const clients = fw?.clientSources ?? [];
  const cell = (admits, list) => who(admits && list.length > 0, admits ? list.join(', ') : '');
  const rows = [];
  for (const d of view.dispatchers) {
    const port = (() => {
      try {
        return new URL(d.endpoint).port;
      } catch {
        return '?';
      }
    })();
    rows.push(el('tr', { 'data-port': `${d.id}/dispatcher` }, el('td', {}, d.id), el('td', {}, 'dispatcher (HTTPS)'), el('td', {}, port), el('td', {}, 'operator'), el('td', {}, who(true)), el('td', {}, cell(true, operators)), el('td', {}, cell(false, clients))));
  }
  for (const p of [...view.processes].sort((a, b) => a.host.localeCompare(b.host) || a.id.localeCompare(b.id))) {
    for (const port of p.ports) {
      const r = reachers(port.exposure);
      rows.push(
        el('tr', { 'data-port': `${p.id}/${port.name}` }, el('td', {}, p.host), el('td', {}, `${p.id} / ${port.name}`), el('td', {}, port.port), el('td', {}, port.exposure), el('td', {}, who(r.cluster)), el('td', {}, cell(r.operator, operators)), el('td', {}, cell(r.client, clients))),
      );
    }
  }
  fillTable('firewall-matrix', rows);
  fillTable(
    'guard-table',
    view.dispatchers.map((d) => {
      const g = d.guard;
      return el('tr', { 'data-guard': d.id }, el('td', {}, d.id), el('td', {}, g?.backend ?? '—'), el('td', {}, g ? yesNo(g.inSync) : '—'), el('td', {}, g?.driftRepairs ?? '—'), el('td', {}, time(g?.lastAppliedAt)), el('td', {}, g?.pendingConfirmUntil ? time(g.pendingConfirmUntil) : '—'), el('td', {}, g?.warnings?.join('; ') || g?.note || ''));
    }),
  );
}

export function renderAudit(entries) {
  fillTable(
    'audit-table',
    entries.map((e) =>
      el('tr', { 'data-seq': e.seq }, el('td', {}, new Date(e.at).toLocaleString()), el('td', {}, e.user ?? '—'), el('td', {}, e.source), el('td', {}, e.action), el('td', {}, badge(e.outcome, e.outcome === 'success' ? 'yes' : 'no')), el('td', {}, e.operation ? `${e.operation.slice(0, 8)} ${e.operationState ?? ''}` : '')),
    ),
  );
}
