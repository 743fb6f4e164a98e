// The connection to one project's WebSocket, speaking protocol version 1:
// the handshake, the replay and the offsets that let a reconnect ask only for
// missed bytes, pings, input, and reconnecting with backoff. It writes the
// program's output into the terminal; everything else it tells the page
// through the callbacks of `on`:
//
//   connecting(resuming)         a connection is being opened
//   attached(hello)              the server said hello (before the replay)
//   connected()                  the replay is drawn: live from here on
//   retrying(seconds)            the countdown to the next automatic try
//   stopped(text, status, label) no automatic reconnect: the user decides
//   exited()                     the program ended (the socket closes next)
//   ptySize(size)                the PTY's {cols, rows}, null while not connected
//   sizeSent()                   this page's size was sent: it is the active client
//   claudeState(msg)             Claude's state as the server says it
//   claudeSession(id, reason)    Claude's conversation changed
//   readOnly()                   the server refuses this user's input
//   notice(text)                 something for the status bar

import {
  PROTOCOL, NOT_AUTHORISED, PING_INTERVAL_MS, BACKOFF_FIRST_MS, BACKOFF_MAX_MS, MAX_INPUT_FRAME, EMPTY,
} from './constants.js';
import { exitText, errorMessage } from './util.js';

export function createConnection(projectId, term, on) {
  // offset/sessionId survive reconnects: they are what a resume asks from.
  let offset = null;
  let sessionId = null;
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
  // Why the page is disconnected, in words, for the overlay: how the last
  // open connection ended, then whether the server can be reached.
  let lostWhy = '';
  let unreachable = false;

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

  const isOpen = () => conn !== null && conn.ws.readyState === WebSocket.OPEN;

  return {
    start: () => connect(false),
    // The user asked to connect again (a click, Enter, waking up).
    reconnect() {
      const resume = retryTimer !== null || resumeOnRestart;
      attempt = 0;
      if (conn) detach(conn);
      connect(resume);
    },
    open: isOpen,
    stopped: () => stopped,
    retrying: () => retryTimer !== null,
    // True while a replay is being drawn: what the terminal says then is
    // not the user's.
    muted: () => muted,
    offset: () => offset,
    sessionId: () => sessionId,
    // What the overlay says about the loss.
    lost: () => ({ lostWhy, unreachable, stopped }),
    sendInput(bytes) {
      if (!isOpen()) return;
      for (let i = 0; i < bytes.length; i += MAX_INPUT_FRAME) {
        conn.ws.send(bytes.subarray(i, i + MAX_INPUT_FRAME));
      }
    },
    // Resizing makes this page the active client: the PTY takes its size.
    sendSize,
  };

  // Part of a replay may be on screen, so the terminal no longer matches
  // any offset: the next connection must replay everything from scratch.
  function abandonReplay() {
    offset = null;
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
    on.ptySize(null);
  }

  function send(text) {
    if (isOpen()) conn.ws.send(text);
  }

  function sendSize() {
    if (!isOpen()) return;
    send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    on.sizeSent();
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
    const since = resume && offset !== null && sessionId ? offset : null;
    if (since !== null) {
      url.searchParams.set('since', String(since));
      url.searchParams.set('session', sessionId);
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
    on.ptySize(null);
    on.connecting(since !== null);

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
      if (c.live && offset !== null) offset += bytes.byteLength;
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
        c.sessionChanged = sessionId !== null && msg.session_id !== sessionId;
        sessionId = msg.session_id;
        on.attached(msg);
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
        offset = msg.offset;
        unmuteAfterPendingWrites();
        attempt = 0;
        lostWhy = '';
        unreachable = false;
        on.connected();
        break;
      case 'size':
        on.ptySize({ cols: msg.cols, rows: msg.rows });
        break;
      case 'claude_state':
        on.claudeState(msg);
        break;
      case 'claude_session':
        on.claudeSession(msg.claude_session_id, msg.reason);
        break;
      case 'exit':
        c.exited = exitText(msg);
        on.exited();
        break;
      case 'error':
        if (msg.code === 'forbidden' && msg.message === 'input is not allowed') {
          on.readOnly();
          break;
        }
        on.notice(errorMessage(msg));
        break;
      default:
        // pong, and message types added by later servers: nothing to do.
        break;
    }
  }

  function onClose(c, event) {
    clearInterval(pingTimer);
    pingTimer = null;
    on.ptySize(null);
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
        on.notice('connection was too far behind; catching up');
        connect(true);
        return;
      case 1009:
        on.notice('message too large');
        connect(true);
        return;
      case 1013:
        on.notice('limit reached' + reason);
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
  // can act on, rather than the server's short reason. Ask first, then say
  // one thing, so the status never flashes the short reason.
  async function policyRefused(c, reason) {
    const authorised = await authStatus() !== false;
    if (conn !== c || stopped) return;   // the user reconnected meanwhile
    stop(authorised ? 'refused by the server' + (reason || ' (policy)') : NOT_AUTHORISED,
      'refused', 'Retry', true);
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
      on.notice('the server refuses the WebSocket (check its allowed origins and hosts)');
    }
    retry();
  }

  function retry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    attempt += 1;
    // Jitter spreads the reconnects of many tabs after a server restart.
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    const due = Date.now() + delay;
    const tick = () => on.retrying(Math.max(1, Math.ceil((due - Date.now()) / 1000)));
    clearRetry();
    retryTimer = setTimeout(() => connect(true), delay);
    tick();
    countdownTimer = setInterval(tick, 250);
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = null;
    countdownTimer = null;
  }

  function stop(text, status, actionLabel, resumable) {
    clearRetry();
    stopped = true;
    resumeOnRestart = Boolean(resumable);
    on.stopped(text, status, actionLabel);
  }
}
