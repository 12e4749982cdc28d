// rz-master's JSON API (/api/...) and the token that actions carry, kept per tab.

const TOKEN_KEY = 'rezina-token';

async function answerOf(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `HTTP ${response.status} ${response.statusText}`);
  }
  return body.result;
}

export async function api(path) {
  return answerOf(await fetch('/api/' + path, { cache: 'no-store' }));
}

export async function act(name, action, body) {
  const headers = {};
  if (token()) headers.Authorization = 'Bearer ' + token();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api/typologies/${encodeURIComponent(name)}/${action}`, {
    method: 'POST', headers, cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answerOf(response);
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function keepToken() {
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
