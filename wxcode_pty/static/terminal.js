// Browser side of wxcode-pty: a project chooser, and an xterm.js terminal
// attached to the plugin's WebSocket (protocol version 1, see the README).
//
// Plain ES2020 script, no build step: xterm.js and its addons are loaded
// before it as UMD scripts (window.Terminal, window.FitAddon, ...); this entry
// module and the modules it imports run after them: the chooser (chooser.js),
// or the terminal of one project (session.js, which wires connection.js,
// term.js and chrome.js together).

import { PROJECT_RE, PROJECT_RULE } from './constants.js';
import { showChooser } from './chooser.js';
import { startTerminal } from './session.js';

const params = new URLSearchParams(location.search);
const project = params.get('project');

// Browser tests read this; it is replaced once the terminal exists.
window.wxcodePty = { term: null, state: () => ({ status: 'chooser', offset: null, sessionId: null, claudeSessionId: null }) };

if (project === null) {
  showChooser('', project);
} else if (!PROJECT_RE.test(project)) {
  showChooser(PROJECT_RULE, project);
} else {
  startTerminal(project);
}
