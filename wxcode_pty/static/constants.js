// Constants shared by the page's modules.

export const PROTOCOL = 1;
export const PROJECT_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export const PROJECT_RULE = 'A project id is 1 to 128 characters: letters, digits, "_", "." ' +
  'or "-", starting with a letter or digit.';
// The standalone server prints a URL with a token; a host app has its own login.
export const NOT_AUTHORISED = 'Not authorised: sign in, or open the URL with the token printed by the server.';

export const RESIZE_DEBOUNCE_MS = 100;
export const PING_INTERVAL_MS = 25000;          // below common proxy idle timeouts (30-60 s)
export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 10000;
// The server's default inbound frame limit is 64 KiB; a large paste is sent
// in smaller frames so it is never refused with 1009.
export const MAX_INPUT_FRAME = 16384;
// After this page sends its size, how long the server's "size" answer is
// awaited before the status bar says the sizes differ (no flash on resize).
export const SIZE_ANSWER_MS = 1000;
// A turn at least this long (from the server's "since" times) earns a
// notification when it ends while the tab is hidden; shorter ones do not.
export const NOTIFY_TURN_SECONDS = 5;
export const FONT_SIZE_KEY = 'wxcode-pty.fontSize';
export const FONT_SIZE_DEFAULT = 14;
export const FONT_SIZE_MIN = 8;
export const FONT_SIZE_MAX = 32;
export const WAITING_MARK = '\u25cf ';          // "● " before the tab title
// How often the chooser asks for the sessions again while it is open.
export const LIST_REFRESH_MS = 3000;
// What the extra keys of a touch screen send.
export const EXTRA_KEYS = {
  esc: '\x1b',
  tab: '\t',
  left: '\x1b[D',
  up: '\x1b[A',
  down: '\x1b[B',
  right: '\x1b[C',
  backtab: '\x1b[Z',
  'ctrl-c': '\x03',
};

export const EMPTY = new Uint8Array(0);
export const encoder = new TextEncoder();

export const $ = (id) => document.getElementById(id);
