// The project chooser: open a project by id, and the list of sessions.

import { $, PROJECT_RE, PROJECT_RULE, NOT_AUTHORISED, LIST_REFRESH_MS } from './constants.js';
import { say, span, formatTime, errorText } from './util.js';

export function showChooser(problem, project) {
  $('chooser').hidden = false;
  const form = $('open-form');
  const input = $('open-id');
  const message = $('open-message');
  if (problem) {
    input.value = project || '';
    say(message, problem, 'bad');
  }
  form.addEventListener('submit', (event) => {
    // Checked here so a bad id gets a sentence, not a refused WebSocket.
    const id = input.value.trim();
    if (!PROJECT_RE.test(id)) {
      event.preventDefault();
      say(message, PROJECT_RULE, 'bad');
      input.focus();
      return;
    }
    input.value = id;
  });
  input.addEventListener('input', () => say(message, ''));
  input.focus();
  let timer = null;
  const refresh = async () => {
    clearTimeout(timer);
    // A hidden tab does not ask; it asks again as soon as it is shown.
    if (document.visibilityState !== 'hidden') await loadSessions(refresh);
    clearTimeout(timer);
    timer = setTimeout(refresh, LIST_REFRESH_MS);
  };
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refresh();
  });
  refresh();
}

async function loadSessions(refresh) {
  const message = $('list-message');
  const list = $('session-list');
  let response;
  try {
    response = await fetch('api/sessions', { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch (err) {
    say(message, 'Could not reach the server: ' + err.message, 'bad');
    return;
  }
  if (response.status === 401 || response.status === 403) {
    say(message, NOT_AUTHORISED, 'bad');
    return;
  }
  if (!response.ok) {
    say(message, 'Could not list sessions: ' + (await errorText(response)), 'bad');
    return;
  }
  let body;
  try {
    body = await response.json();
  } catch (err) {
    say(message, 'Could not list sessions: the server did not answer with JSON.', 'bad');
    return;
  }
  const sessions = Array.isArray(body) ? body : (body && Array.isArray(body.sessions) ? body.sessions : []);
  // The list is drawn again on every refresh: keep the keyboard focus on
  // the same session's link or button.
  const focused = document.activeElement && list.contains(document.activeElement)
    ? { project: document.activeElement.closest('li').dataset.project, close: document.activeElement.classList.contains('close') }
    : null;
  list.replaceChildren();
  if (sessions.length === 0) {
    say(message, 'No sessions yet. Open a project above to start one.');
    return;
  }
  say(message, '');
  sessions
    .filter((s) => s && typeof s.output_project_id === 'string')
    .sort((a, b) => a.output_project_id.localeCompare(b.output_project_id))
    .forEach((s) => list.append(sessionItem(s, refresh)));
  if (focused) {
    const item = Array.from(list.children).find((li) => li.dataset.project === focused.project);
    const target = item && (focused.close ? item.querySelector('.close') : item.querySelector('a'));
    if (target) target.focus();
  }
}

function sessionItem(s, refresh) {
  // Built with textContent only: nothing from the server is parsed as HTML.
  const li = document.createElement('li');
  const link = document.createElement('a');
  link.href = '?project=' + encodeURIComponent(s.output_project_id);
  link.textContent = s.output_project_id;
  li.append(link);
  li.dataset.project = s.output_project_id;
  const status = span(s.status || 'unknown', 'meta status-' + String(s.status || 'unknown'));
  li.append(status);
  const clients = Number(s.clients);
  if (Number.isFinite(clients)) {
    li.append(span(clients === 1 ? '1 client' : clients + ' clients', 'meta'));
  }
  if (s.claude_state) {
    const claude = span('claude ' + String(s.claude_state), 'meta claude-state claude-' + String(s.claude_state));
    if (s.claude_state_detail) claude.title = String(s.claude_state_detail);
    li.append(claude);
  }
  if (s.claude_session_id) {
    const claude = span('claude ' + String(s.claude_session_id).slice(0, 8), 'meta');
    claude.title = String(s.claude_session_id);
    li.append(claude);
  }
  const when = formatTime(s.last_activity);
  if (when) li.append(span('active ' + when, 'meta activity'));
  if (s.status === 'running') {
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'close';
    close.textContent = 'close';
    close.title = 'End the program of ' + s.output_project_id;
    close.addEventListener('click', () => closeSession(s.output_project_id, refresh));
    li.append(close);
  }
  return li;
}

async function closeSession(id, refresh) {
  const message = $('list-message');
  if (!window.confirm('Close the session of "' + id + '"? Its program is ended.')) return;
  let response;
  try {
    response = await fetch('api/sessions/' + encodeURIComponent(id), { method: 'DELETE', cache: 'no-store' });
  } catch (err) {
    say(message, 'Could not reach the server: ' + err.message, 'bad');
    return;
  }
  if (!response.ok) {
    say(message, 'Could not close ' + id + ': ' + (await errorText(response)), 'bad');
    return;
  }
  refresh();
}
