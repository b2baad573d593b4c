// cutover's dashboard. Plain JavaScript, no libraries: it logs in with the
// token from the URL fragment (#token=...; never sent to a server), then
// reads the admin API every second with its session cookie and draws what
// it sees. Every value from the API reaches the page through textContent,
// never as HTML.
'use strict';
(function () {
  const PERIOD_MS = 1000;          // one update a second
  const WINDOW_MS = 5 * 60 * 1000; // charts show the last five minutes
  const UI_HEADER = { 'X-Cutover-UI': '1' };

  const $ = (sel) => document.querySelector(sel);
  const series = new Map(); // chart key → [{t, rps, err, p99}]
  const counters = new Map(); // key → {t, served}: rps from the served counters when the API has no rps
  let timer = null;
  let polling = false;
  let pending = null; // the operation the confirmation dialog asks about

  class AuthError extends Error {}

  // el builds an element: el('td', {class: 'num', text: '3'}, child, ...).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // sync makes parent's children the given nodes, in order, matched by
  // data-key: a child whose HTML is unchanged stays as it is (so a button
  // does not vanish under the pointer while nothing about it changed),
  // others are replaced, added or removed.
  function sync(parent, nodes) {
    const keys = new Set();
    nodes.forEach((node, i) => {
      const key = node.getAttribute('data-key');
      keys.add(key);
      let use = node;
      const old = Array.from(parent.children).find((c) => c.getAttribute('data-key') === key);
      if (old && old !== node) {
        if (old.outerHTML === node.outerHTML) use = old; else old.replaceWith(node);
      }
      if (parent.children[i] !== use) parent.insertBefore(use, parent.children[i] || null);
    });
    for (const c of Array.from(parent.children)) {
      if (!keys.has(c.getAttribute('data-key'))) c.remove();
    }
  }

  async function getJSON(path) {
    const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) throw new AuthError('not logged in');
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.error && body.error.message) || r.status + ' ' + r.statusText);
    return body;
  }

  async function login(token) {
    const r = await fetch('/ui/login', {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: token }),
    });
    if (r.status === 204) return null;
    const body = await r.json().catch(() => null);
    return (body && body.error && body.error.message) || 'login refused (' + r.status + ')';
  }

  function showLogin(msg) {
    clearTimeout(timer);
    $('#app').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = msg || '';
    setConn(msg ? 'not logged in' : 'log in to see cutover', !!msg);
  }

  function showApp() {
    $('#login').hidden = true;
    $('#app').hidden = false;
    $('#logout').hidden = false;
  }

  function setConn(text, bad) {
    const c = $('#conn');
    c.textContent = text;
    c.classList.toggle('bad', !!bad);
  }

  function showMessage(kind, text) {
    const m = $('#message');
    m.hidden = false;
    m.className = kind;
    m.setAttribute('data-kind', kind);
    m.textContent = text;
  }

  async function poll() {
    if (polling) return;
    polling = true;
    clearTimeout(timer);
    const started = Date.now();
    try {
      const [st, hi] = await Promise.all([getJSON('/v1/status'), getJSON('/v1/history')]);
      showApp();
      renderServices(st.services || [], st.state_error);
      renderHistory(hi.entries || []);
      setConn('live · updated ' + new Date().toLocaleTimeString(), false);
      timer = setTimeout(poll, Math.max(50, PERIOD_MS - (Date.now() - started)));
    } catch (e) {
      if (e instanceof AuthError) {
        showLogin($('#app').hidden ? '' : 'the session ended — log in again');
      } else {
        setConn('cannot reach cutover: ' + e.message, true);
        timer = setTimeout(poll, PERIOD_MS);
      }
    } finally {
      polling = false;
    }
  }

  // rate records one reading of a counter and returns its rate per second
  // since the last one (null on the first).
  function rate(key, served, now) {
    const last = counters.get(key);
    counters.set(key, { t: now, served: served });
    if (!last || now <= last.t || served < last.served) return null;
    return (served - last.served) * 1000 / (now - last.t);
  }

  function sample(key, s, now) {
    let list = series.get(key);
    if (!list) { list = []; series.set(key, list); }
    list.push({ t: now, rps: s.rps, err: s.err, p99: s.p99 });
    while (list.length && list[0].t < now - WINDOW_MS) list.shift();
  }

  // stats gives the numbers shown for a pool or target: the data plane's
  // own window when the API has it, else rps from the served counter.
  function stats(key, obj, now) {
    const computed = rate(key, obj.served || 0, now);
    const s = {
      rps: typeof obj.rps === 'number' ? obj.rps : computed,
      err: typeof obj.error_rate === 'number' ? obj.error_rate : null,
      p50: typeof obj.p50_ms === 'number' ? obj.p50_ms : null,
      p99: typeof obj.p99_ms === 'number' ? obj.p99_ms : null,
    };
    if (s.rps !== null) sample(key, s, now);
    return s;
  }

  function fmtRate(v) { return v === null ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1); }
  function fmtPct(v) { return v === null ? '—' : (v * 100).toFixed(v < 0.01 ? 2 : 1) + '%'; }
  function fmtMS(v) {
    if (v === null || v === undefined) return '—';
    if (v < 1) return (v * 1000).toFixed(0) + ' µs';
    if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + ' ms';
    return (v / 1000).toFixed(2) + ' s';
  }
  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + 's' : Math.floor(s / 60) + 'm' + (s % 60) + 's';
  }
  const safeID = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, '_');

  function renderServices(list, stateError) {
    const root = $('#services');
    const now = Date.now();
    const cards = [];
    if (stateError) cards.push(el('div', { 'data-key': 'state-error', class: 'card error', text: 'state: ' + stateError }));
    for (const svc of list) {
      const key = 'svc-' + svc.name;
      const card = Array.from(root.children).find((c) => c.getAttribute('data-key') === key) ||
        el('section', { class: 'card service', 'data-key': key, id: 'svc-' + safeID(svc.name) });
      sync(card, [serviceHead(svc), operation(svc), poolsTable(svc, now)].filter((p) => p));
      cards.push(card);
    }
    sync(root, cards);
    drawCharts(root);
  }

  function serviceHead(svc) {
    const id = safeID(svc.name);
    const head = el('div', { class: 'svc-head', 'data-key': 'head' },
      el('h2', { text: svc.name }),
      el('span', { class: 'hosts', text: (svc.hosts && svc.hosts.length) ? svc.hosts.join(', ') : 'any host (default service)' }),
      el('span', { class: 'label', text: 'active' }),
      el('span', { class: 'badge active', id: 'active-' + id, text: svc.active || 'none' }),
      el('span', { class: 'label', text: 'previous' }),
      el('span', { class: 'badge previous', id: 'previous-' + id, text: svc.previous || 'none' }),
      el('span', { class: 'spacer' }));
    for (const p of svc.pools || []) {
      if (p.name === svc.active) continue;
      head.append(el('button', {
        type: 'button', class: 'primary', id: 'deploy-' + id + '-' + safeID(p.name),
        'data-action': 'deploy', 'data-service': svc.name, 'data-pool': p.name, text: 'Deploy ' + p.name,
      }));
    }
    if (svc.previous) {
      head.append(el('button', {
        type: 'button', class: 'danger', id: 'rollback-' + id,
        'data-action': 'rollback', 'data-service': svc.name, 'data-pool': svc.previous, text: 'Roll back to ' + svc.previous,
      }));
    }
    return head;
  }

  function operation(svc) {
    const op = svc.operation;
    if (!op) return null;
    let what = 'starting';
    let bar = null;
    switch (op.phase) {
      case 'targets': what = 'setting targets'; break;
      case 'health':
        what = 'targets ready ' + op.ready + '/' + op.total;
        bar = el('span', { class: 'bar' }, el('span', { style: null }));
        break;
      case 'switch': what = 'switching'; break;
      case 'drain': what = 'draining ' + op.drain_left + ' left'; break;
    }
    const panel = el('div', { class: 'op', 'data-key': 'op', id: 'op-' + safeID(svc.name) },
      el('span', { class: 'phase', text: op.kind + ' to ' + op.pool + ': ' }),
      el('span', { class: 'progress', text: what }),
      bar,
      el('span', { class: 'hosts', text: ' · started ' + ago(op.started) + ' ago' }),
      op.message ? el('div', { class: 'msg', text: op.message }) : null);
    if (bar && op.total > 0) {
      // The width is set as a property (CSP allows no inline style text).
      bar.firstChild.setAttribute('data-pct', String(Math.round(100 * op.ready / op.total)));
    }
    return panel;
  }

  function poolsTable(svc, now) {
    const table = el('table', { class: 'pools', 'data-key': 'pools' });
    table.append(el('thead', {}, el('tr', {},
      el('th', { text: 'pool / target' }), el('th', { text: 'health' }),
      el('th', { class: 'num', text: 'in flight' }), el('th', { class: 'num', text: 'served' }),
      el('th', { class: 'num', text: 'req/s' }), el('th', { class: 'num', text: 'errors' }),
      el('th', { class: 'num', text: 'p50' }), el('th', { class: 'num', text: 'p99' }),
      el('th', {}, 'recent', el('span', { class: 'legend' }, el('i', { class: 'l-rps' }), 'req/s', el('i', { class: 'l-p99' }), 'p99')),
      el('th', { text: 'last error' }))));
    const body = el('tbody');
    for (const p of svc.pools || []) {
      const key = svc.name + '/' + p.name;
      const s = stats(key, p, now);
      const up = (p.targets || []).filter((t) => t.state === 'up').length;
      const name = el('td', {}, p.name + ' ');
      if (p.active) name.append(el('span', { class: 'badge active', text: 'active' }), ' ');
      if (p.name === svc.previous) name.append(el('span', { class: 'badge previous', text: 'previous' }), ' ');
      if (p.source && p.source !== 'config') name.append(el('span', { class: 'badge source', text: p.source }));
      body.append(el('tr', { class: 'pool' + (p.active ? ' active' : ''), 'data-pool': p.name },
        name,
        el('td', { text: up + '/' + (p.targets || []).length + ' up' }),
        el('td', { class: 'num', text: p.in_flight }), el('td', { class: 'num', text: p.served }),
        el('td', { class: 'num', text: fmtRate(s.rps) }), el('td', { class: 'num', text: fmtPct(s.err) }),
        el('td', { class: 'num', text: fmtMS(s.p50) }), el('td', { class: 'num', text: fmtMS(s.p99) }),
        el('td', {}, el('canvas', { class: 'chart', width: 160, height: 30, 'data-chart': key })),
        el('td')));
      for (const t of p.targets || []) {
        const tkey = key + '/' + t.addr;
        const ts = stats(tkey, t, now);
        const label = t.label && t.label !== t.addr ? t.label + ' (' + t.addr + ')' : t.addr;
        body.append(el('tr', { class: 'target', 'data-target': t.addr },
          el('td', { class: 'target', text: label }),
          el('td', {}, el('span', { class: 'state ' + t.state, text: t.state })),
          el('td', { class: 'num', text: t.in_flight }), el('td', { class: 'num', text: t.served }),
          el('td', { class: 'num', text: fmtRate(ts.rps) }), el('td', { class: 'num', text: fmtPct(ts.err) }),
          el('td', { class: 'num', text: fmtMS(ts.p50) }), el('td', { class: 'num', text: fmtMS(ts.p99) }),
          el('td', {}, el('canvas', { class: 'chart', width: 160, height: 22, 'data-chart': tkey })),
          el('td', { class: 'err', text: t.last_error || '' })));
      }
    }
    table.append(body);
    return table;
  }

  // drawCharts draws each canvas's series by hand: req/s as a filled blue
  // line, p99 as an orange line on its own scale, errors as red ticks.
  function drawCharts(root) {
    for (const bar of root.querySelectorAll('.bar > span[data-pct]')) {
      bar.style.width = bar.getAttribute('data-pct') + '%';
    }
    const now = Date.now();
    for (const c of root.querySelectorAll('canvas[data-chart]')) {
      const list = series.get(c.getAttribute('data-chart')) || [];
      const dpr = window.devicePixelRatio || 1;
      const w = Number(c.getAttribute('width')), h = Number(c.getAttribute('height'));
      if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; c.style.width = w + 'px'; c.style.height = h + 'px'; }
      const g = c.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      g.fillStyle = '#f3f5f9';
      g.fillRect(0, 0, w, h);
      if (list.length < 2) continue;
      // The x axis spans what has been seen, from 10 s up to the window.
      const span = Math.min(WINDOW_MS, Math.max(10000, now - list[0].t));
      const x = (t) => w * (1 - (now - t) / span);
      const line = (pick, color, fill) => {
        const max = Math.max(...list.map((p) => pick(p) || 0));
        if (!(max > 0)) return;
        const y = (v) => h - 2 - (h - 4) * (v || 0) / max;
        g.beginPath();
        list.forEach((p, i) => (i ? g.lineTo(x(p.t), y(pick(p))) : g.moveTo(x(p.t), y(pick(p)))));
        g.strokeStyle = color;
        g.lineWidth = 1.5;
        g.stroke();
        if (fill) {
          g.lineTo(x(list[list.length - 1].t), h);
          g.lineTo(x(list[0].t), h);
          g.closePath();
          g.fillStyle = fill;
          g.fill();
        }
      };
      line((p) => p.rps, '#2f6fdb', 'rgba(47,111,219,0.15)');
      line((p) => p.p99, '#e07b24');
      g.fillStyle = '#d64545';
      for (const p of list) if (p.err > 0) g.fillRect(x(p.t) - 1, 0, 2, Math.max(2, h * Math.min(1, p.err * 10)));
    }
  }

  function renderHistory(entries) {
    const body = $('#history tbody');
    const rows = entries.map((e) => {
      const pools = e.to ? (e.from && e.from !== e.to ? e.from + ' → ' + e.to : '→ ' + e.to) : '—';
      const d = new Date(e.started);
      const pad = (n) => String(n).padStart(2, '0');
      const when = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
        pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
      return el('tr', { 'data-key': 'h' + e.id, 'data-id': e.id },
        el('td', { text: e.id }),
        el('td', { class: 'nowrap', text: when }),
        el('td', { text: e.kind }), el('td', { text: e.service || '—' }), el('td', { class: 'nowrap', text: pools }),
        el('td', {}, el('span', { class: 'result ' + e.result, text: e.result.replace('_', ' ') })),
        el('td', { class: 'num', text: e.result === 'succeeded' && e.kind !== 'reload' ? fmtMS(e.time_to_healthy_ms) : '' }),
        el('td', { class: 'num', text: e.result === 'succeeded' && e.kind !== 'reload' ? e.in_flight_at_switch : '' }),
        el('td', { class: 'num', text: e.result === 'succeeded' && e.kind !== 'reload' ? e.drained : '' }),
        el('td', { class: 'num', text: e.result === 'succeeded' && e.kind !== 'reload' ? fmtMS(e.drain_ms) : '' }),
        el('td', { class: 'reason', text: (e.reason || '').split('\n')[0] }));
    });
    sync(body, rows);
  }

  function ask(action, service, pool) {
    pending = { action: action, service: service, pool: pool };
    $('#confirm-text').textContent = action === 'deploy'
      ? 'Deploy pool ' + pool + ' to service ' + service + '? Its targets are health-checked first; then traffic moves to it in one step and the active pool drains.'
      : 'Roll service ' + service + ' back to pool ' + pool + '? The active pool drains.';
    $('#confirm-ok').textContent = action === 'deploy' ? 'Deploy ' + pool : 'Roll back to ' + pool;
    $('#confirm').showModal();
  }

  // run sends a deploy or rollback and reads its NDJSON stream to the
  // result or error line; the live progress itself shows through status.
  async function run(op, timeout) {
    const path = op.action === 'deploy' ? '/v1/deploy' : '/v1/rollback';
    const body = op.action === 'deploy' ? { service: op.service, pool: op.pool } : { service: op.service };
    if (timeout) body.timeout = timeout;
    showMessage('ok', op.action + ' of ' + op.service + ' to ' + op.pool + ' started…');
    poll();
    let outcome = null;
    try {
      const r = await fetch(path, {
        method: 'POST', credentials: 'same-origin', cache: 'no-store',
        headers: Object.assign({ 'Content-Type': 'application/json' }, UI_HEADER), body: JSON.stringify(body),
      });
      if (r.status === 401) { showLogin('the session ended — log in again'); return; }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (value) buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const l = JSON.parse(line);
          if (l.type === 'result' || l.type === 'error' || l.error) outcome = l;
        }
        if (done) break;
      }
      if (!outcome && buf.trim()) outcome = JSON.parse(buf);
    } catch (e) {
      showMessage('error', op.action + ' of ' + op.service + ' to ' + op.pool + ': ' + e.message);
      return;
    }
    if (outcome && outcome.result) {
      showMessage('ok', outcome.result.message);
    } else if (outcome && outcome.error) {
      const lines = [outcome.error.message];
      for (const f of outcome.error.failing || []) lines.push('  ' + (f.label || f.addr) + ': ' + (f.error || 'not enough passing checks yet'));
      showMessage('error', lines.join('\n'));
    } else {
      showMessage('error', 'the connection ended before the ' + op.action + ' finished — see the pools above for which one is active');
    }
    poll();
  }

  document.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (b) ask(b.getAttribute('data-action'), b.getAttribute('data-service'), b.getAttribute('data-pool'));
  });
  $('#confirm').addEventListener('close', () => {
    const op = pending;
    pending = null;
    if (op && $('#confirm').returnValue === 'ok') run(op, $('#confirm-timeout').value.trim());
  });
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = await login($('#login-token').value);
    $('#login-token').value = '';
    if (err) showLogin(err); else poll();
  });
  $('#logout').addEventListener('click', async () => {
    await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin' });
    showLogin('');
  });

  async function start() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      // Out of the address bar and the browser's history at once.
      history.replaceState(null, '', location.pathname + location.search);
      const err = await login(decodeURIComponent(m[1]));
      if (err) { showLogin(err); return; }
    }
    poll();
  }
  // A #token=... link opened in a tab already showing the page changes
  // only the fragment, which reloads nothing.
  window.addEventListener('hashchange', start);
  start();
})();
