// Commissaire dashboard: plain JavaScript over the server's own API, no dependencies.
//
// State comes from one read of the API at sign-in, then only from the change feed
// (GET /api/v0/events). EventSource cannot send an Authorization header, so the feed is read
// with fetch() and a streaming reader, and resumed with Last-Event-ID after a reconnect.
// Nothing polls: a view that needs more than the feed carries (a cluster's computed status,
// a host's node view) is re-read when an event about that object arrives.
'use strict';

const API = '/api/v0';
const KINDS = ['restart', 'upgrade', 'deploy'];
const OP_EVENT_KINDS = { ClusterRestart: 'restart', ClusterUpgrade: 'upgrade', ClusterDeploy: 'deploy' };
const HOST_STATES = ['investigating', 'bootstrapping', 'disassociated', 'active', 'failed'];
// Events before the sign-in that are replayed to show recent status history.
const HISTORY_REVISIONS = 2000;
const AUTH_KEY = 'commissaire.auth';

const state = {
  auth: null,
  user: '',
  hosts: new Map(),
  clusters: new Map(),
  ops: new Map(),
  history: new Map(),
  loadedRevision: 0,
  lastId: null,
  live: false,
  checks: 0,
  failures: 0,
  feed: null,
  generation: 0,
};

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function $(sel) { return document.querySelector(sel); }

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function bytes(n) {
  if (!n) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(ts) { return ts ? ts.replace('T', ' ').replace(/\.\d+$/, '') + ' UTC' : '—'; }

function badge(status) {
  return h('span', { class: `badge s-${status}` }, status || '—');
}

function base64(text) {
  const b = new TextEncoder().encode(text);
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The API's own message for a failed answer ({"error": {"message"}}), else the status text.
async function errorOf(r) {
  let msg = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(r.status, msg);
}

function headers(extra) {
  // X-Requested-With asks the server to leave WWW-Authenticate out of a 401, so that a wrong
  // password shows our message instead of the browser's own login prompt.
  return Object.assign({ Authorization: state.auth, 'X-Requested-With': 'XMLHttpRequest' }, extra || {});
}

async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  if (r.status === 401 && state.auth) {
    const e = await errorOf(r);
    signOut(`Signed out: ${e.message}`);
    throw e;
  }
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

function clusterOf(address) {
  for (const c of state.clusters.values()) if (c.hostset.includes(address)) return c.name;
  return '';
}

// ---------------------------------------------------------------- sign-in

async function signIn(user, password) {
  const auth = 'Basic ' + base64(`${user}:${password}`);
  const r = await fetch(API + '/clusters', {
    headers: { Authorization: auth, 'X-Requested-With': 'XMLHttpRequest' }, cache: 'no-store',
  });
  if (!r.ok) throw await errorOf(r);
  state.auth = auth;
  state.user = user;
  sessionStorage.setItem(AUTH_KEY, JSON.stringify({ auth, user }));
}

function signOut(message) {
  state.generation++;
  if (state.feed) state.feed.abort();
  state.auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  for (const m of [state.hosts, state.clusters, state.ops, state.history]) m.clear();
  state.lastId = null;
  showSignIn(message || '');
}

function showSignIn(message) {
  $('#nav').hidden = true;
  $('#session').hidden = true;
  $('#view').replaceChildren();
  $('#signin').hidden = false;
  $('#signin-error').textContent = message;
  $('#signin-user').focus();
}

async function start() {
  $('#signin').hidden = true;
  $('#nav').hidden = false;
  $('#session').hidden = false;
  $('#whoami').textContent = state.user;
  const gen = ++state.generation;
  try {
    await loadAll();
  } catch (e) {
    if (state.generation === gen) showError(e.message);
    return;
  }
  if (state.generation !== gen) return;
  route();
  feedLoop(gen);
}

// ---------------------------------------------------------------- loading

async function loadAll() {
  // The revision first: every change after it comes from the feed, so nothing is missed
  // between this read and the feed's start.
  let revision = 0;
  const st = await fetch(API + '/status', { cache: 'no-store' });
  if (st.ok) revision = (await st.json()).store.revision || 0;
  const hosts = await api('GET', '/hosts');
  const names = await api('GET', '/clusters');
  state.hosts = new Map(hosts.map((x) => [x.address, x]));
  state.clusters = new Map();
  state.ops = new Map();
  await Promise.all(names.map(async (n) => {
    try { state.clusters.set(n, await api('GET', `/cluster/${encodeURIComponent(n)}`)); } catch (e) { if (e.status !== 404) throw e; }
    await Promise.all(KINDS.map(async (k) => {
      try { state.ops.set(`${n}/${k}`, await api('GET', `/cluster/${encodeURIComponent(n)}/${k}`)); } catch (e) { if (e.status !== 404) throw e; }
    }));
  }));
  state.loadedRevision = revision;
  state.lastId = String(Math.max(0, revision - HISTORY_REVISIONS));
  state.replaying = true;
}

const pendingClusters = new Set();
let clusterTimer = null;

// Re-reads clusters whose computed status may have changed (their record or a member's
// state changed); batched so a burst of host events costs one read per cluster.
function refreshCluster(name) {
  if (!name) return;
  pendingClusters.add(name);
  if (clusterTimer) return;
  clusterTimer = setTimeout(async () => {
    clusterTimer = null;
    const names = [...pendingClusters];
    pendingClusters.clear();
    for (const n of names) {
      try {
        state.clusters.set(n, await api('GET', `/cluster/${encodeURIComponent(n)}`));
      } catch (e) {
        if (e.status === 404) state.clusters.delete(n);
      }
    }
    scheduleRender();
  }, 150);
}

// ---------------------------------------------------------------- change feed

function setLive(live, text) {
  state.live = live;
  const el = $('#live');
  el.textContent = text || (live ? 'live' : 'reconnecting…');
  el.className = live ? 'live on' : 'live off';
}

async function feedLoop(gen) {
  let backoff = 1000;
  while (state.generation === gen) {
    const ctrl = new AbortController();
    state.feed = ctrl;
    let reason = 'reconnecting…';
    try {
      const extra = { Accept: 'text/event-stream' };
      if (state.lastId !== null) extra['Last-Event-ID'] = state.lastId;
      const r = await fetch(API + '/events', { headers: headers(extra), signal: ctrl.signal, cache: 'no-store' });
      if (r.status === 401) { const e = await errorOf(r); signOut(`Signed out: ${e.message}`); return; }
      if (r.status === 410) {
        // History no longer kept: without replay, or (after a long outage) from a fresh read.
        if (state.replaying) state.lastId = String(state.loadedRevision);
        else { await loadAll(); state.lastId = String(state.loadedRevision); state.replaying = false; scheduleRender(); }
        continue;
      }
      if (!r.ok) throw await errorOf(r);
      setLive(true);
      backoff = 1000;
      await readStream(r.body, gen);
    } catch (e) {
      if (ctrl.signal.aborted || state.generation !== gen) return;
      reason = `feed: ${e.message}; reconnecting…`;
    }
    if (state.generation !== gen) return;
    setLive(false, reason);
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 15000);
  }
}

async function readStream(body, gen) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done || state.generation !== gen) return;
    buf += value;
    let m;
    while ((m = /\r?\n\r?\n/.exec(buf))) {
      const block = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      handleBlock(block);
    }
  }
}

function handleBlock(block) {
  let id = null;
  let event = 'message';
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  if (event === 'error') {
    try { setLive(false, JSON.parse(data.join('\n')).message); } catch (_) { setLive(false); }
    return;
  }
  let ev;
  try { ev = JSON.parse(data.join('\n')); } catch (_) { return; }
  apply(ev);
  if (id !== null) state.lastId = id;
  if (ev.revision > state.loadedRevision) state.replaying = false;
  scheduleRender();
}

function remember(address, host, revision) {
  const list = state.history.get(address) || [];
  const last = list[list.length - 1];
  if (!last || last.status !== host.status || last.reason !== host.status_reason) {
    list.push({ revision, status: host.status, reason: host.status_reason || '', at: host.last_check || '' });
    if (list.length > 200) list.shift();
    state.history.set(address, list);
  }
}

function apply(ev) {
  const current = ev.revision > state.loadedRevision;
  if (ev.kind === 'Host') {
    if (ev.action !== 'deleted') remember(ev.name, ev.object, ev.revision);
    if (!current) return;
    const prev = state.hosts.get(ev.name);
    if (ev.action === 'deleted') state.hosts.delete(ev.name);
    else {
      const host = ev.object;
      if (prev && host.last_check && host.last_check !== prev.last_check) state.checks++;
      if (host.status === 'failed' && (!prev || prev.status !== 'failed')) state.failures++;
      state.hosts.set(ev.name, host);
      hostChanged(ev.name);
    }
    refreshCluster(clusterOf(ev.name));
  } else if (!current) {
    return;
  } else if (ev.kind === 'Cluster') {
    if (ev.action === 'deleted') {
      state.clusters.delete(ev.name);
      for (const k of KINDS) state.ops.delete(`${ev.name}/${k}`);
    } else refreshCluster(ev.name);
  } else if (OP_EVENT_KINDS[ev.kind]) {
    const key = `${ev.name}/${OP_EVENT_KINDS[ev.kind]}`;
    if (ev.action === 'deleted') state.ops.delete(key);
    else state.ops.set(key, ev.object);
  }
}

// ---------------------------------------------------------------- rendering

let current = null; // { name, arg, update() }
let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (current && current.update) current.update();
  });
}

function showError(message) {
  const el = $('#view-error');
  if (el) el.textContent = message;
}

function errorBox() { return h('p', { id: 'view-error', class: 'error', role: 'alert' }); }

function route() {
  if (!state.auth) return;
  const hash = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  const parts = hash.split('/').filter(Boolean);
  hostChanged = () => {};
  let view;
  if (parts[0] === 'hosts') view = hostsView();
  else if (parts[0] === 'host' && parts[1]) view = hostView(parts.slice(1).join('/'));
  else if (parts[0] === 'clusters') view = clustersView();
  else if (parts[0] === 'cluster' && parts[1]) view = clusterView(parts[1]);
  else view = overviewView();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  current = view;
  $('#view').replaceChildren(view.root);
  document.title = `${view.title} · Commissaire`;
  view.update();
}

function table(caption, columns, id) {
  const thead = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c))));
  const tbody = h('tbody');
  return { el: h('table', { id }, h('caption', {}, caption), thead, tbody), tbody };
}

// Overview -----------------------------------------------------------------

function overviewView() {
  const counts = h('dl', { class: 'counts', id: 'host-counts' });
  const live = h('dl', { class: 'counts', id: 'live-counts' });
  const t = table('Clusters', ['Cluster', 'Status', 'Available / total', 'Operation'], 'overview-clusters');
  const root = h('section', { 'aria-labelledby': 'v-title' },
    h('h2', { id: 'v-title' }, 'Fleet overview'), errorBox(),
    h('div', { class: 'cards' },
      h('section', { class: 'card', 'aria-labelledby': 'c-hosts' }, h('h3', { id: 'c-hosts' }, 'Hosts by status'), counts),
      h('section', { class: 'card', 'aria-labelledby': 'c-live' }, h('h3', { id: 'c-live' }, 'Live (since sign-in)'), live)),
    t.el);
  return {
    nav: 'overview', title: 'Overview', root,
    update() {
      const by = Object.fromEntries(HOST_STATES.map((s) => [s, 0]));
      for (const x of state.hosts.values()) by[x.status] = (by[x.status] || 0) + 1;
      counts.replaceChildren(h('dt', {}, 'total'), h('dd', { id: 'hosts-total' }, state.hosts.size),
        ...HOST_STATES.flatMap((s) => [h('dt', {}, badge(s)), h('dd', { id: `hosts-${s}` }, by[s])]));
      live.replaceChildren(
        h('dt', {}, 'Checks seen'), h('dd', { id: 'live-checks' }, state.checks),
        h('dt', {}, 'Failures seen'), h('dd', { id: 'live-failures' }, state.failures),
        h('dt', {}, 'Clusters'), h('dd', { id: 'clusters-total' }, state.clusters.size),
        h('dt', {}, 'Last event'), h('dd', {}, state.lastId === null ? '—' : state.lastId));
      t.tbody.replaceChildren(...clusterRows((c) => [
        h('td', {}, h('a', { href: `#/cluster/${encodeURIComponent(c.name)}` }, c.name)),
        h('td', { class: 'status' }, badge(c.status)),
        h('td', {}, `${c.hosts.available} / ${c.hosts.total}`),
        h('td', {}, activeOp(c.name)),
      ]));
    },
  };
}

function clusterRows(cells) {
  const list = [...state.clusters.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!list.length) return [h('tr', {}, h('td', { colspan: 9 }, 'No clusters.'))];
  return list.map((c) => h('tr', { 'data-cluster': c.name }, cells(c)));
}

function activeOp(cluster) {
  for (const k of KINDS) {
    const op = state.ops.get(`${cluster}/${k}`);
    if (op && (op.status === 'in_process' || op.status === 'paused')) {
      const done = (op[doneField(k)] || []).length;
      return h('span', {}, `${k} `, badge(op.status), ` ${done}/${op.order.length}`);
    }
  }
  return '—';
}

function doneField(kind) { return { restart: 'restarted', upgrade: 'upgraded', deploy: 'deployed' }[kind]; }

// Hosts ----------------------------------------------------------------------

const HOST_COLUMNS = [
  ['address', 'Address'], ['status', 'Status'], ['cluster', 'Cluster'], ['os', 'OS'],
  ['cpus', 'CPUs'], ['memory', 'Memory'], ['space', 'Disk'], ['last_check', 'Last check'],
];

function hostsView() {
  const sort = { key: 'address', dir: 1 };
  const filter = h('input', { id: 'hosts-filter', type: 'search', placeholder: 'address, OS, cluster, reason…' });
  const statusSel = h('select', { id: 'hosts-status' }, h('option', { value: '' }, 'any'),
    HOST_STATES.map((s) => h('option', { value: s }, s)));
  const head = h('tr');
  const tbody = h('tbody');
  const count = h('p', { id: 'hosts-count', role: 'status' });
  const tbl = h('table', { id: 'hosts-table' }, h('caption', {}, 'Hosts'), h('thead', {}, head), tbody);
  // The header is rebuilt only when the sort changes (live updates rebuild the body alone), so
  // a focused sort button keeps the focus while events arrive.
  const renderHead = (focusKey) => {
    head.replaceChildren(...HOST_COLUMNS.map(([key, label]) => h('th', {
      scope: 'col', 'aria-sort': sort.key === key ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none',
    }, h('button', {
      type: 'button', class: 'sort', 'data-key': key,
      onclick: () => { sort.dir = sort.key === key ? -sort.dir : 1; sort.key = key; renderHead(key); update(); },
    }, label, sort.key === key ? (sort.dir > 0 ? ' ▲' : ' ▼') : ''))));
    if (focusKey) head.querySelector(`button[data-key="${focusKey}"]`).focus();
  };
  renderHead();
  const update = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = [...state.hosts.values()].map((x) => Object.assign({ cluster: clusterOf(x.address) }, x))
      .filter((x) => !statusSel.value || x.status === statusSel.value)
      .filter((x) => !q || [x.address, x.status, x.status_reason, x.cluster, x.os, x.distribution, x.os_version].join(' ').toLowerCase().includes(q))
      .sort((a, b) => {
        const x = a[sort.key];
        const y = b[sort.key];
        return (typeof x === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true })) * sort.dir;
      });
    count.textContent = `${rows.length} of ${state.hosts.size} hosts`;
    tbody.replaceChildren(...(rows.length ? rows.map((x) => h('tr', { 'data-address': x.address },
      h('th', { scope: 'row' }, h('a', { href: `#/host/${encodeURIComponent(x.address)}` }, x.address)),
      h('td', { class: 'status' }, badge(x.status), x.status_reason ? h('div', { class: 'reason' }, x.status_reason) : null),
      h('td', {}, x.cluster ? h('a', { href: `#/cluster/${encodeURIComponent(x.cluster)}` }, x.cluster) : '—'),
      h('td', {}, x.os ? `${x.distribution || x.os} ${x.os_version}${x.ostree ? ' (atomic)' : ''}` : '—'),
      h('td', { class: 'num' }, x.cpus || '—'),
      h('td', { class: 'num' }, bytes(x.memory * 1024)),
      h('td', { class: 'num' }, bytes(x.space)),
      h('td', {}, when(x.last_check)))) : [h('tr', {}, h('td', { colspan: 8 }, 'No hosts match.'))]));
  };
  filter.addEventListener('input', update);
  statusSel.addEventListener('change', update);
  const root = h('section', { 'aria-labelledby': 'v-title' }, h('h2', { id: 'v-title' }, 'Hosts'), errorBox(),
    h('div', { class: 'filters' },
      h('label', { for: 'hosts-filter' }, 'Filter'), filter,
      h('label', { for: 'hosts-status' }, 'Status'), statusSel),
    count, tbl);
  return { nav: 'hosts', title: 'Hosts', root, update };
}

// Host -----------------------------------------------------------------------

let hostChanged = () => {};

function hostView(address) {
  const facts = h('dl', { class: 'facts', id: 'host-facts' });
  const hist = h('ol', { id: 'host-history', class: 'history' });
  const node = h('div', { id: 'host-node' });
  const key = h('div', { id: 'host-key' });
  const root = h('section', { 'aria-labelledby': 'v-title' },
    h('h2', { id: 'v-title' }, `Host ${address}`), errorBox(),
    h('div', { class: 'cards' },
      h('section', { class: 'card', 'aria-labelledby': 'h-facts' }, h('h3', { id: 'h-facts' }, 'Facts'), facts),
      h('section', { class: 'card', 'aria-labelledby': 'h-node' }, h('h3', { id: 'h-node' }, 'Node'), node),
      h('section', { class: 'card', 'aria-labelledby': 'h-key' }, h('h3', { id: 'h-key' }, 'SSH host key'), key)),
    h('section', { 'aria-labelledby': 'h-hist' }, h('h3', { id: 'h-hist' }, 'Status history (from the change feed)'), hist));
  // Node view and host key are not in the feed's host record: read on arrival and whenever an
  // event about this host comes in.
  const readExtras = async () => {
    try {
      const st = await api('GET', `/host/${encodeURIComponent(address)}/status`);
      const cm = st.container_manager || {};
      node.replaceChildren(cm.node ? h('dl', { class: 'facts' },
        h('dt', {}, 'Manager'), h('dd', {}, cm.container_manager),
        h('dt', {}, 'Registered'), h('dd', {}, cm.registered ? 'yes' : 'no'),
        h('dt', {}, 'Ready'), h('dd', {}, cm.ready ? 'yes' : 'no'),
        h('dt', {}, 'Schedulable'), h('dd', {}, cm.unschedulable ? 'no (cordoned)' : 'yes'),
        h('dt', {}, 'Kubelet'), h('dd', {}, cm.kubelet_version || '—'),
        h('dt', {}, 'Reason'), h('dd', {}, cm.reason || '—'),
        h('dt', {}, 'Checked'), h('dd', {}, when(cm.checked_at))) : h('p', {}, `No container manager node (${st.type}).`));
    } catch (e) { node.replaceChildren(h('p', { class: 'error' }, e.message)); }
    try {
      const k = await api('GET', `/host/${encodeURIComponent(address)}/hostkey`);
      key.replaceChildren(h('dl', { class: 'facts' },
        h('dt', {}, 'Fingerprint'), h('dd', { id: 'host-fingerprint' }, h('code', {}, k.fingerprint)),
        h('dt', {}, 'Trusted since'), h('dd', {}, when(k.trusted_at))));
    } catch (e) { key.replaceChildren(h('p', {}, e.message)); }
  };
  hostChanged = (a) => { if (a === address) readExtras(); };
  readExtras();
  return {
    nav: 'hosts', title: address, root,
    update() {
      const x = state.hosts.get(address);
      if (!x) { facts.replaceChildren(h('p', {}, 'This host does not exist (any more).')); return; }
      const cluster = clusterOf(address);
      facts.replaceChildren(
        h('dt', {}, 'Status'), h('dd', { class: 'status', id: 'host-status' }, badge(x.status)),
        h('dt', {}, 'Reason'), h('dd', {}, x.status_reason || '—'),
        h('dt', {}, 'Cluster'), h('dd', {}, cluster ? h('a', { href: `#/cluster/${encodeURIComponent(cluster)}` }, cluster) : '—'),
        h('dt', {}, 'OS'), h('dd', {}, x.os ? `${x.os} (${x.distribution || x.os} ${x.os_version})` : '—'),
        h('dt', {}, 'OSTree'), h('dd', {}, x.ostree ? 'yes' : 'no'),
        h('dt', {}, 'CPUs'), h('dd', {}, x.cpus || '—'),
        h('dt', {}, 'Memory'), h('dd', {}, bytes(x.memory * 1024)),
        h('dt', {}, 'Disk'), h('dd', {}, bytes(x.space)),
        h('dt', {}, 'Bootstrapped'), h('dd', {}, x.bootstrapped ? 'yes' : 'no'),
        h('dt', {}, 'Boot id'), h('dd', {}, h('code', {}, x.boot_id || '—')),
        h('dt', {}, 'Last check'), h('dd', {}, when(x.last_check)));
      const list = state.history.get(address) || [];
      hist.replaceChildren(...(list.length ? [...list].reverse().map((e) => h('li', {},
        badge(e.status), ` revision ${e.revision}`, e.at ? `, checked ${when(e.at)}` : '', e.reason ? h('div', { class: 'reason' }, e.reason) : null))
        : [h('li', {}, 'No changes seen yet.')]));
    },
  };
}

// Clusters -------------------------------------------------------------------

function clustersView() {
  const t = table('Clusters', ['Cluster', 'Status', 'Available / total', 'Network', 'Container manager', 'Operation'], 'clusters-table');
  const root = h('section', { 'aria-labelledby': 'v-title' }, h('h2', { id: 'v-title' }, 'Clusters'), errorBox(), t.el);
  return {
    nav: 'clusters', title: 'Clusters', root,
    update() {
      t.tbody.replaceChildren(...clusterRows((c) => [
        h('th', { scope: 'row' }, h('a', { href: `#/cluster/${encodeURIComponent(c.name)}` }, c.name)),
        h('td', { class: 'status' }, badge(c.status)),
        h('td', {}, `${c.hosts.available} / ${c.hosts.total}`),
        h('td', {}, c.network),
        h('td', {}, c.container_manager || '—'),
        h('td', {}, activeOp(c.name)),
      ]));
    },
  };
}

// Cluster --------------------------------------------------------------------

function field(id, label, input, hint) {
  return h('p', { class: 'field' }, h('label', { for: id }, label), input,
    hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function clusterView(name) {
  const summary = h('dl', { class: 'facts', id: 'cluster-summary' });
  const members = table('Members', ['Host', 'Status', 'OS', 'Last check'], 'cluster-members');
  const ops = h('div', { id: 'cluster-ops' });
  const formError = h('p', { id: 'op-error', class: 'error', role: 'alert' });
  const kind = h('select', { id: 'op-kind', name: 'kind' }, KINDS.map((k) => h('option', { value: k }, k)));
  const batch = h('input', { id: 'op-batch', name: 'batch_size', placeholder: '1', 'aria-describedby': 'op-batch-hint' });
  const maxFail = h('input', { id: 'op-maxfail', name: 'max_failures', placeholder: '0', 'aria-describedby': 'op-maxfail-hint' });
  const pause = h('input', { id: 'op-pause', name: 'pause_seconds', type: 'number', min: 0, max: 86400, step: 'any', placeholder: '0' });
  const timeout = h('input', { id: 'op-timeout', name: 'timeout_seconds', type: 'number', min: 1, max: 86400, placeholder: '600' });
  const drain = h('select', { id: 'op-drain', name: 'drain' },
    h('option', { value: '' }, 'default (when the cluster has a manager)'), h('option', { value: 'true' }, 'yes'), h('option', { value: 'false' }, 'no'));
  const reboot = h('input', { id: 'op-reboot', name: 'reboot', type: 'checkbox' });
  const version = h('input', { id: 'op-version', name: 'version', placeholder: '7.2.1' });
  const rebootField = field('op-reboot', 'Reboot after upgrade', reboot);
  const versionField = field('op-version', 'OSTree version (required)', version);
  const syncKind = () => {
    rebootField.hidden = kind.value !== 'upgrade';
    versionField.hidden = kind.value !== 'deploy';
  };
  kind.addEventListener('change', syncKind);
  syncKind();
  const amount = (v) => (/^\d+$/.test(v) ? Number(v) : v);
  const form = h('form', { id: 'op-form', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'Start a rolling operation'),
      field('op-kind', 'Operation', kind),
      field('op-batch', 'Batch size', batch, 'hosts at once: a number or a percentage such as 25%'),
      field('op-maxfail', 'Max failures', maxFail, 'failed hosts tolerated: a number or a percentage'),
      field('op-pause', 'Pause between batches (s)', pause),
      field('op-timeout', 'Timeout per host (s)', timeout),
      field('op-drain', 'Drain nodes', drain),
      rebootField, versionField,
      h('p', {}, h('button', { type: 'submit', id: 'op-start' }, 'Start')), formError));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formError.textContent = '';
    const body = {};
    if (batch.value.trim()) body.batch_size = amount(batch.value.trim());
    if (maxFail.value.trim()) body.max_failures = amount(maxFail.value.trim());
    if (pause.value !== '') body.pause_seconds = Number(pause.value);
    if (timeout.value !== '') body.timeout_seconds = Number(timeout.value);
    if (drain.value) body.drain = drain.value === 'true';
    if (kind.value === 'upgrade' && reboot.checked) body.reboot = true;
    if (kind.value === 'deploy') body.version = version.value.trim();
    try {
      const op = await api('PUT', `/cluster/${encodeURIComponent(name)}/${kind.value}`, body);
      state.ops.set(`${name}/${kind.value}`, op);
      scheduleRender();
    } catch (err) { formError.textContent = err.message; }
  });
  const control = async (k, action) => {
    formError.textContent = '';
    const path = `/cluster/${encodeURIComponent(name)}/${k}`;
    try {
      const op = action === 'cancel' ? await api('DELETE', path) : await api('PUT', `${path}/${action}`);
      state.ops.set(`${name}/${k}`, op);
      scheduleRender();
    } catch (err) { formError.textContent = err.message; }
  };
  const root = h('section', { 'aria-labelledby': 'v-title' },
    h('h2', { id: 'v-title' }, `Cluster ${name}`), errorBox(),
    h('div', { class: 'cards' },
      h('section', { class: 'card', 'aria-labelledby': 'c-sum' }, h('h3', { id: 'c-sum' }, 'Summary'), summary),
      h('section', { class: 'card wide' }, form)),
    h('section', { 'aria-labelledby': 'c-ops' }, h('h3', { id: 'c-ops' }, 'Rolling operations'), ops),
    members.el);
  return {
    nav: 'clusters', title: name, root,
    update() {
      const c = state.clusters.get(name);
      if (!c) { summary.replaceChildren(h('p', {}, 'This cluster does not exist (any more).')); return; }
      summary.replaceChildren(
        h('dt', {}, 'Status'), h('dd', { class: 'status', id: 'cluster-status' }, badge(c.status)),
        h('dt', {}, 'Available / total'), h('dd', { id: 'cluster-available' }, `${c.hosts.available} / ${c.hosts.total}`),
        h('dt', {}, 'Network'), h('dd', {}, c.network),
        h('dt', {}, 'Container manager'), h('dd', {}, c.container_manager || '—'),
        ...(c.nodes ? [h('dt', {}, 'Nodes ready'), h('dd', {}, `${c.nodes.ready} of ${c.nodes.registered} registered, ${c.nodes.unschedulable} cordoned`)] : []));
      members.tbody.replaceChildren(...(c.hostset.length ? c.hostset.map((a) => {
        const x = state.hosts.get(a) || { status: '' };
        return h('tr', { 'data-address': a },
          h('th', { scope: 'row' }, h('a', { href: `#/host/${encodeURIComponent(a)}` }, a)),
          h('td', { class: 'status' }, badge(x.status), x.status_reason ? h('div', { class: 'reason' }, x.status_reason) : null),
          h('td', {}, x.os || '—'), h('td', {}, when(x.last_check)));
      }) : [h('tr', {}, h('td', { colspan: 4 }, 'No members.'))]));
      const records = KINDS.map((k) => [k, state.ops.get(`${name}/${k}`)]).filter(([, op]) => op);
      ops.replaceChildren(...(records.length ? records.map(([k, op]) => opView(k, op, control)) : [h('p', {}, 'No rolling operation has run on this cluster.')]));
    },
  };
}

function amountOf(a, total) {
  if (typeof a === 'string' && a.endsWith('%')) return Math.max(1, Math.ceil((total * parseInt(a, 10)) / 100));
  return Math.max(1, Number(a) || 1);
}

function opView(kind, op, control) {
  const total = op.order.length;
  const done = (op[doneField(kind)] || []).length;
  const active = op.status === 'in_process' || op.status === 'paused';
  const size = amountOf(op.options.batch_size, total);
  const batches = [];
  for (let i = 0; i < total; i += size) batches.push(op.order.slice(i, i + size));
  const stepOf = (a) => (op.hosts[a] || { state: 'pending' });
  return h('article', { class: 'op', id: `op-${kind}`, 'aria-labelledby': `op-${kind}-title` },
    h('h4', { id: `op-${kind}-title` }, `${kind[0].toUpperCase()}${kind.slice(1)}${op.version ? ` to ${op.version}` : ''}: `,
      h('span', { id: `op-status-${kind}`, class: `badge s-${op.status}` }, op.status)),
    h('p', {}, h('progress', { max: total || 1, value: done, 'aria-label': `${kind} progress` }),
      ` ${done} of ${total} done, ${op.failed.length} failed`, op.cancel_requested && active ? ', cancel requested' : ''),
    h('p', { class: 'meta' }, `started ${when(op.started_at)}`, op.finished_at ? `, ended ${when(op.finished_at)}` : '',
      `; batch size ${op.options.batch_size}, max failures ${op.options.max_failures}, drain ${op.options.drain ? 'yes' : 'no'}`),
    op.reason ? h('p', { class: 'error', id: `op-reason-${kind}` }, op.reason) : null,
    active ? h('p', { class: 'controls' },
      op.status === 'in_process' ? h('button', { type: 'button', id: `op-pause-${kind}`, onclick: () => control(kind, 'pause') }, 'Pause') : null,
      op.status === 'paused' ? h('button', { type: 'button', id: `op-resume-${kind}`, onclick: () => control(kind, 'resume') }, 'Resume') : null,
      h('button', { type: 'button', id: `op-cancel-${kind}`, class: 'danger', onclick: () => control(kind, 'cancel') }, 'Cancel')) : null,
    h('ol', { class: 'batches' }, batches.map((b, i) => {
      const states = b.map((a) => stepOf(a).state);
      const summary = states.every((s) => s === 'done') ? 'done'
        : states.some((s) => s === 'failed') && states.every((s) => s === 'done' || s === 'failed') ? 'failed'
          : states.every((s) => s === 'pending') ? 'pending' : 'running';
      return h('li', {}, h('span', { class: `badge s-${summary}` }, `batch ${i + 1}: ${summary}`), ' ', b.join(', '));
    })),
    h('table', { class: 'progress' }, h('caption', {}, `Hosts of the ${kind}`),
      h('thead', {}, h('tr', {}, ['Host', 'Batch', 'Step', 'Started', 'Finished', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, op.order.map((a, i) => {
        const p = stepOf(a);
        return h('tr', { 'data-address': a },
          h('th', { scope: 'row' }, a), h('td', { class: 'num' }, Math.floor(i / size) + 1),
          h('td', {}, badge(p.state)), h('td', {}, when(p.started_at)), h('td', {}, when(p.finished_at)),
          h('td', { class: 'reason' }, p.error || ''));
      }))));
}

// ---------------------------------------------------------------- wiring

window.addEventListener('hashchange', () => { route(); $('#main').focus(); });
document.addEventListener('DOMContentLoaded', () => {
  $('#signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const err = $('#signin-error');
    err.textContent = '';
    const user = $('#signin-user').value;
    const password = $('#signin-password').value;
    if (!user || !password) { err.textContent = 'Enter a user and a password.'; return; }
    $('#signin-submit').disabled = true;
    try {
      await signIn(user, password);
      $('#signin-password').value = '';
      await start();
    } catch (ex) {
      err.textContent = ex.message;
    } finally {
      $('#signin-submit').disabled = false;
    }
  });
  $('#signout').addEventListener('click', () => signOut(''));
  const saved = sessionStorage.getItem(AUTH_KEY);
  if (saved) {
    try {
      const s = JSON.parse(saved);
      state.auth = s.auth;
      state.user = s.user;
      start();
      return;
    } catch (_) { sessionStorage.removeItem(AUTH_KEY); }
  }
  showSignIn('');
});
