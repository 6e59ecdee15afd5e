// The braid console: draws the cluster from the node's JSON API, polled.
// Served by the node (node/console.go) with a Content-Security-Policy that
// allows no inline script: this file is all the script there is. Data are
// put into the page as text (textContent, attributes), never as HTML.
'use strict';

(function () {
  const POLL_MS = 3000;
  const JOBS_WITH_CURVES = 4; // on the overview: the running job and the latest ones
  const SVG = 'http://www.w3.org/2000/svg';

  class AuthError extends Error {}

  // The API token: in this tab's sessionStorage (per tab, per origin, so
  // per port), never in a cookie. It arrives in the URL's fragment
  // (/#token=..., which the browser does not send to the server) or
  // through the login form, and is sent as "Authorization: Bearer" to this
  // node's API only.
  const TOKEN_KEY = 'braid-api-token';
  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  function storeToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage refused: the token lasts until the page is left */ }
    memToken = t;
  }
  let memToken = storedToken();
  let loginMsg = '';
  (function takeTokenFromFragment() {
    const m = location.hash.match(/^#token=(.+)$/);
    if (location.hash === '#token-in-query') {
      loginMsg = 'Give the token after # (/#token=...), not in the query: a query is sent to the server.';
    }
    if (m || location.hash === '#token-in-query') {
      if (m) {
        let t = m[1];
        try { t = decodeURIComponent(t); } catch (e) { /* kept as given */ }
        storeToken(t);
      }
      // Out of the address bar and of the history.
      history.replaceState(null, '', location.pathname + location.search);
    }
  })();

  // el builds an element: attrs are attributes ("text" sets its text);
  // children are nodes or strings.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  async function api(path) {
    if (!memToken) throw new AuthError('not logged in');
    const r = await fetch(path, { credentials: 'omit', cache: 'no-store',
      headers: { Accept: 'application/json', Authorization: `Bearer ${memToken}` } });
    if (r.status === 401) throw new AuthError('wrong token');
    if (!r.ok) {
      const msg = (await r.text()).trim().replace(/^braid: /, '');
      throw new Error(`${path}: ${msg || r.status}`);
    }
    return r.json();
  }

  // The figures, as the CLI prints them.
  function fmtLoss(v) { return v === undefined || v === null ? '–' : v.toFixed(4); }
  function fmtNum(v, digits) {
    if (v === undefined || v === null || isNaN(v)) return '–';
    return v.toLocaleString('en-US', { maximumFractionDigits: digits || 0 });
  }
  function fmtBytes(b) {
    if (!b) return '0 B';
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return `${b.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }
  function badge(text, cls) { return el('span', { class: `badge ${cls || text}`, text }); }
  function jobLink(id) { return el('a', { href: `/jobs/${encodeURIComponent(id)}`, class: 'mono', text: id }); }
  function figure(label, value) {
    return el('div', { class: 'figure' }, el('div', { class: 'label', text: label }), el('div', { class: 'value', text: value }));
  }
  function table(headers, rows, numeric) {
    const num = new Set(numeric || []);
    return el('table', {},
      el('thead', {}, el('tr', {}, ...headers.map((h, i) => el('th', { class: num.has(i) ? 'num' : null, text: h })))),
      el('tbody', {}, ...rows.map(r => el('tr', {}, ...r.map((c, i) => el('td', { class: num.has(i) ? 'num' : null }, c))))));
  }

  // chart draws a job's loss (a line over every step kept) and held-out
  // loss (points where evaluated, the base model's at step 0) as SVG.
  function chart(hist, width, height) {
    const pts = hist.points || [];
    const held = pts.filter(p => p.heldout_loss !== undefined && p.heldout_loss !== null)
      .map(p => ({ step: p.step, v: p.heldout_loss }));
    if (hist.base_heldout_loss !== undefined && hist.base_heldout_loss !== null) held.unshift({ step: 0, v: hist.base_heldout_loss });
    const svg = svgEl('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': `loss over ${pts.length} steps` });
    if (pts.length === 0 && held.length === 0) {
      svg.append(svgEl('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'no steps yet'));
      return svg;
    }
    const m = { l: 48, r: 12, t: 20, b: 26 };
    const values = pts.map(p => p.loss).concat(held.map(h => h.v));
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
    const x0 = Math.min(pts.length ? pts[0].step : 0, held.length ? held[0].step : Infinity);
    const x1 = Math.max(pts.length ? pts[pts.length - 1].step : 0, held.length ? held[held.length - 1].step : 0, x0 + 1);
    const X = s => m.l + (s - x0) / (x1 - x0) * (width - m.l - m.r);
    const Y = v => m.t + (hi - v) / (hi - lo) * (height - m.t - m.b);
    svg.append(
      svgEl('line', { class: 'axis', x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b }),
      svgEl('line', { class: 'axis', x1: m.l, y1: m.t, x2: m.l, y2: height - m.b }),
      svgEl('text', { x: m.l - 4, y: m.t + 4, 'text-anchor': 'end' }, hi.toFixed(3)),
      svgEl('text', { x: m.l - 4, y: height - m.b, 'text-anchor': 'end' }, lo.toFixed(3)),
      svgEl('text', { x: m.l, y: height - 8, 'text-anchor': 'start' }, `step ${x0}`),
      svgEl('text', { x: width - m.r, y: height - 8, 'text-anchor': 'end' }, `step ${x1}`),
      svgEl('rect', { class: 'legend-loss', x: m.l + 8, y: 6, width: 10, height: 3 }),
      svgEl('text', { x: m.l + 22, y: 11 }, 'loss'),
      svgEl('rect', { class: 'legend-heldout', x: m.l + 60, y: 6, width: 10, height: 3 }),
      svgEl('text', { x: m.l + 74, y: 11 }, held.length ? 'held-out loss' : 'held-out loss: not evaluated'));
    if (pts.length) {
      svg.append(svgEl('polyline', { class: 'loss-line', 'data-points': pts.length,
        points: pts.map(p => `${X(p.step).toFixed(1)},${Y(p.loss).toFixed(1)}`).join(' ') }));
    }
    if (held.length) {
      svg.append(svgEl('polyline', { class: 'heldout-line', 'data-points': held.length,
        points: held.map(h => `${X(h.step).toFixed(1)},${Y(h.v).toFixed(1)}`).join(' ') }));
      for (const h of held) {
        const c = svgEl('circle', { class: h.step === 0 ? 'base-point' : 'heldout-point', cx: X(h.step).toFixed(1), cy: Y(h.v).toFixed(1), r: 3 });
        c.append(svgEl('title', {}, `step ${h.step}: held-out loss ${h.v.toFixed(4)}${h.step === 0 ? ' (base model)' : ''}`));
        svg.append(c);
      }
    }
    return svg;
  }

  function wireTotal(js) { return (js.workers || []).reduce((s, w) => s + (w.wire_bytes || 0), 0); }

  function jobFigures(js, hist) {
    const pts = (hist && hist.points) || [];
    return el('div', { class: 'grid' },
      figure('state', js.state),
      figure('step', `${js.step} / ${js.steps}`),
      figure('loss', fmtLoss(js.loss)),
      figure('held-out loss', js.heldout_loss ? `${fmtLoss(js.heldout_loss)} (step ${js.heldout_step})` : 'not evaluated'),
      figure('base held-out loss', js.base_heldout_loss ? fmtLoss(js.base_heldout_loss) : 'not evaluated'),
      figure('tokens/s', fmtNum(js.tokens_per_sec)),
      figure('on the wire, per step', fmtBytes(js.wire_bytes_per_step)),
      figure('on the wire, in all', fmtBytes(wireTotal(js))),
      figure('checkpoints', String((js.checkpoints || []).length)),
      figure('points kept', `${pts.length}${hist && hist.thinned ? ` (${hist.thinned} thinned)` : ''}`));
  }

  async function renderOverview(view) {
    const [st, jobs, datasets] = await Promise.all([api('/v1/status'), api('/v1/jobs'), api('/v1/datasets')]);
    setClusterLine(st);
    const dsStatus = await Promise.all((datasets || []).map(d =>
      api(`/v1/datasets/${encodeURIComponent(d.name || d.id)}`).catch(e => ({ error: e.message }))));
    // The jobs with curves: running first, then the latest submitted.
    const ordered = (jobs || []).slice().sort((a, b) =>
      (b.state === 'running') - (a.state === 'running') || b.seq - a.seq);
    const curved = ordered.slice(0, JOBS_WITH_CURVES);
    const details = await Promise.all(curved.map(j => Promise.all([api(`/v1/jobs/${encodeURIComponent(j.id)}`),
      api(`/v1/jobs/${encodeURIComponent(j.id)}/history`)]).catch(e => [null, null, e])));

    const frag = document.createDocumentFragment();
    const epochMembers = new Set(st.epoch.members || []);
    frag.append(el('h2', { text: `Members (${st.members.length})` }), el('section', {}, table(
      ['name', 'state', 'role', 'in epoch', 'device', 'cores', 'GPUs', 'memory', 'version'],
      st.members.map(m => [
        el('span', { class: 'mono member-name', text: m.name }),
        badge(m.state),
        m.name === st.leader ? badge('leader') : el('span', { class: 'muted', text: m.voter ? 'voter' : 'non-voter' }),
        epochMembers.has(m.name) ? 'yes' : el('span', { class: 'muted', text: 'no' }),
        m.device || 'cpu',
        fmtNum(m.cores),
        m.gpu ? `${m.gpus || 1} × ${m.gpu.name} (cuda:${m.gpu.index})` : (m.gpus ? String(m.gpus) : '–'),
        m.memory_bytes ? fmtBytes(m.memory_bytes) : '–',
        m.version || '–']), [5])));

    frag.append(el('h2', { text: `Jobs (${(jobs || []).length})` }));
    if (!jobs || jobs.length === 0) {
      frag.append(el('section', { class: 'muted', text: 'No jobs yet: submit one with `braid job submit`.' }));
    } else {
      frag.append(el('section', {}, table(['job', 'state', 'steps', 'device', 'checkpoints', 'last checkpoint'],
        ordered.map(j => {
          const last = (j.checkpoints || [])[(j.checkpoints || []).length - 1];
          return [jobLink(j.id), badge(j.state), fmtNum(j.spec.steps), j.spec.device || 'cpu',
            String((j.checkpoints || []).length), last ? `step ${last.step} on ${last.holders.join(', ')}` : '–'];
        }), [2, 4])));
      const charts = el('div', { class: 'charts' });
      curved.forEach((j, i) => {
        const [js, hist, err] = details[i];
        const card = el('div', { class: 'card job-card', 'data-job': j.id }, el('h2', {}, jobLink(j.id), ' ', badge(j.state)));
        if (err) card.append(el('p', { class: 'error', text: err.message }));
        else card.append(chart(hist, 480, 200), jobFigures(js, hist));
        charts.append(card);
      });
      frag.append(charts);
    }

    frag.append(el('h2', { text: `Datasets (${(datasets || []).length})` }));
    if (!datasets || datasets.length === 0) {
      frag.append(el('section', { class: 'muted', text: 'No datasets yet: register one with `braid data push`.' }));
    } else {
      frag.append(el('section', {}, table(['name', 'id', 'shards', 'replicas', 'placement', 'healthy', 'under-replicated'],
        datasets.map((d, i) => {
          const s = dsStatus[i];
          const health = s.error ? badge('unknown', 'missing') : s.under_replicated > 0 ? badge('degraded') : badge('healthy');
          return [el('span', { class: 'mono', text: d.name }), el('span', { class: 'mono muted', text: d.id.slice(0, 12) }),
            String(d.shards.length), d.local ? 'local' : String(d.replicas), health,
            s.error ? s.error : String(s.healthy), s.error ? '–' : String(s.under_replicated)];
        }), [2, 5, 6])));
    }
    view.replaceChildren(frag);
    document.title = 'braid console';
  }

  async function renderJob(view, id) {
    const [st, js, hist, datasets] = await Promise.all([api('/v1/status'), api(`/v1/jobs/${encodeURIComponent(id)}`),
      api(`/v1/jobs/${encodeURIComponent(id)}/history`), api('/v1/datasets')]);
    const ds = (datasets || []).find(d => d.id === js.spec.dataset);
    setClusterLine(st);
    const frag = document.createDocumentFragment();
    frag.append(el('p', {}, el('a', { href: '/', text: '← the cluster' })),
      el('h1', {}, 'job ', el('span', { class: 'mono job-id', text: js.id }), ' ', badge(js.state)));
    if (js.error) frag.append(el('p', { class: 'error', text: js.error }));
    if (js.waiting) frag.append(el('p', { class: 'muted', text: `waiting: ${js.waiting}` }));
    frag.append(el('section', {}, jobFigures(js, hist)));
    frag.append(el('section', {}, el('h2', { text: `Loss${hist.node ? ` (as ${hist.node} ran it)` : ''}` }), chart(hist, 900, 320)));
    frag.append(el('h2', { text: 'Settings' }), el('section', { class: 'grid' },
      figure('dataset', ds ? ds.name : js.spec.dataset.slice(0, 12)), figure('device', js.spec.device || 'cpu'),
      figure('global batch', fmtNum(js.spec.global_batch)), figure('micro batch', fmtNum(js.spec.micro_batch)),
      figure('learning rate', String(js.spec.lr)), figure('warmup', fmtNum(js.spec.warmup)),
      figure('eval every', js.spec.eval_every ? fmtNum(js.spec.eval_every) : 'never'),
      figure('wire', js.spec.wire || 'fp32'), figure('epoch', `${js.epoch}: ${(js.members || []).join(', ')}`),
      figure('weights', js.weights_hash ? js.weights_hash.slice(0, 16) : '–')));
    frag.append(el('h2', { text: `Checkpoints (${(js.checkpoints || []).length})` }), el('section', {},
      (js.checkpoints || []).length ? table(['step', 'weights', 'holders'], js.checkpoints.map(c =>
        [fmtNum(c.step), el('span', { class: 'mono', text: (c.weights_hash || '').slice(0, 16) }), (c.holders || []).join(', ')]), [0])
        : el('span', { class: 'muted', text: 'none yet' })));
    frag.append(el('h2', { text: `Workers (${(js.workers || []).length})` }), el('section', {},
      table(['node', 'rank', 'phase', 'device', 'step', 'loss', 'tokens/s', 'step ms', 'sent'],
        (js.workers || []).map(w => [el('span', { class: 'mono', text: w.node }), String(w.rank), badge(w.phase),
          w.device || '–', fmtNum(w.step), fmtLoss(w.loss), fmtNum(w.tokens_per_sec), fmtNum(w.step_ms, 1), fmtBytes(w.wire_bytes)]),
        [1, 4, 5, 6, 7, 8])));
    if (js.unreachable) {
      frag.append(el('p', { class: 'error', text: `unreachable: ${Object.entries(js.unreachable).map(([n, e]) => `${n} (${e})`).join('; ')}` }));
    }
    view.replaceChildren(frag);
    document.title = `braid job ${js.id}`;
  }

  function setClusterLine(st) {
    document.getElementById('cluster-line').textContent =
      `node ${st.self} · leader ${st.leader || 'none'} · term ${st.term} · epoch ${st.epoch.id} (${(st.epoch.members || []).length} members)`;
  }

  function showLogin(msg) {
    document.getElementById('login').hidden = false;
    document.getElementById('app').hidden = true;
    document.getElementById('logout').hidden = true;
    document.getElementById('cluster-line').textContent = '';
    document.getElementById('updated').textContent = '';
    document.getElementById('login-msg').textContent = msg;
  }

  document.getElementById('login-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const input = document.getElementById('login-token');
    storeToken(input.value.trim());
    input.value = '';
    loginMsg = '';
    if (timer !== null) clearTimeout(timer);
    refresh();
  });
  document.getElementById('logout').addEventListener('click', () => {
    storeToken('');
    if (timer !== null) clearTimeout(timer);
    timer = null;
    document.getElementById('view').replaceChildren();
    showLogin('Logged out.');
  });

  let timer = null;
  async function refresh() {
    const m = location.pathname.match(/^\/jobs\/([^/]+)$/);
    const view = document.getElementById('view');
    const errBox = document.getElementById('error');
    try {
      if (m) await renderJob(view, decodeURIComponent(m[1]));
      else await renderOverview(view);
      document.getElementById('login').hidden = true;
      document.getElementById('app').hidden = false;
      document.getElementById('logout').hidden = false;
      errBox.hidden = true;
      document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (e instanceof AuthError) {
        // Nothing is shown without the token; the form logs in. A token
        // the API refuses is forgotten.
        const had = memToken !== '';
        storeToken('');
        view.replaceChildren();
        showLogin(had ? 'That token is not this node\'s.' : loginMsg);
        timer = null;
        return;
      }
      document.getElementById('login').hidden = true;
      document.getElementById('app').hidden = false;
      errBox.textContent = e.message;
      errBox.hidden = false;
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && timer !== null) { clearTimeout(timer); refresh(); }
  });
  refresh();
})();
