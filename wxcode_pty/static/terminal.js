// Browser side of wxcode-pty: a project chooser, and an xterm.js terminal
// attached to the plugin's WebSocket (protocol version 1, see the README).
//
// Plain ES2020 script, no build step: xterm.js and its fit addon are loaded
// before it as UMD scripts (window.Terminal, window.FitAddon).
(function () {
  'use strict';

  const PROTOCOL = 1;
  const PROJECT_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
  const PROJECT_RULE = 'A project id is 1 to 128 characters: letters, digits, "_", "." ' +
    'or "-", starting with a letter or digit.';
  // The standalone server prints a URL with a token; a host app has its own login.
  const NOT_AUTHORISED = 'Not authorised: sign in, or open the URL with the token printed by the server.';

  const RESIZE_DEBOUNCE_MS = 100;
  const PING_INTERVAL_MS = 25000;          // below common proxy idle timeouts (30-60 s)
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  // The server's default inbound frame limit is 64 KiB; a large paste is sent
  // in smaller frames so it is never refused with 1009.
  const MAX_INPUT_FRAME = 16384;
  // After this page sends its size, how long the server's "size" answer is
  // awaited before the status bar says the sizes differ (no flash on resize).
  const SIZE_ANSWER_MS = 1000;

  const EMPTY = new Uint8Array(0);
  const encoder = new TextEncoder();

  const $ = (id) => document.getElementById(id);

  const params = new URLSearchParams(location.search);
  const project = params.get('project');

  // Browser tests read this; it is replaced once the terminal exists.
  window.wxcodePty = { term: null, state: () => ({ status: 'chooser', offset: null, sessionId: null, claudeSessionId: null }) };

  if (project === null) {
    showChooser('');
  } else if (!PROJECT_RE.test(project)) {
    showChooser(PROJECT_RULE);
  } else {
    startTerminal(project);
  }

  // ---------------------------------------------------------------- chooser

  function showChooser(problem) {
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
    loadSessions();
  }

  async function loadSessions() {
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
    list.replaceChildren();
    if (sessions.length === 0) {
      say(message, 'No sessions yet. Open a project above to start one.');
      return;
    }
    say(message, '');
    sessions
      .filter((s) => s && typeof s.output_project_id === 'string')
      .sort((a, b) => a.output_project_id.localeCompare(b.output_project_id))
      .forEach((s) => list.append(sessionItem(s)));
  }

  function sessionItem(s) {
    // Built with textContent only: nothing from the server is parsed as HTML.
    const li = document.createElement('li');
    const link = document.createElement('a');
    link.href = '?project=' + encodeURIComponent(s.output_project_id);
    link.textContent = s.output_project_id;
    li.append(link);
    const status = span(s.status || 'unknown', 'meta status-' + String(s.status || 'unknown'));
    li.append(status);
    const clients = Number(s.clients);
    if (Number.isFinite(clients)) {
      li.append(span(clients === 1 ? '1 client' : clients + ' clients', 'meta'));
    }
    if (s.claude_session_id) {
      const claude = span('claude ' + String(s.claude_session_id).slice(0, 8), 'meta');
      claude.title = String(s.claude_session_id);
      li.append(claude);
    }
    const when = formatTime(s.last_activity);
    if (when) li.append(span('active ' + when, 'meta'));
    return li;
  }

  function span(text, className) {
    const el = document.createElement('span');
    el.className = className;
    el.textContent = text;
    return el;
  }

  // last_activity may be an ISO string or a Unix time in seconds or
  // milliseconds; accept each rather than show "Invalid Date".
  function formatTime(value) {
    if (value === null || value === undefined || value === '') return '';
    let date;
    if (typeof value === 'number') {
      date = new Date(value < 1e12 ? value * 1000 : value);
    } else {
      date = new Date(value);
    }
    return Number.isNaN(date.getTime()) ? '' : date.toLocaleString();
  }

  async function errorText(response) {
    // Errors are {"error": {"code", "message"}}; fall back to the status line.
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (err) { /* not JSON */ }
    return 'HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : '');
  }

  function say(el, text, tone) {
    el.textContent = text;
    if (tone) el.dataset.tone = tone; else delete el.dataset.tone;
  }

  // --------------------------------------------------------------- terminal

  function startTerminal(projectId) {
    const container = $('terminal');
    const bar = {
      state: $('st-state'),
      project: $('st-project'),
      claude: $('st-claude'),
      notice: $('st-notice'),
      action: $('st-action'),
      size: $('st-size'),
      sizeText: $('st-size-text'),
      sizeUse: $('st-size-use'),
    };
    container.hidden = false;
    $('status').hidden = false;
    document.title = projectId + ' · wxcode-pty';
    bar.project.textContent = 'project ' + projectId;
    bar.project.title = projectId;

    const term = new window.Terminal({
      cursorBlink: true,
      fontFamily: getComputedStyle(document.documentElement).getPropertyValue('--mono').replace(/\s+/g, ' ').trim() || 'monospace',
      fontSize: 14,
      scrollback: 5000,
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
      document.title = (title ? title + ' · ' : '') + projectId + ' · wxcode-pty';
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
    window.addEventListener('online', () => { if (retryTimer) userReconnect(); });

    connect(false);
    term.focus();

    function fitNow() {
      // Fitting can fail before the renderer has measured a cell (e.g. while
      // the page is hidden); the next resize tries again.
      try { fit.fit(); } catch (err) { /* try again on the next resize */ }
    }

    function handleInput(bytes, text) {
      if (muted) return;
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
          setState('connected', 'connected', 'good');
          break;
        case 'size':
          setPtySize({ cols: msg.cols, rows: msg.rows });
          break;
        case 'claude_session':
          setClaude(msg.claude_session_id);
          if (msg.reason) notice(msg.reason);
          break;
        case 'exit':
          c.exited = exitText(msg);
          setState('exited', c.exited, msg.code === 0 ? 'good' : 'bad');
          break;
        case 'error':
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
    }

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

  function exitText(msg) {
    if (msg.signal) return 'killed by ' + msg.signal;
    if (msg.code !== null && msg.code !== undefined) return 'exited with code ' + msg.code;
    return 'exited';
  }

  function errorMessage(msg) {
    switch (msg.code) {
      case 'input_overflow':
        return 'input dropped: the program is not reading';
      default:
        return (msg.message || msg.code || 'error') + (msg.message && msg.code ? ' (' + msg.code + ')' : '');
    }
  }
})();
