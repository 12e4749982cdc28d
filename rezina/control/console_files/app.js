// The rezina console: three pages over rz-master's JSON API (/api/...), polled every
// POLL_MS. Every string from the API is untrusted: it reaches HTML only through html``,
// which escapes whatever it interpolates.
'use strict';

(function () {
  const POLL_MS = 1500;
  const CHART_SECONDS = 90;       // the span of a throughput chart, at most
  const MIN_SPAN = 20;            // ... and at least
  const LOG_KEEP = 500;           // log lines kept
  const LOG_SHOWN = 200;
  const RUNS_SHOWN = 20;
  const FAILED_SHOWN = 20;        // failed items listed, the newest (the master keeps 200)
  const TOKEN_KEY = 'rezina-token';

  // HTML that escapes every value put into it; html`` results nest without escaping twice

  class Safe {
    constructor(text) { this.text = text; }
  }

  const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

  function esc(value) {
    if (value instanceof Safe) return value.text;
    if (Array.isArray(value)) return value.map(esc).join('');
    if (value === null || value === undefined) return '';
    return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
  }

  function html(strings, ...values) {
    let out = strings[0];
    values.forEach((value, i) => { out += esc(value) + strings[i + 1]; });
    return new Safe(out);
  }

  function put(element, safe) {
    element.innerHTML = safe.text;
  }

  // an element holding text as text, for the parts built without html``
  function textElement(tag, text, className) {
    const element = document.createElement(tag);
    if (text !== undefined) element.textContent = text;
    if (className) element.className = className;
    return element;
  }

  // the API

  async function answerOf(response) {
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.error || `HTTP ${response.status} ${response.statusText}`);
    }
    return body.result;
  }

  async function api(path) {
    return answerOf(await fetch('/api/' + path, { cache: 'no-store' }));
  }

  async function act(name, action, body) {
    const headers = {};
    if (token()) headers.Authorization = 'Bearer ' + token();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(`/api/typologies/${encodeURIComponent(name)}/${action}`, {
      method: 'POST', headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return answerOf(response);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  // what the numbers look like

  function num(value) {
    return value === null || value === undefined ? '–' : String(value);
  }

  function clock(epoch) {
    if (!epoch) return '–';
    const when = new Date(epoch * 1000);
    const today = new Date().toDateString() === when.toDateString();
    return today ? when.toLocaleTimeString() : when.toLocaleString();
  }

  function seconds(value) {
    if (value === null || value === undefined) return '–';
    if (value < 10) return `${value.toFixed(1)} s`;
    if (value < 120) return `${Math.round(value)} s`;
    if (value < 7200) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
    return `${(value / 3600).toFixed(1)} h`;
  }

  function ago(epoch) {
    return epoch ? `${seconds(Math.max(0, Date.now() / 1000 - epoch))} ago` : '–';
  }

  function schedule(s) {
    if (!s || (!s.interval && !s.cron && !s.start)) return 'once';
    const every = s.interval < 120 ? `${Number(s.interval.toFixed(3))} s` : seconds(s.interval);
    const when = s.interval ? `every ${every}` : s.cron ? `cron ${s.cron}` : 'once';
    return s.start ? `${when} from ${clock(s.start)}` : when;
  }

  function duration(run) {
    if (!run || !run.started) return '–';
    const end = run.ended || Date.now() / 1000;
    return seconds(end - run.started) + (run.ended ? '' : ' so far');
  }

  function stateKind(name) {
    return /^[A-Za-z]+$/.test(name || '') ? name.toLowerCase() : 'unknown';
  }

  function state(name) {
    return html`<span class="state state-${stateKind(name)}">${name || '–'}</span>`;
  }

  function stateElement(name) {
    return textElement('span', name || '–', `state state-${stateKind(name)}`);
  }

  function typologyLink(name) {
    return html`<a href="#/typology/${encodeURIComponent(name)}">${name}</a>`;
  }

  // pages: each has mount(root) and update(), and keeps its own elements

  function workersPage() {
    let table;
    return {
      mount(root) {
        put(root, html`<h1>Workers</h1><div class="table"></div>`);
        table = root.querySelector('.table');
      },
      async update() {
        const workers = await api('workers');
        if (!workers.length) {
          return put(table, html`<p class="empty">No worker has registered.</p>`);
        }
        put(table, html`<table><thead><tr><th>Worker</th><th>Address</th><th>Host</th>
          <th>State</th><th class="num">Slots</th><th class="num">Load</th>
          <th class="num">Nodes</th><th>Last heartbeat</th></tr></thead><tbody>
          ${workers.map((w) => html`<tr data-worker="${w.id}"><td>${w.id}</td>
            <td data-field="address">${w.address}</td><td>${w.host}</td>
            <td>${state(w.state)}</td>
            <td class="num">${num(w.slots)}</td><td class="num">${num(w.load)}</td>
            <td class="num">${num(w.nodes)}</td>
            <td title="${clock(w.last_heartbeat)}">${ago(w.last_heartbeat)}</td></tr>`)}
          </tbody></table>`);
      },
    };
  }

  function typologiesPage() {
    let table;
    return {
      mount(root) {
        put(root, html`<h1>Typologies</h1><div class="table"></div>`);
        table = root.querySelector('.table');
      },
      async update() {
        const typologies = await api('typologies');
        if (!typologies.length) {
          return put(table, html`<p class="empty">No typology. Submit one with
            TypologyBuilder or <code>rz start</code>.</p>`);
        }
        put(table, html`<table><thead><tr><th>Typology</th><th>State</th><th>Schedule</th>
          <th>Next run</th><th>Last run</th><th class="num">Items</th><th>Took</th>
          <th class="num">Failed items</th><th class="num">Nodes</th>
          <th class="num">Failed nodes</th></tr></thead><tbody>
          ${typologies.map((t) => html`<tr data-typology="${t.name}">
            <td>${typologyLink(t.name)}</td><td>${state(t.state)}</td>
            <td>${schedule(t.schedule)}</td><td>${clock(t.next_run)}</td>
            <td>${t.last_run ? clock(t.last_run.started) : 'none yet'}</td>
            <td class="num" data-field="items">${num(t.last_run && t.last_run.items)}</td>
            <td>${duration(t.last_run)}</td>
            <td class="num ${t.last_run && t.last_run.failed ? 'bad' : ''}">
              ${num(t.last_run && t.last_run.failed)}</td>
            <td class="num">${num(t.nodes)}</td>
            <td class="num ${t.failed_nodes ? 'bad' : ''}">${num(t.failed_nodes)}</td>
          </tr>`)}</tbody></table>`);
      },
    };
  }

  function typologyPage(name) {
    const charts = new Map();       // stage name -> {canvas, samples: [[time, rate]]}
    const counted = new Map();      // node id -> [pid, items out] at the last poll
    let countedAt = null;
    const log = { lines: [], cursor: null };
    let root, stageKey = null, scaleKey = null;

    function el(selector) { return root.querySelector(selector); }

    function mount(element) {
      root = element;
      put(root, html`<h1>${name} <span class="t-state"></span></h1>
        <p class="summary"></p>
        <section class="actions">
          <button data-action="start">Start</button>
          <button data-action="stop">Stop</button>
          <button data-action="restart">Restart</button>
          <button data-action="remove" class="danger">Remove</button>
          <form class="scale">
            <label>Scale <select name="stage"></select></label>
            <label>to <input name="n" type="number" min="1" step="1" required> nodes</label>
            <button>Scale</button>
          </form>
          <div class="outcome" role="alert"></div>
        </section>
        <h2>Stages</h2><div class="stages"></div>
        <h2>Runs</h2><div class="runs"></div>
        <h2>Failed items</h2><div class="failures"></div>
        <h2>Log</h2><pre class="log"></pre>`);
      root.querySelectorAll('[data-action]').forEach((button) => {
        button.addEventListener('click', () => ask(button.dataset.action));
      });
      const form = el('form.scale');
      form.stage.addEventListener('change', () => { scaleKey = null; });
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        ask('scale', { stage: form.stage.value, n: Number(form.n.value) });
      });
    }

    async function ask(action, body) {
      const what = action === 'scale'
        ? `Scale stage ${body.stage} of ${name} to ${body.n} nodes?`
        : `${action[0].toUpperCase()}${action.slice(1)} typology ${name}?`;
      if (!window.confirm(what)) return;
      const outcome = el('.outcome');
      put(outcome, html`<span class="pending">${action}…</span>`);
      try {
        const answer = await act(name, action, body);
        put(outcome, html`<span class="ok">${action}: ${describe(answer)}</span>`);
        if (action === 'scale') scaleKey = null;
        if (action === 'remove' && answer.state === 'REMOVED') location.hash = '#/typologies';
      } catch (error) {
        put(outcome, html`<span class="error">${action} refused: ${error.message}</span>`);
      }
      refreshNow();
    }

    function describe(answer) {
      if (answer && answer.was !== undefined) {
        return `stage ${answer.stage} from ${answer.was} to ${answer.nodes} nodes`;
      }
      return answer && answer.state ? `now ${answer.state}` : 'done';
    }

    async function update() {
      const [detail, runs, failures] = await Promise.all([
        api(`typologies/${encodeURIComponent(name)}`),
        api(`typologies/${encodeURIComponent(name)}/runs?limit=${RUNS_SHOWN}`),
        api(`typologies/${encodeURIComponent(name)}/failures?limit=${FAILED_SHOWN}`),
      ]);
      await readLog();
      const t = detail.typology;
      put(el('.t-state'), state(t.state));
      put(el('.summary'), html`${schedule(t.schedule)} · next run ${clock(t.next_run)} ·
        ${num(t.nodes)} nodes${t.missed ? html` · ${t.missed} ticks missed` : ''}`);
      showScale(detail.stages);
      showStages(detail.stages, detail.nodes);
      showRuns(runs);
      showFailures(failures, runs, detail.nodes);
      showLog();
    }

    function showScale(stages) {
      const form = el('form.scale');
      const scalable = stages.filter((s) => s.kind !== 'hydrant');
      const names = scalable.map((s) => s.stage).join('\n');
      if (form.dataset.names !== names) {
        form.dataset.names = names;
        put(form.stage, html`${scalable.map((s) => html`<option>${s.stage}</option>`)}`);
        scaleKey = null;
      }
      const chosen = scalable.find((s) => s.stage === form.stage.value);
      const key = chosen ? `${chosen.stage}=${chosen.nodes}` : null;
      if (chosen && key !== scaleKey && document.activeElement !== form.n) {
        form.n.value = chosen.nodes;
        scaleKey = key;
      }
    }

    function showStages(stages, nodes) {
      const box = el('.stages');
      const key = stages.map((s) => `${s.stage}/${s.kind}`).join('\n');
      if (key !== stageKey) {
        stageKey = key;
        put(box, html`${stages.map((s, i) => html`<section class="stage" data-index="${i}">
          <h3></h3><canvas class="chart" width="320" height="110"></canvas>
          <div class="nodes"></div></section>`)}`);
        charts.clear();
        stages.forEach((s, i) => {
          const canvas = box.querySelector(`.stage[data-index="${i}"] canvas`);
          charts.set(s.stage, { canvas, samples: [] });
        });
      }
      const now = Date.now() / 1000, since = countedAt === null ? null : now - countedAt;
      countedAt = now;
      stages.forEach((s, i) => {
        const mine = nodes.filter((n) => n.stage === s.stage);
        const rate = since ? itemsOut(mine) / since : null;
        const chart = charts.get(s.stage);
        if (rate !== null) chart.samples.push([now, rate]);
        chart.samples = chart.samples.filter(([at]) => at >= now - CHART_SECONDS);
        drawChart(chart.canvas, chart.samples, now);
        const section = box.querySelector(`.stage[data-index="${i}"]`);
        put(section.querySelector('h3'), html`${s.stage} <small>${s.kind} · ${s.target} ·
          ${mine.length} of ${s.nodes} nodes ·
          ${rate === null ? '–' : rate.toFixed(1)} items/s out</small>`);
        put(section.querySelector('.nodes'), nodeTable(mine));
      });
    }

    // Items the nodes put out since the last poll: counted from their counters, not
    // from the master's rate of the moment, so a burst between two polls is not missed.
    // A node restarted (another pid) or new counts from its next poll.
    function itemsOut(nodes) {
      return nodes.reduce((sum, n) => {
        const before = counted.get(n.node_id), out = n.items_out || 0;
        counted.set(n.node_id, [n.pid, out]);
        const same = before && before[0] === n.pid && out >= before[1];
        return sum + (same ? out - before[1] : 0);
      }, 0);
    }

    function nodeTable(nodes) {
      if (!nodes.length) return html`<p class="empty">No node placed.</p>`;
      return html`<table><thead><tr><th>Node</th><th>Worker</th><th class="num">PID</th>
        <th>State</th><th class="num">Restarts</th><th class="num">In</th>
        <th class="num">Out</th><th class="num">Failed</th><th class="num">Dropped</th>
        <th class="num" title="Items sent again: a lost consumer's, a dead worker's">Redeliv.</th>
        <th class="num">Rate /s</th>
        <th class="num">In flight</th><th class="num">Oldest</th>
        <th class="num" title="Seconds its function ran (a sink: its writes)">Busy</th>
        </tr></thead><tbody>
        ${nodes.map((n) => html`<tr data-node="${n.stage}#${n.index}">
          <td>${n.stage}#${n.index}</td><td>${n.worker || '–'}</td>
          <td class="num">${num(n.pid)}</td><td>${state(n.state)}</td>
          <td class="num">${num(n.restarts)}</td>
          <td class="num" data-field="items_in">${num(n.items_in)}</td>
          <td class="num" data-field="items_out">${num(n.items_out)}</td>
          <td class="num ${n.failed ? 'bad' : ''}" data-field="failed">${num(n.failed)}</td>
          <td class="num" data-field="dropped">${num(n.dropped)}</td>
          <td class="num" data-field="redelivered">${num(n.redelivered)}</td>
          <td class="num">${num(n.rate)}</td><td class="num">${num(n.in_flight)}</td>
          <td class="num">${seconds(n.oldest_age)}</td>
          <td class="num" data-field="busy_seconds">${seconds(n.busy_seconds)}</td>
          </tr>`)}</tbody></table>`;
    }

    function showRuns(runs) {
      if (!runs.length) return put(el('.runs'), html`<p class="empty">No run yet.</p>`);
      put(el('.runs'), html`<table><thead><tr><th>Run</th><th>State</th><th>Started</th>
        <th>Took</th><th class="num">Items</th><th class="num">Failed</th></tr></thead>
        <tbody>${runs.map((r) => html`<tr><td>${r.run_id}</td><td>${state(r.state)}</td>
          <td>${clock(r.started)}</td><td>${duration(r)}</td><td class="num">${num(r.items)}</td>
          <td class="num ${r.failed ? 'bad' : ''}">${num(r.failed)}</td></tr>`)}
        </tbody></table>`);
    }

    // The failed items the master heard of from the nodes, newest first; the runs with
    // failed items; each node's last error. Built as text: no HTML is parsed from them.
    function showFailures(failures, runs, nodes) {
      const parts = [textElement('p', 'The newest failed items, as the nodes reported them ' +
        '(rz-master keeps the last 200 of a typology, without the items; a stage\'s ' +
        '--errors sink gets those).', 'note'), failedTable(failures)];
      const runsFailed = runs.filter((r) => r.failed);
      if (runsFailed.length) {
        const line = textElement('p', 'Runs with failed items: ');
        runsFailed.forEach((r) => line.append(textElement('span', `${r.run_id}: ${r.failed}`,
          'chip'), ' '));
        parts.push(line);
      }
      nodes.filter((n) => n.last_error).forEach((n) => {
        const box = textElement('div', undefined, 'last-error');
        box.append(textElement('b', `${n.stage}#${n.index}`), ' ', stateElement(n.state),
          ' last error:', textElement('pre', n.last_error));
        parts.push(box);
      });
      el('.failures').replaceChildren(...parts);
    }

    function failedTable(failures) {
      if (!failures.length) return textElement('p', 'No failed item.', 'empty');
      const table = textElement('table', undefined, 'failed-items');
      const head = table.createTHead().insertRow();
      ['Item', 'Node', 'Error', 'Message', 'Time'].forEach((title) => {
        head.append(textElement('th', title));
      });
      const body = table.createTBody();
      failures.forEach((f) => {
        const row = body.insertRow();
        [['id', f.id], ['node', `${f.stage}#${f.index}`], ['error', f.error],
          ['message', f.message], ['at', clock(f.at)]].forEach(([field, text]) => {
          const cell = textElement('td', text === null || text === undefined ? '–' : text);
          cell.dataset.field = field;
          row.append(cell);
        });
        row.cells[3].className = 'error-text';
        if (f.traceback) row.title = f.traceback;
      });
      return table;
    }

    async function readLog() {
      const query = log.cursor === null ? `limit=${LOG_SHOWN}` : `cursor=${log.cursor}`;
      const answer = await api(`typologies/${encodeURIComponent(name)}/logs?${query}`);
      log.lines = log.lines.concat(answer.lines).slice(-LOG_KEEP);
      log.cursor = answer.cursor;
    }

    function showLog() {
      const pre = el('.log');
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 20;
      const shown = log.lines.slice(-LOG_SHOWN);
      put(pre, shown.length ? html`${shown.map((line) => html`<span class="${lineKind(line)}">${
        line}</span>\n`)}` : html`<span class="empty">The log is empty.</span>`);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }

    function lineKind(line) {
      if (/\b(ERROR|CRITICAL|FAILED)\b|Traceback/.test(line)) return 'line-error';
      if (/\bWARNING\b| failed: /.test(line)) return 'line-warning';
      return '';
    }

    return { mount, update };
  }

  // the throughput chart: the stage's items/s out over the last CHART_SECONDS

  function drawChart(canvas, samples, now) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 320, height = canvas.clientHeight || 110;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const style = getComputedStyle(canvas);
    const left = 40, right = width - 6, top = 8, bottom = height - 16;
    const peak = niceCeiling(Math.max(1, ...samples.map(([, rate]) => rate)));
    // the span grows with the history, up to CHART_SECONDS, so a new chart is readable
    const history = samples.length ? now - samples[0][0] : 0;
    const span = Math.min(CHART_SECONDS, Math.max(MIN_SPAN, history));
    const x = (at) => left + (right - left) * (1 - (now - at) / span);
    const y = (rate) => bottom - (bottom - top) * rate / peak;

    g.font = '10px sans-serif';
    g.fillStyle = g.strokeStyle = style.borderColor;
    g.lineWidth = 1;
    g.textAlign = 'right';
    [0, peak / 2, peak].forEach((rate) => {
      g.beginPath();
      g.moveTo(left, Math.round(y(rate)) + 0.5);
      g.lineTo(right, Math.round(y(rate)) + 0.5);
      g.stroke();
      g.fillText(String(rate), left - 4, y(rate) + 3);
    });
    g.textAlign = 'left';
    g.fillText(`items/s out, last ${Math.round(span)} s`, left, height - 3);
    if (samples.length < 2) return;

    g.beginPath();
    samples.forEach(([at, rate], i) => (i ? g.lineTo(x(at), y(rate)) : g.moveTo(x(at), y(rate))));
    g.strokeStyle = style.color;
    g.lineWidth = 1.5;
    g.stroke();
    g.lineTo(x(samples[samples.length - 1][0]), bottom);
    g.lineTo(x(samples[0][0]), bottom);
    g.closePath();
    g.globalAlpha = 0.15;
    g.fillStyle = style.color;
    g.fill();
    g.globalAlpha = 1;
  }

  function niceCeiling(value) {
    const step = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 5, 10].map((m) => m * step).find((nice) => nice >= value);
  }

  // routes (#/typologies, #/workers, #/typology/NAME) and the poll loop

  const main = document.getElementById('page');
  const status = document.getElementById('status');
  let generation = 0, wake = () => {};

  function route() {
    const [page, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
    if (page === 'workers') return { nav: 'workers', view: workersPage() };
    if (page === 'typology' && rest.length) {
      try {
        return { nav: 'typologies', view: typologyPage(decodeURIComponent(rest.join('/'))) };
      } catch (error) { /* a malformed name: the list instead */ }
    }
    return { nav: 'typologies', view: typologiesPage() };
  }

  function show() {
    const { nav, view } = route();
    document.querySelectorAll('[data-nav]').forEach((a) => {
      a.classList.toggle('current', a.dataset.nav === nav);
    });
    generation += 1;
    wake();
    view.mount(main);
    poll(view, generation);
  }

  async function poll(view, mine) {
    while (mine === generation) {
      try {
        await view.update();
        if (mine !== generation) return;
        status.className = 'fresh';
        status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      } catch (error) {
        if (mine !== generation) return;
        status.className = 'stale';
        status.textContent = `not updated: ${error.message}`;
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        wake = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  function refreshNow() {
    wake();
  }

  function keepToken() {
    const input = document.getElementById('token');
    const told = document.getElementById('token-state');
    const tell = () => {
      told.textContent = token() ? 'kept for this tab' : 'none: actions are refused';
    };
    input.value = token();
    input.addEventListener('input', () => {
      const value = input.value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      tell();
    });
    tell();
  }

  if (window.top !== window.self) {
    document.body.textContent = 'The rezina console does not run inside another page.';
    return;
  }
  keepToken();
  window.addEventListener('hashchange', show);
  show();
})();
