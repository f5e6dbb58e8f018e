// The console's controller: login, view switching, polling, following an operation's event stream, and
// the actions with their confirmation step. Uses only the public REST API (api.js).
import * as api from './api.js';
import { el, badge, time, fillTable, renderCluster, renderFirewall, renderAudit } from './views.js';

const $ = (id) => document.getElementById(id);
const state = { view: 'cluster', cluster: null, timer: null, follow: null, confirm: null };

function banner(message) {
  $('banner').textContent = message ?? '';
  $('banner').hidden = !message;
}

async function refresh() {
  try {
    if (state.view === 'cluster' || state.view === 'firewall' || state.view === 'actions' || state.view === 'logs') {
      const [view, health] = await Promise.all([api.get('/v1/cluster'), api.get('/v1/cluster/health').catch(() => null)]);
      state.cluster = view;
      if (state.view === 'cluster') renderCluster(view, health);
      if (state.view === 'firewall') renderFirewall(view, await api.get('/v1/cluster/firewall').catch(() => null));
      if (state.view === 'actions') renderActions(view);
      if (state.view === 'logs') fillProcessChoice(view);
    }
    if (state.view === 'operations') await renderOperations();
    if (state.view === 'audit') renderAudit((await api.get('/v1/audit?limit=200')).entries);
    banner(null);
  } catch (e) {
    if (e.status === 401) return showLogin('Your login was refused; log in again.');
    banner(e.message);
  }
}

function show(view) {
  state.view = view;
  for (const b of document.querySelectorAll('#nav button[data-view]')) b.classList.toggle('active', b.dataset.view === view);
  for (const s of document.querySelectorAll('main .view')) s.hidden = s.id !== `view-${view}`;
  void refresh();
}

function showLogin(message) {
  api.logout();
  clearInterval(state.timer);
  state.follow?.abort();
  $('app').hidden = true;
  $('nav').hidden = true;
  $('login').hidden = false;
  $('whoami').textContent = '';
  $('login-error').textContent = message ?? '';
}

async function onLogin(ev) {
  ev.preventDefault();
  const user = $('login-user').value;
  api.login(user, $('login-password').value);
  $('login-password').value = '';
  try {
    const id = await api.get('/v1/id');
    $('whoami').textContent = `${user} @ ${id.id} (${id.endpoint})`;
  } catch (e) {
    return showLogin(e.status === 401 ? 'Wrong user name or password.' : e.message);
  }
  $('login').hidden = true;
  $('app').hidden = false;
  $('nav').hidden = false;
  state.timer = setInterval(refresh, 2000);
  show('cluster');
}

// ---------------------------------------------------------------- operations and their live events
async function renderOperations() {
  const { operations } = await api.get('/v1/operations');
  fillTable(
    'operation-table',
    [...operations].reverse().map((o) =>
      el('tr', { 'data-operation': o.id, 'data-state': o.state }, el('td', {}, time(o.startedAt)), el('td', {}, o.kind), el('td', {}, o.cluster), el('td', {}, badge(o.state)), el('td', {}, el('button', { type: 'button', onclick: () => follow(o.id, o.kind) }, 'Events'))),
    ),
  );
}

function follow(id, kind) {
  state.follow?.abort();
  const abort = new AbortController();
  state.follow = abort;
  $('op-title').textContent = `${kind ?? 'operation'} ${id.slice(0, 8)}`;
  const st = $('op-state');
  st.textContent = 'running';
  st.className = 'badge state-running';
  st.dataset.state = 'running';
  const list = $('op-events');
  list.replaceChildren();
  api
    .stream(
      `/v1/operations/${encodeURIComponent(id)}/events`,
      (o) => {
        if (o.type === 'event') {
          list.append(el('li', { class: `level-${o.level}`, 'data-step': o.step }, `${time(o.at)} ${o.step}${o.process ? ` ${o.process}` : ''}${o.host ? ` @${o.host}` : ''}: ${o.message}${o.durationMs === undefined ? '' : o.durationMs >= 1000 ? ` (${(o.durationMs / 1000).toFixed(2)} s)` : ` (${o.durationMs} ms)`}`));
          list.scrollTop = list.scrollHeight;
        } else if (o.type === 'end') {
          st.textContent = o.state;
          st.className = `badge state-${o.state}`;
          st.dataset.state = o.state;
          void refresh(); // the operation list shows the new state at once
        }
      },
      abort.signal,
    )
    .catch((e) => {
      if (e.name !== 'AbortError') banner(`event stream: ${e.message}`);
    });
}

// ---------------------------------------------------------------- logs
function fillProcessChoice(view) {
  const sel = $('log-process');
  const ids = view.processes.map((p) => p.id).sort();
  if ([...sel.options].map((o) => o.value).join() === ids.join()) return;
  const keep = sel.value;
  sel.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
  if (ids.includes(keep)) sel.value = keep;
}

async function onShowLog(ev) {
  ev.preventDefault();
  const id = $('log-process').value;
  if (!id) return;
  try {
    const r = await api.get(`/v1/cluster/processes/${encodeURIComponent(id)}/log?lines=${encodeURIComponent($('log-lines').value || '200')}`);
    $('log-output').textContent = r.lines.join('\n');
  } catch (e) {
    banner(e.message);
  }
}

// ---------------------------------------------------------------- actions, each with a confirmation step
function renderActions(view) {
  $('action-status').textContent = `Cluster ${view.name ?? '(none)'} is ${view.state}; ${view.activeOperation ? `operation ${view.activeOperation.slice(0, 8)} is running` : 'no operation is running'}.`;
  $('action-restart').disabled = !!view.activeOperation || view.state !== 'running';
  $('action-shutdown').disabled = !!view.activeOperation || !['running', 'failed', 'launching'].includes(view.state);
}

const ACTIONS = {
  restart: {
    text: (name) => `Rolling restart of cluster ${name}: every process is restarted one at a time, with a cluster-health check after each; Patroni hands the DB leadership over before its leader restarts.`,
    typeName: false,
    run: () => api.post('/v1/cluster/restart', {}),
  },
  shutdown: {
    text: (name) => `Shut down cluster ${name}: every process stops, coordinators first. Data and firewall rules stay; relaunch starts it again.`,
    typeName: true,
    run: () => api.post('/v1/cluster/shutdown', {}),
  },
};

function ask(kind) {
  const a = ACTIONS[kind];
  const name = state.cluster?.name ?? '';
  state.confirm = kind;
  $('confirm-text').textContent = a.text(name);
  $('confirm-name-label').hidden = !a.typeName;
  $('confirm-name').value = '';
  $('confirm-yes').disabled = a.typeName;
  $('confirm').hidden = false;
}

async function confirmed() {
  const kind = state.confirm;
  $('confirm').hidden = true;
  state.confirm = null;
  try {
    const r = await ACTIONS[kind].run();
    show('operations');
    follow(r.operation, kind);
  } catch (e) {
    banner(e.message);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => showLogin());
  for (const b of document.querySelectorAll('#nav button[data-view]')) b.addEventListener('click', () => show(b.dataset.view));
  $('log-form').addEventListener('submit', onShowLog);
  $('action-restart').addEventListener('click', () => ask('restart'));
  $('action-shutdown').addEventListener('click', () => ask('shutdown'));
  $('confirm-no').addEventListener('click', () => {
    $('confirm').hidden = true;
    state.confirm = null;
  });
  $('confirm-yes').addEventListener('click', confirmed);
  $('confirm-name').addEventListener('input', () => {
    $('confirm-yes').disabled = $('confirm-name').value !== (state.cluster?.name ?? '');
  });
});
