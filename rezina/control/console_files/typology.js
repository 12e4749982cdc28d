// The page of one typology: its stages with their nodes and charts, runs, failed items
// and log, and the actions (start, stop, restart, remove, scale) after a confirmation.

import { act, api } from './api.js';
import { CHART_SECONDS, drawChart } from './chart.js';
import { clock, duration, html, num, put, schedule, seconds, state, stateElement,
  textElement } from './render.js';

const LOG_KEEP = 500;           // log lines kept
const LOG_SHOWN = 200;
const RUNS_SHOWN = 20;
const FAILED_SHOWN = 20;        // failed items listed, the newest (the master keeps 200)

// refresh: asks the poll loop to update the page now rather than at its next tick
export function typologyPage(name, refresh) {
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
    refresh();
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
    const scalable = stages.filter((s) => s.scalable);
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
