// The page's chrome around the terminal: the disconnected overlay and the
// extra keys of touch screens (with their sticky Ctrl and Alt).

import { $, EXTRA_KEYS, encoder } from './constants.js';

// next: the countdown line, '' for none, null to hide the overlay.
// why: overrides the reason (a refusal the page cannot retry past).
// lostWhy, unreachable, stopped: what the connection knows of its loss.
export function renderOverlay(overlay, next, why, { lostWhy, unreachable, stopped }) {
  if (next === null) {
    overlay.box.hidden = true;
    return;
  }
  const words = [];
  if (why) {
    words.push(why);
  } else {
    if (lostWhy) words.push(lostWhy);
    if (unreachable || !lostWhy) words.push('The server cannot be reached.');
  }
  overlay.title.textContent = stopped ? 'Not connected' : 'Disconnected';
  overlay.why.textContent = words.join(' ');
  overlay.next.textContent = next;
  overlay.box.hidden = false;
}

// Sticky Ctrl sends the next key as its control character; sticky Alt
// puts ESC before it (what a terminal's "meta sends escape" does).
export function applyModifiers(mods, text) {
  let out = text;
  if (mods.ctrl && out.length === 1) {
    const code = out.toUpperCase().charCodeAt(0);
    if (code >= 0x40 && code <= 0x5f) out = String.fromCharCode(code - 0x40);
    else if (out === ' ' || out === '2') out = '\x00';
    else if (out === '?') out = '\x7f';
  }
  if (mods.alt) out = '\x1b' + out;
  setModifier(mods, 'ctrl', false);
  setModifier(mods, 'alt', false);
  return out;
}

function setModifier(mods, name, on) {
  mods[name] = on;
  const button = document.querySelector('#keys [data-key="' + name + '"]');
  if (button) button.setAttribute('aria-pressed', on ? 'true' : 'false');
}

// A row of keys a phone's keyboard lacks, shown only on touch screens.
export function setUpExtraKeys(term, mods, handleInput) {
  const row = $('keys');
  // A laptop with a touch screen also has a keyboard: no row there.
  const touch = window.matchMedia('(pointer: coarse)').matches ||
    (((navigator.maxTouchPoints || 0) > 0 || 'ontouchstart' in window) &&
     !window.matchMedia('(any-pointer: fine)').matches);
  if (!touch) return;
  row.hidden = false;
  // pointerdown's default would take the focus from the terminal and
  // close the on-screen keyboard.
  row.addEventListener('pointerdown', (event) => event.preventDefault());
  row.addEventListener('mousedown', (event) => event.preventDefault());
  row.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-key]');
    if (!button) return;
    const key = button.dataset.key;
    if (key === 'ctrl' || key === 'alt') {
      setModifier(mods, key, !mods[key]);
    } else if (EXTRA_KEYS[key] !== undefined) {
      // Ctrl and Alt apply to typed keys; with a key of this row Alt
      // still means an ESC before it.
      const text = (mods.alt ? '\x1b' : '') + EXTRA_KEYS[key];
      setModifier(mods, 'ctrl', false);
      setModifier(mods, 'alt', false);
      handleInput(encoder.encode(text), '');
    }
    term.focus();
  });
}
