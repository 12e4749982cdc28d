// The rezina console: three pages over rz-master's JSON API (/api/...), polled every
// POLL_MS. This module routes (#/typologies, #/workers, #/typology/NAME), runs the poll
// loop and holds the two list pages; typology.js is the page of one typology.

import { api, keepToken } from './api.js';
import { ago, clock, duration, html, num, put, schedule, state, typologyLink }
  from './render.js';
import { typologyPage } from './typology.js';

const POLL_MS = 1500;

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

// routes and the poll loop

const main = document.getElementById('page');
const status = document.getElementById('status');
let generation = 0, wake = () => {};

function route() {
  const [page, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  if (page === 'workers') return { nav: 'workers', view: workersPage() };
  if (page === 'typology' && rest.length) {
    try {
      const name = decodeURIComponent(rest.join('/'));
      return { nav: 'typologies', view: typologyPage(name, refreshNow) };
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

if (window.top !== window.self) {
  document.body.textContent = 'The rezina console does not run inside another page.';
} else {
  keepToken();
  window.addEventListener('hashchange', show);
  show();
}
