// The terminal of one project: the connection (connection.js), the terminal
// (term.js) and the page around them (chrome.js) wired together, with the
// status bar, the overlay, the tab title and notifications.

import {
  RESIZE_DEBOUNCE_MS, SIZE_ANSWER_MS, NOTIFY_TURN_SECONDS, WAITING_MARK, encoder, $,
} from './constants.js';
import { formatDuration } from './util.js';
import { renderOverlay, applyModifiers, setUpExtraKeys } from './chrome.js';
import { createTerminal, loadAddons, setUpFontSize, setUpSearch, setUpTouchScroll } from './term.js';
import { createConnection } from './connection.js';

export function startTerminal(projectId) {
  const container = $('terminal');
  const bar = {
    work: $('st-work'),
    notify: $('st-notify'),
    find: $('st-find'),
    fontDown: $('st-font-down'),
    fontUp: $('st-font-up'),
    state: $('st-state'),
    project: $('st-project'),
    claude: $('st-claude'),
    notice: $('st-notice'),
    action: $('st-action'),
    size: $('st-size'),
    sizeText: $('st-size-text'),
    sizeUse: $('st-size-use'),
    readOnly: $('st-readonly'),
  };
  const overlay = {
    box: $('overlay'),
    title: $('ov-title'),
    why: $('ov-why'),
    next: $('ov-next'),
    button: $('ov-reconnect'),
  };
  $('term-area').hidden = false;
  $('status').hidden = false;
  bar.project.textContent = 'project ' + projectId;
  bar.project.title = projectId;

  // The renderer is chosen before the first fit: it measures the cells.
  const { term, fit, renderer } = createTerminal(container, () => fitNow());
  fitNow();

  // What the page knows besides the connection's offsets.
  const st = {
    status: 'connecting',
    claudeSessionId: null,
    // The PTY's size as the server last said ({cols, rows}), null while
    // not connected. The most recently active client's size applies, so it
    // can differ from this page's own terminal.
    ptySize: null,
    // Claude's state ({state, detail, since}) as the server last said;
    // null for a program that is not Claude.
    claudeState: null,
  };

  let sizeSentAt = -Infinity;
  let sizeTimer = null;
  let programTitle = '';     // the program's title (OSC 0/2)
  let turnStart = null;      // "since" of the turn Claude is in, if any
  let workTimer = null;      // refreshes the state's duration
  let shown = null;          // the notification on screen, if any
  let readOnly = false;      // the server refuses this user's input
  const mods = { ctrl: false, alt: false };   // sticky modifiers of the extra keys

  const connection = createConnection(projectId, term, {
    connecting(resuming) {
      if (!overlay.box.hidden) overlay.next.textContent = 'trying now…';
      showAction(null);
      setState('connecting', resuming ? 'reconnecting' : 'connecting', 'warn');
    },
    attached(hello) {
      setClaude(hello.claude_session_id);
      // The server says Claude's state again after the replay.
      clearClaudeState();
      if (hello.resumed) notice('the program was started again and resumed its conversation');
      setPtySize({ cols: hello.cols, rows: hello.rows });
    },
    connected() {
      showOverlay(null);
      setState('connected', 'connected', 'good');
    },
    retrying(seconds) {
      setState('reconnecting', 'reconnecting in ' + seconds + 's', 'warn');
      showOverlay('next try in ' + seconds + ' s');
      showAction('Reconnect now');
    },
    stopped(text, status, actionLabel) {
      setState(status || 'stopped', text, status === 'exited' ? 'warn' : 'bad');
      showAction(actionLabel || 'Reconnect');
      // An exit leaves the program's last screen in view; the bar says it.
      if (status !== 'exited') showOverlay('', text);
      else showOverlay(null);
    },
    // The socket closes right after; stopped() then says it once.
    exited() {
      clearClaudeState();
    },
    ptySize: setPtySize,
    sizeSent() {
      sizeSentAt = Date.now();
      showSize();
    },
    claudeState: setClaudeState,
    claudeSession(id, reason) {
      setClaude(id);
      if (reason) notice(reason);
    },
    readOnly: setReadOnly,
    notice,
  });
  window.wxcodePty = {
    term,
    state: () => ({
      status: st.status,
      offset: connection.offset(),
      sessionId: connection.sessionId(),
      claudeSessionId: st.claudeSessionId,
      ptySize: st.ptySize,
      claudeState: st.claudeState,
    }),
  };

  term.onData((data) => handleInput(encoder.encode(data), data));
  // onBinary carries bytes as a string of code points 0-255 (mouse reports).
  term.onBinary((data) => handleInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff), ''));
  // Resizing makes this page the active client: the PTY takes its size.
  term.onResize(() => connection.sendSize());
  term.onTitleChange((title) => {
    programTitle = title;
    updateTitle();
  });

  // ResizeObserver also catches the status bar changing height, which a
  // window resize listener would miss.
  let resizeTimer = null;
  new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(fitNow, RESIZE_DEBOUNCE_MS);
  }).observe(container);

  bar.action.addEventListener('click', () => userReconnect());
  bar.sizeUse.addEventListener('click', () => {
    connection.sendSize();
    term.focus();
  });
  container.addEventListener('click', () => { if (disconnected()) userReconnect(); });
  overlay.button.addEventListener('click', () => userReconnect());
  // Waking up (a tab shown again, the network back, a page restored from
  // the back-forward cache) is when a connection is most likely wanted and
  // most likely gone: try at once instead of waiting for the backoff.
  const wake = (event) => {
    if (connection.retrying()) {
      userReconnect();
    } else if (event && event.type === 'pageshow' && event.persisted && !connection.stopped() &&
               !connection.open()) {
      userReconnect();
    }
  };
  window.addEventListener('online', wake);
  window.addEventListener('pageshow', wake);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') wake();
  });
  setUpExtraKeys(term, mods, handleInput);
  setUpTouchScroll(term, container);

  // ------------------------------------------------ addons and tools

  loadAddons(term, connection.muted, notice);

  window.wxcodePty.renderer = renderer.active;

  const search = setUpSearch(term, bar.find);
  window.wxcodePty.search = search;

  // Font size: remembered per browser, applied to every project.
  setUpFontSize(term, bar, fitNow);

  // Notifications are asked for only when the user clicks "notify me".
  bar.notify.addEventListener('click', () => {
    Promise.resolve(window.Notification.requestPermission())
      .catch(() => undefined)
      .then(() => { showNotifyButton(); term.focus(); });
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && shown) {
      shown.close();
      shown = null;
    }
  });

  connection.start();
  term.focus();
  updateTitle();

  // --------------------------------------------------- Claude's state

  function setClaudeState(msg) {
    const prev = st.claudeState;
    const now = {
      state: String(msg.state || 'unknown'),
      detail: typeof msg.detail === 'string' && msg.detail ? msg.detail : null,
      since: Number(msg.since),
    };
    st.claudeState = now;
    if (now.state === 'working' && turnStart === null) turnStart = now.since;
    const turn = now.state === 'ready' && turnStart !== null ? now.since - turnStart : null;
    if (now.state === 'ready' || now.state === 'starting') turnStart = null;
    showWork();
    updateTitle();
    showNotifyButton();
    if (prev !== null) notifyChange(prev, now, turn);
  }

  function clearClaudeState() {
    st.claudeState = null;
    turnStart = null;
    showWork();
    updateTitle();
    showNotifyButton();
  }

  // "Claude working · 12s": the state and how long it has lasted, from the
  // server's "since" (a clock ahead of this one reads as 0s, never less).
  function showWork() {
    clearTimeout(workTimer);
    workTimer = null;
    const c = st.claudeState;
    bar.work.hidden = c === null;
    if (c === null) return;
    const text = c.state + (c.state === 'waiting' && c.detail ? ': ' + c.detail : '');
    let took = '';
    if (Number.isFinite(c.since)) {
      took = ' · ' + formatDuration(Date.now() / 1000 - c.since);
      workTimer = setTimeout(showWork, 1000);
    }
    bar.work.textContent = 'Claude ' + text + took;
    bar.work.title = 'Claude ' + text +
      (Number.isFinite(c.since) ? ' since ' + new Date(c.since * 1000).toLocaleTimeString() : '');
    bar.work.dataset.state = c.state;
  }

  // The tab says when Claude waits for the user ("● "), and otherwise
  // follows the program's own title and the project.
  function updateTitle() {
    const c = st.claudeState;
    const mark = c !== null && c.state === 'waiting' ? WAITING_MARK : '';
    document.title = mark + (programTitle ? programTitle + ' · ' : '') + projectId + ' · wxcode-pty';
  }

  function showNotifyButton() {
    bar.notify.hidden = !(typeof window.Notification === 'function' &&
      st.claudeState !== null && window.Notification.permission === 'default');
  }

  // A notification when the tab is hidden and Claude needs the user, or
  // finished a turn long enough that the user has likely looked away.
  function notifyChange(prev, now, turn) {
    if (document.visibilityState !== 'hidden') return;
    if (typeof window.Notification !== 'function' || window.Notification.permission !== 'granted') return;
    let body = null;
    if (now.state === 'waiting' && (prev.state !== 'waiting' || prev.since !== now.since)) {
      body = now.detail || 'Claude needs you';
    } else if (now.state === 'ready' && prev.state !== 'ready' && turn !== null &&
               turn >= NOTIFY_TURN_SECONDS) {
      body = 'Claude finished (' + formatDuration(turn) + ')';
    }
    if (body === null) return;
    try {
      const n = new window.Notification(projectId + ' · wxcode-pty', {
        body,
        tag: 'wxcode-pty:' + projectId,
        icon: 'static/favicon.svg',
      });
      n.onclick = () => {
        window.focus();
        n.close();
        term.focus();
      };
      if (shown) shown.close();
      shown = n;
    } catch (err) {
      // Some browsers (Chrome on Android) only notify from a service worker.
    }
  }

  function fitNow() {
    // Fitting can fail before the renderer has measured a cell (e.g. while
    // the page is hidden); the next resize tries again.
    try { fit.fit(); } catch (err) { /* try again on the next resize */ }
  }

  function handleInput(bytes, text) {
    if (connection.muted()) return;
    if (readOnly) return;      // the server would refuse it: do not pretend to type
    if ((mods.ctrl || mods.alt) && text) {
      text = applyModifiers(mods, text);
      bytes = encoder.encode(text);
    }
    if (disconnected()) {
      // While disconnected, Enter means "connect again"; other keys have
      // nowhere to go.
      if (text.includes('\r')) userReconnect();
      return;
    }
    connection.sendInput(bytes);
  }

  // Stopped, or waiting for the next try: no connection is open or opening.
  function disconnected() {
    return connection.stopped() || connection.retrying();
  }

  // When another tab or device is the active client, the program draws for
  // its size, not this page's: say so, and offer to take the size back.
  function showSize() {
    clearTimeout(sizeTimer);
    sizeTimer = null;
    const pty = st.ptySize;
    const differs = pty !== null && (pty.cols !== term.cols || pty.rows !== term.rows);
    const wait = sizeSentAt + SIZE_ANSWER_MS - Date.now();
    if (differs && wait > 0) sizeTimer = setTimeout(showSize, wait);
    bar.size.hidden = !(differs && wait <= 0);
    if (bar.size.hidden) return;
    bar.sizeText.textContent = 'the terminal is ' + pty.cols + '×' + pty.rows + ' for another tab';
    bar.sizeUse.title = "Resize it to this tab's " + term.cols + '×' + term.rows;
  }

  function setPtySize(size) {
    st.ptySize = size;
    showSize();
  }

  // next: the countdown line, '' for none, null to hide the overlay.
  // why: overrides the reason (a refusal the page cannot retry past).
  function showOverlay(next, why) {
    renderOverlay(overlay, next, why, connection.lost());
  }

  function setReadOnly() {
    if (readOnly) return;
    readOnly = true;
    bar.readOnly.hidden = false;
    term.options.disableStdin = true;
    notice('this server does not accept your keystrokes here: you can watch, not type');
  }

  // Sticky Ctrl and Alt of the extra keys: see chrome.js.

  function userReconnect() {
    notice('');
    connection.reconnect();
    term.focus();
  }

  function setState(status, text, tone) {
    st.status = status;
    bar.state.textContent = text;
    bar.state.dataset.tone = tone;
  }

  function setClaude(id) {
    st.claudeSessionId = id || null;
    bar.claude.textContent = id ? 'claude ' + id : '';
    bar.claude.title = id || '';
  }

  function notice(text) {
    bar.notice.textContent = text;
    bar.notice.title = text;
  }

  function showAction(label) {
    bar.action.hidden = !label;
    if (label) bar.action.textContent = label;
  }
}
