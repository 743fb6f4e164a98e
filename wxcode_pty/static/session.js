// The terminal of one project: xterm.js attached to the plugin's WebSocket.

import {
  PROTOCOL, PROJECT_RE, PROJECT_RULE, NOT_AUTHORISED, RESIZE_DEBOUNCE_MS, PING_INTERVAL_MS, BACKOFF_FIRST_MS, BACKOFF_MAX_MS, MAX_INPUT_FRAME, SIZE_ANSWER_MS, NOTIFY_TURN_SECONDS, FONT_SIZE_KEY, FONT_SIZE_DEFAULT, FONT_SIZE_MIN, FONT_SIZE_MAX, WAITING_MARK, LIST_REFRESH_MS, EXTRA_KEYS, EMPTY, encoder, $,
} from './constants.js';
import { formatDuration, exitText, errorMessage } from './util.js';
import { renderOverlay, applyModifiers, setUpExtraKeys } from './chrome.js';
import { createTerminal, loadAddons, setUpFontSize, setUpSearch, setUpTouchScroll } from './term.js';

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

  // What the page knows about the stream. offset/sessionId survive
  // reconnects; they are what lets a reconnect ask only for missed bytes.
  const st = {
    status: 'connecting',
    offset: null,
    sessionId: null,
    claudeSessionId: null,
    // The PTY's size as the server last said ({cols, rows}), null while
    // not connected. The most recently active client's size applies, so it
    // can differ from this page's own terminal.
    ptySize: null,
    // Claude's state ({state, detail, since}) as the server last said;
    // null for a program that is not Claude.
    claudeState: null,
  };
  window.wxcodePty = { term, state: () => Object.assign({}, st) };

  let conn = null;           // the live connection, see connect()
  let stopped = false;       // no automatic reconnect until the user asks
  // After an exit, a restart must not resume: offsets of the ended run mean
  // nothing to the next one, and a fresh attach is what starts the program.
  let resumeOnRestart = true;
  let attempt = 0;           // consecutive failed connections, for backoff
  let neverOpened = 0;       // consecutive connections refused at the handshake
  let retryTimer = null;
  let countdownTimer = null;
  let pingTimer = null;
  let pingId = 0;
  let sizeSentAt = -Infinity;
  let sizeTimer = null;
  let programTitle = '';     // the program's title (OSC 0/2)
  let turnStart = null;      // "since" of the turn Claude is in, if any
  let workTimer = null;      // refreshes the state's duration
  let shown = null;          // the notification on screen, if any
  // Why the page is disconnected, in words, for the overlay: how the last
  // open connection ended, then whether the server can be reached.
  let lostWhy = '';
  let unreachable = false;
  let readOnly = false;      // the server refuses this user's input
  const mods = { ctrl: false, alt: false };   // sticky modifiers of the extra keys

  // Replayed bytes can contain terminal queries (cursor position, device
  // attributes, colours...). xterm.js answers them through onData as if the
  // user typed, and those answers must never reach the program. xterm parses
  // writes asynchronously, so the answers can come after "replayed" arrives:
  // input stays muted until everything written so far has been parsed.
  // The generation number keeps a stale unmute from an earlier connection
  // from ending a newer replay's mute.
  let muted = false;
  let muteGen = 0;
  const mute = () => { muteGen += 1; muted = true; };
  const unmuteAfterPendingWrites = () => {
    const gen = muteGen;
    term.write(EMPTY, () => { if (gen === muteGen) muted = false; });
  };

  term.onData((data) => handleInput(encoder.encode(data), data));
  // onBinary carries bytes as a string of code points 0-255 (mouse reports).
  term.onBinary((data) => handleInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff), ''));
  term.onResize(() => sendSize());
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
    sendSize();
    term.focus();
  });
  container.addEventListener('click', () => { if (stopped || retryTimer) userReconnect(); });
  overlay.button.addEventListener('click', () => userReconnect());
  // Waking up (a tab shown again, the network back, a page restored from
  // the back-forward cache) is when a connection is most likely wanted and
  // most likely gone: try at once instead of waiting for the backoff.
  const wake = (event) => {
    if (retryTimer) {
      userReconnect();
    } else if (event && event.type === 'pageshow' && event.persisted && !stopped &&
               (!conn || conn.ws.readyState !== WebSocket.OPEN)) {
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

  loadAddons(term, () => muted, notice);

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

  connect(false);
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
    if (muted) return;
    if (readOnly) return;      // the server would refuse it: do not pretend to type
    if ((mods.ctrl || mods.alt) && text) {
      text = applyModifiers(mods, text);
      bytes = encoder.encode(text);
    }
    if (stopped || retryTimer) {
      // While disconnected, Enter means "connect again"; other keys have
      // nowhere to go.
      if (text.includes('\r')) userReconnect();
      return;
    }
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < bytes.length; i += MAX_INPUT_FRAME) {
      conn.ws.send(bytes.subarray(i, i + MAX_INPUT_FRAME));
    }
  }

  // Part of a replay may be on screen, so the terminal no longer matches
  // any offset: the next connection must replay everything from scratch.
  function abandonReplay() {
    st.offset = null;
    unmuteAfterPendingWrites();
  }

  // Drop a connection without running its close handling.
  function detach(c) {
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
    if (c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
    if (c.replaying) abandonReplay();
    clearInterval(pingTimer);
    pingTimer = null;
    if (conn === c) conn = null;
    setPtySize(null);
  }

  function send(text) {
    if (conn && conn.ws.readyState === WebSocket.OPEN) conn.ws.send(text);
  }

  // Resizing makes this page the active client: the PTY takes its size.
  function sendSize() {
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) return;
    send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    sizeSentAt = Date.now();
    showSize();
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

  // resume: ask for the bytes after the last offset seen (since=), in the
  // same process run (session=). Without it the server replays its whole
  // buffer, and starts the program if it is not running.
  function connect(resume) {
    clearRetry();
    stopped = false;
    const url = new URL('ws/' + encodeURIComponent(projectId), location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = '';
    url.hash = '';
    url.searchParams.set('cols', String(term.cols));
    url.searchParams.set('rows', String(term.rows));
    const since = resume && st.offset !== null && st.sessionId ? st.offset : null;
    if (since !== null) {
      url.searchParams.set('since', String(since));
      url.searchParams.set('session', st.sessionId);
    }

    const ws = new WebSocket(url.href);
    ws.binaryType = 'arraybuffer';
    const c = {
      ws,
      since,               // null when not resuming
      opened: false,
      live: false,         // true after "replayed": binary frames count toward offset
      replaying: false,
      exited: null,        // exit message text once "exit" arrived
      sessionChanged: false,
    };
    conn = c;
    setPtySize(null);
    if (!overlay.box.hidden) overlay.next.textContent = 'trying now…';
    setState('connecting', since === null ? 'connecting' : 'reconnecting', 'warn');

    ws.onopen = () => {
      if (conn !== c) return;
      c.opened = true;
      neverOpened = 0;
      pingTimer = setInterval(() => {
        pingId += 1;
        send(JSON.stringify({ type: 'ping', id: pingId }));
      }, PING_INTERVAL_MS);
    };
    ws.onmessage = (event) => {
      if (conn !== c) return;
      if (typeof event.data === 'string') {
        let msg;
        try { msg = JSON.parse(event.data); } catch (err) { return; }
        if (msg && typeof msg === 'object') onControl(c, msg);
        return;
      }
      const bytes = new Uint8Array(event.data);
      term.write(bytes);
      if (c.live && st.offset !== null) st.offset += bytes.byteLength;
    };
    ws.onclose = (event) => {
      if (conn !== c) return;
      onClose(c, event);
    };
  }

  function onControl(c, msg) {
    switch (msg.type) {
      case 'hello': {
        if (msg.protocol !== PROTOCOL) {
          detach(c);
          stop('the server speaks protocol ' + msg.protocol + ', this page speaks ' + PROTOCOL,
            'refused', 'Retry', false);
          return;
        }
        // Offsets restart with every process run: bytes from another run
        // do not continue what the terminal shows.
        c.sessionChanged = st.sessionId !== null && msg.session_id !== st.sessionId;
        st.sessionId = msg.session_id;
        setClaude(msg.claude_session_id);
        // The server says Claude's state again after the replay.
        clearClaudeState();
        if (msg.resumed) notice('the program was started again and resumed its conversation');
        setPtySize({ cols: msg.cols, rows: msg.rows });
        // Attaching makes this the most recent client, whose size applies.
        if (msg.cols !== term.cols || msg.rows !== term.rows) sendSize();
        break;
      }
      case 'replay': {
        c.replaying = true;
        mute();
        // Keep the screen only if these bytes continue exactly where it
        // left off; otherwise draw the replay on a clean terminal. The
        // reset is queued behind pending writes so it lands in order.
        const continues = c.since !== null && !msg.truncated && !c.sessionChanged &&
          msg.from === c.since;
        if (!continues) term.write(EMPTY, () => term.reset());
        break;
      }
      case 'replayed':
        c.replaying = false;
        c.live = true;
        st.offset = msg.offset;
        unmuteAfterPendingWrites();
        attempt = 0;
        lostWhy = '';
        unreachable = false;
        showOverlay(null);
        setState('connected', 'connected', 'good');
        break;
      case 'size':
        setPtySize({ cols: msg.cols, rows: msg.rows });
        break;
      case 'claude_state':
        setClaudeState(msg);
        break;
      case 'claude_session':
        setClaude(msg.claude_session_id);
        if (msg.reason) notice(msg.reason);
        break;
      case 'exit':
        c.exited = exitText(msg);
        clearClaudeState();
        setState('exited', c.exited, msg.code === 0 ? 'good' : 'bad');
        break;
      case 'error':
        if (msg.code === 'forbidden' && msg.message === 'input is not allowed') {
          setReadOnly();
          break;
        }
        notice(errorMessage(msg));
        break;
      default:
        // pong, and message types added by later servers: nothing to do.
        break;
    }
  }

  function onClose(c, event) {
    clearInterval(pingTimer);
    pingTimer = null;
    setPtySize(null);
    if (c.replaying) abandonReplay();
    const reason = event.reason ? ': ' + event.reason : '';
    if (c.opened) {
      lostWhy = 'The server closed the connection (' + event.code +
        (event.reason ? ' "' + event.reason + '"' : '') + ').';
      if (event.code === 1006) lostWhy = 'The connection to the server was lost.';
      unreachable = false;
    }

    if (c.exited) {
      // The program ended; starting it again is the user's decision.
      stop(c.exited + ' — press Enter or click to restart', 'exited', 'Restart', false);
      return;
    }
    switch (event.code) {
      case 1000:
        stop('disconnected' + reason + ' — press Enter or click to reconnect', 'stopped', 'Reconnect', true);
        return;
      case 1008:
        policyRefused(c, reason);
        return;
      case 4001:
        // We fell behind; the missing bytes are still buffered.
        notice('connection was too far behind; catching up');
        connect(true);
        return;
      case 1009:
        notice('message too large');
        connect(true);
        return;
      case 1013:
        notice('limit reached' + reason);
        retry();
        return;
      default:
        if (!c.opened) {
          handshakeFailed(c);
          return;
        }
        retry();
    }
  }

  // A policy refusal can mean a missing token; say so in words the user
  // can act on, rather than the server's short reason.
  async function policyRefused(c, reason) {
    stop('refused by the server' + (reason || ' (policy)'), 'refused', 'Retry', true);
    if (await authStatus() === false && conn === c) {
      stop(NOT_AUTHORISED, 'refused', 'Retry', true);
    }
  }

  // false when the REST API says this user is not authorised, else the
  // HTTP status (0 when the server could not be reached).
  async function authStatus() {
    try {
      const response = await fetch('api/sessions/' + encodeURIComponent(projectId), { cache: 'no-store' });
      return response.status === 401 || response.status === 403 ? false : response.status;
    } catch (err) {
      return 0;
    }
  }

  // A refused handshake (bad token, foreign origin, server down) reaches the
  // page only as close code 1006 with no reason. Ask the REST API, which
  // gives real status codes, so a missing token does not retry forever.
  async function handshakeFailed(c) {
    neverOpened += 1;
    const status = await authStatus();
    if (conn !== c || stopped) return;   // the user reconnected meanwhile
    unreachable = status === 0;
    if (status === false) {
      stop(NOT_AUTHORISED, 'refused', 'Retry', true);
      return;
    }
    if (neverOpened >= 3 && status >= 200 && status < 500) {
      notice('the server refuses the WebSocket (check its allowed origins and hosts)');
    }
    retry();
  }

  function retry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    attempt += 1;
    // Jitter spreads the reconnects of many tabs after a server restart.
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    const due = Date.now() + delay;
    const tick = () => {
      const secs = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      setState('reconnecting', 'reconnecting in ' + secs + 's', 'warn');
      showOverlay('next try in ' + secs + ' s');
    };
    clearRetry();
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(() => connect(true), delay);
    showAction('Reconnect now');
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = null;
    countdownTimer = null;
    showAction(null);
  }

  function stop(text, status, actionLabel, resumable) {
    clearRetry();
    stopped = true;
    resumeOnRestart = Boolean(resumable);
    setState(status || 'stopped', text, status === 'exited' ? 'warn' : 'bad');
    showAction(actionLabel || 'Reconnect');
    // An exit leaves the program's last screen in view; the bar says it.
    if (status !== 'exited') showOverlay('', text);
    else showOverlay(null);
  }

  // next: the countdown line, '' for none, null to hide the overlay.
  // why: overrides the reason (a refusal the page cannot retry past).
  function showOverlay(next, why) {
    renderOverlay(overlay, next, why, { lostWhy, unreachable, stopped });
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
    const resume = retryTimer !== null || resumeOnRestart;
    attempt = 0;
    if (conn) detach(conn);
    notice('');
    connect(resume);
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
