'use strict';
// ToolError: an expected failure (bad file, bad option, model ORT rejects). The CLI prints its
// message as one line on stderr and exits 1; anything else is a bug and exits 2.

class ToolError extends Error {}

function fail(...parts) {
  throw new ToolError(parts.join(''));
}

// ORT messages can span lines; the CLI promises one line.
function oneLine(s) {
  return String(s).replace(/\s*\n\s*/g, ' ').trim();
}

module.exports = { ToolError, fail, oneLine };
