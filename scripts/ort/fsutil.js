'use strict';
// File helpers with one-line errors that name the path.

const fs = require('fs');
const path = require('path');
const { fail } = require('./errors');

function readFile(file) {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    fail(file, ': cannot read: ', e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'is a directory' : e.message);
  }
}

// mkdir -p, one level at a time (Node 20's recursive mkdirSync can spin forever, e.g. under /proc).
function ensureDir(dir) {
  const abs = path.resolve(dir);
  const parts = [];
  for (let d = abs; ; d = path.dirname(d)) {
    parts.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of parts) {
    let st = null;
    try {
      st = fs.statSync(d);
    } catch (e) {
      if (e.code !== 'ENOENT') fail(dir, ': cannot create directory: ', e.message);
    }
    if (st) {
      if (!st.isDirectory()) fail(dir, ': cannot create directory: ', d, ' is not a directory');
      continue;
    }
    try {
      fs.mkdirSync(d);
    } catch (e) {
      if (e.code !== 'EEXIST') fail(dir, ': cannot create directory: ', e.message);
    }
  }
}

module.exports = { readFile, ensureDir };
