'use strict';
// Minimal option parser. spec: { '--name': 'string' | 'int' | 'number' | 'bool' | 'list' }.
// Accepts "--name value" and "--name=value"; everything not starting with "--" is positional.

const { fail } = require('./errors');

function parseArgs(argv, spec, command) {
  const opts = {};
  const positional = [];
  for (const [k, kind] of Object.entries(spec)) if (kind === 'list') opts[k.slice(2)] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--') || a === '--') {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const flag = eq >= 0 ? a.slice(0, eq) : a;
    const kind = spec[flag];
    if (!kind) fail(command, ': unknown option ', flag, ' (see --help)');
    const key = flag.slice(2);
    if (kind === 'bool') {
      if (eq >= 0) fail(command, ': option ', flag, ' takes no value');
      opts[key] = true;
      continue;
    }
    let value;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    else fail(command, ': option ', flag, ' needs a value');
    if (kind === 'int') {
      if (!/^\d+$/.test(value)) fail(command, ': option ', flag, ' needs a non-negative integer, got "', value, '"');
      value = parseInt(value, 10);
    } else if (kind === 'number') {
      const v = Number(value);
      if (value.trim() === '' || !Number.isFinite(v) || v < 0) fail(command, ': option ', flag, ' needs a non-negative number, got "', value, '"');
      value = v;
    }
    if (kind === 'list') opts[key].push(value);
    else opts[key] = value;
  }
  return { opts, positional };
}

// "NAME=VALUE" -> [NAME, VALUE]; NAME may be empty if allowed.
function splitPair(s, what) {
  const eq = s.indexOf('=');
  if (eq < 0) return [null, s];
  if (eq === 0) fail(what, ' "', s, '": empty name before "="');
  return [s.slice(0, eq), s.slice(eq + 1)];
}

module.exports = { parseArgs, splitPair };
