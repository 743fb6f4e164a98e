// xterm.js: the terminal, its addons, find, the font size and touch scrolling.
// xterm.js and its addons are UMD scripts loaded before the page's modules
// (window.Terminal, window.FitAddon, ...).

import { $, FONT_SIZE_KEY, FONT_SIZE_MIN, FONT_SIZE_MAX } from './constants.js';
import { storedFontSize } from './util.js';

// The terminal, opened in container, with the fit addon and a renderer loaded;
// onRendererChange() runs when the renderer changes (its cells may differ).
export function createTerminal(container, onRendererChange) {
  const term = new window.Terminal({
    cursorBlink: true,
    fontFamily: getComputedStyle(document.documentElement).getPropertyValue('--mono').replace(/\s+/g, ' ').trim() || 'monospace',
    fontSize: storedFontSize(),
    scrollback: 5000,
    // The unicode11 addon and the search addon's match highlights use
    // parts of the API that xterm.js still calls proposed.
    allowProposedApi: true,
    // xterm's default ANSI colours are dim on a dark background (blue
    // especially); these keep every colour readable against it.
    theme: {
      background: '#1a1b1e',
      foreground: '#d8dadf',
      cursor: '#d8dadf',
      cursorAccent: '#1a1b1e',
      selectionBackground: '#44506a',
      black: '#4b5059',
      red: '#f07178',
      green: '#9ccc65',
      yellow: '#e5c07b',
      blue: '#6cb6ff',
      magenta: '#d59cf0',
      cyan: '#56d4dd',
      white: '#d8dadf',
      brightBlack: '#80868f',
      brightRed: '#ff8f95',
      brightGreen: '#b5e48c',
      brightYellow: '#f5d78e',
      brightBlue: '#91c8ff',
      brightMagenta: '#e6b3ff',
      brightCyan: '#85e9ef',
      brightWhite: '#ffffff',
    },
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(container);
  const renderer = loadRenderer(term, onRendererChange);
  return { term, fit, renderer };
}

// Links, wide characters and OSC 52 copies. isMuted() is true while a replay
// is drawn; notice(text) says something in the status bar.
export function loadAddons(term, isMuted, notice) {
  // Links: a URL the program prints opens in a new tab, which gets neither
  // a handle on this page (noopener) nor its address (noreferrer).
  term.loadAddon(new window.WebLinksAddon.WebLinksAddon((event, uri) => {
    window.open(uri, '_blank', 'noopener,noreferrer');
  }));

  // Emoji and East Asian wide characters take the cells Claude and other
  // modern programs expect them to.
  term.loadAddon(new window.Unicode11Addon.Unicode11Addon());
  term.unicode.activeVersion = '11';

  // OSC 52: a program may put text on the clipboard (Claude's /copy, vim,
  // tmux over ssh), but never read it: what the user copied elsewhere is
  // not the program's to see, so a read gets an empty answer.
  term.loadAddon(new window.ClipboardAddon.ClipboardAddon(undefined, {
    readText: () => Promise.resolve(''),
    writeText: (selection, text) => {
      // A replay holds old copies: drawing it again must not overwrite
      // what the user has on the clipboard now.
      if (isMuted()) return Promise.resolve();
      if (!navigator.clipboard) {
        notice('the program copied text, but the clipboard needs a secure (https) page');
        return Promise.resolve();
      }
      return navigator.clipboard.writeText(text).catch(() => {
        notice('the program copied text, but the browser refused the clipboard');
      });
    },
  }));
}

// Font size: remembered per browser, applied to every project. bar holds
// the fontDown and fontUp buttons; fitNow() fits the terminal again.
export function setUpFontSize(term, bar, fitNow) {
  bar.fontDown.addEventListener('click', () => setFontSize(term.options.fontSize - 1));
  bar.fontUp.addEventListener('click', () => setFontSize(term.options.fontSize + 1));
  showFontButtons();

  function setFontSize(size) {
    const next = Math.min(FONT_SIZE_MAX, Math.max(FONT_SIZE_MIN, Math.round(size)));
    if (next !== term.options.fontSize) {
      term.options.fontSize = next;
      try { localStorage.setItem(FONT_SIZE_KEY, String(next)); } catch (err) { /* storage off */ }
      // Fewer or more cells fit now; fitting resizes the PTY too.
      fitNow();
    }
    showFontButtons();
    term.focus();
  }

  function showFontButtons() {
    bar.fontDown.disabled = term.options.fontSize <= FONT_SIZE_MIN;
    bar.fontUp.disabled = term.options.fontSize >= FONT_SIZE_MAX;
    bar.fontDown.title = 'Smaller text (now ' + term.options.fontSize + ' px)';
    bar.fontUp.title = 'Bigger text (now ' + term.options.fontSize + ' px)';
  }
}

// Find in the terminal (scrollback included): Ctrl+Shift+F or the "find"
// button. Ctrl+F stays the program's (it moves the cursor in shells).
export function setUpSearch(term, findButton) {
  const addon = new window.SearchAddon.SearchAddon();
  term.loadAddon(addon);
  const box = {
    form: $('search'),
    text: $('search-text'),
    matchCase: $('search-case'),
    prev: $('search-prev'),
    count: $('search-count'),
    close: $('search-close'),
  };
  const decorations = {
    matchBackground: '#4d4326',
    matchOverviewRuler: '#e5c07b',
    activeMatchBackground: '#9a7b1c',
    activeMatchColorOverviewRuler: '#ffd27a',
  };
  const options = (incremental) => ({
    caseSensitive: box.matchCase.getAttribute('aria-pressed') === 'true',
    incremental,
    decorations,
  });
  const find = (forward, incremental) => {
    const text = box.text.value;
    if (!text) {
      addon.clearDecorations();
      term.clearSelection();
      box.count.textContent = '';
      delete box.form.dataset.found;
      return;
    }
    const found = forward ? addon.findNext(text, options(incremental)) : addon.findPrevious(text, options(false));
    box.form.dataset.found = found ? 'yes' : 'none';
    if (!found) box.count.textContent = 'no matches';
  };
  addon.onDidChangeResults(({ resultIndex, resultCount }) => {
    if (resultCount === 0) box.count.textContent = box.text.value ? 'no matches' : '';
    else if (resultIndex < 0) box.count.textContent = resultCount + ' matches';
    else box.count.textContent = (resultIndex + 1) + ' of ' + resultCount;
  });
  const open = () => {
    box.form.hidden = false;
    box.text.focus();
    box.text.select();
    if (box.text.value) find(true, true);
  };
  const close = () => {
    box.form.hidden = true;
    addon.clearDecorations();
    term.clearSelection();
    term.focus();
  };
  const isFindKey = (e) => e.ctrlKey && e.shiftKey && !e.altKey && !e.metaKey &&
    (e.code === 'KeyF' || e.key === 'F' || e.key === 'f');
  term.attachCustomKeyEventHandler((e) => {
    if (!isFindKey(e)) return true;
    if (e.type === 'keydown') {
      e.preventDefault();
      open();
    }
    return false;   // the key is the page's, not the program's
  });
  box.form.addEventListener('submit', (e) => { e.preventDefault(); find(true, false); });
  box.form.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      close();
    } else if (e.key === 'Enter' && e.shiftKey) {
      e.preventDefault();
      find(false, false);
    } else if (isFindKey(e)) {
      e.preventDefault();
      box.text.select();
    }
  });
  box.text.addEventListener('input', () => find(true, true));
  box.matchCase.addEventListener('click', () => {
    const on = box.matchCase.getAttribute('aria-pressed') !== 'true';
    box.matchCase.setAttribute('aria-pressed', String(on));
    find(true, true);
  });
  box.prev.addEventListener('click', () => find(false, false));
  box.close.addEventListener('click', close);
  findButton.addEventListener('click', () => (box.form.hidden ? open() : close()));
  return { addon, open, close, find: (text, forward = true) => { box.text.value = text; find(forward, false); } };
}

// A finger dragged over the terminal scrolls its history. xterm.js 6.0.0
// lost its own touch scrolling (xterm.js issue 5489, fixed upstream by
// pull request 5685): remove this when the vendored xterm.js has the fix,
// or both would scroll. A drag starts after 10 px so a tap still focuses
// the terminal (and opens the on-screen keyboard).
export function setUpTouchScroll(term, container) {
  let startY = null;
  let lastY = 0;
  let rest = 0;
  let dragging = false;
  container.addEventListener('touchstart', (event) => {
    startY = event.touches.length === 1 ? event.touches[0].clientY : null;
    lastY = startY;
    rest = 0;
    dragging = false;
  }, { passive: true });
  container.addEventListener('touchmove', (event) => {
    if (startY === null || event.touches.length !== 1) return;
    const y = event.touches[0].clientY;
    if (!dragging && Math.abs(y - startY) < 10) return;
    dragging = true;
    // No pull-to-refresh or page scroll while the terminal scrolls.
    event.preventDefault();
    rest += lastY - y;
    lastY = y;
    const screen = container.querySelector('.xterm-screen');
    const cell = screen && term.rows ? screen.clientHeight / term.rows : 17;
    const lines = Math.trunc(rest / cell);
    if (lines !== 0) {
      term.scrollLines(lines);
      rest -= lines * cell;
    }
  }, { passive: false });
  const end = () => { startY = null; dragging = false; };
  container.addEventListener('touchend', end);
  container.addEventListener('touchcancel', end);
}

// The WebGL renderer draws faster than xterm.js's DOM renderer. Without WebGL
// (no GPU, WebGL turned off) loading it throws, and the DOM renderer stays; if
// the WebGL context is lost later, the addon is disposed and the DOM renderer
// takes over again. active() says which one draws: 'webgl' or 'dom'.
function loadRenderer(term, onChange) {
  let active = 'dom';
  if (window.WebglAddon) {
    try {
      const webgl = new window.WebglAddon.WebglAddon();
      webgl.onContextLoss(() => {
        active = 'dom';
        webgl.dispose();
        onChange();
      });
      term.loadAddon(webgl);
      active = 'webgl';
    } catch (err) {
      active = 'dom';
    }
  }
  return { active: () => active };
}
