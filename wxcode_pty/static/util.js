// Small helpers without state: formatting, messages, stored settings.

import { FONT_SIZE_KEY, FONT_SIZE_DEFAULT, FONT_SIZE_MIN, FONT_SIZE_MAX } from './constants.js';

export function span(text, className) {
  const el = document.createElement('span');
  el.className = className;
  el.textContent = text;
  return el;
}

// last_activity may be an ISO string or a Unix time in seconds or
// milliseconds; accept each rather than show "Invalid Date".
export function formatTime(value) {
  if (value === null || value === undefined || value === '') return '';
  let date;
  if (typeof value === 'number') {
    date = new Date(value < 1e12 ? value * 1000 : value);
  } else {
    date = new Date(value);
  }
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString();
}

export async function errorText(response) {
  // Errors are {"error": {"code", "message"}}; fall back to the status line.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (err) { /* not JSON */ }
  return 'HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : '');
}

export function say(el, text, tone) {
  el.textContent = text;
  if (tone) el.dataset.tone = tone; else delete el.dataset.tone;
}

export function storedFontSize() {
  let size = NaN;
  try { size = Number(localStorage.getItem(FONT_SIZE_KEY) || NaN); } catch (err) { /* storage off */ }
  return Number.isInteger(size) && size >= FONT_SIZE_MIN && size <= FONT_SIZE_MAX ? size : FONT_SIZE_DEFAULT;
}

// 42s, 3m 05s, 2h 07m
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + pad(Math.floor(s / 60) % 60) + 'm';
}

export function exitText(msg) {
  if (msg.signal) return 'killed by ' + msg.signal;
  if (msg.code !== null && msg.code !== undefined) return 'exited with code ' + msg.code;
  return 'exited';
}

export function errorMessage(msg) {
  switch (msg.code) {
    case 'input_overflow':
      return 'input dropped: the program is not reading';
    default:
      return (msg.message || msg.code || 'error') + (msg.message && msg.code ? ' (' + msg.code + ')' : '');
  }
}
