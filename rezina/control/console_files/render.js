// How the console writes HTML and shows values. Every string from the API is untrusted:
// it reaches HTML only through html``, which escapes whatever it interpolates.

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

export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => { out += esc(value) + strings[i + 1]; });
  return new Safe(out);
}

export function put(element, safe) {
  element.innerHTML = safe.text;
}

// an element holding text as text, for the parts built without html``
export function textElement(tag, text, className) {
  const element = document.createElement(tag);
  if (text !== undefined) element.textContent = text;
  if (className) element.className = className;
  return element;
}

// what the numbers look like

export function num(value) {
  return value === null || value === undefined ? '–' : String(value);
}

export function clock(epoch) {
  if (!epoch) return '–';
  const when = new Date(epoch * 1000);
  const today = new Date().toDateString() === when.toDateString();
  return today ? when.toLocaleTimeString() : when.toLocaleString();
}

export function seconds(value) {
  if (value === null || value === undefined) return '–';
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 120) return `${Math.round(value)} s`;
  if (value < 7200) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function ago(epoch) {
  return epoch ? `${seconds(Math.max(0, Date.now() / 1000 - epoch))} ago` : '–';
}

export function schedule(s) {
  if (!s || (!s.interval && !s.cron && !s.start)) return 'once';
  const every = s.interval < 120 ? `${Number(s.interval.toFixed(3))} s` : seconds(s.interval);
  const when = s.interval ? `every ${every}` : s.cron ? `cron ${s.cron}` : 'once';
  return s.start ? `${when} from ${clock(s.start)}` : when;
}

export function duration(run) {
  if (!run || !run.started) return '–';
  const end = run.ended || Date.now() / 1000;
  return seconds(end - run.started) + (run.ended ? '' : ' so far');
}

function stateKind(name) {
  return /^[A-Za-z]+$/.test(name || '') ? name.toLowerCase() : 'unknown';
}

export function state(name) {
  return html`<span class="state state-${stateKind(name)}">${name || '–'}</span>`;
}

export function stateElement(name) {
  return textElement('span', name || '–', `state state-${stateKind(name)}`);
}

export function typologyLink(name) {
  return html`<a href="#/typology/${encodeURIComponent(name)}">${name}</a>`;
}
