'use strict';
// NumPy .npy files (format versions 1, 2 and 3): read into / write from typed arrays.
// Reading accepts little- and big-endian data; writing is always little-endian, C order.

const fs = require('fs');
const { fail } = require('./errors');
const { readFile } = require('./fsutil');
const { TYPES, FROM_NPY, product } = require('./dtypes');

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

function parseHeader(file, text) {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text);
  const order = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !order || !shape) fail(file, ': malformed .npy header: ', text.trim());
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length);
  const parsed = dims.map((d) => {
    if (!/^\d+L?$/.test(d)) fail(file, ': bad dimension "', d, '" in .npy header');
    return parseInt(d, 10);
  });
  return { descr: descr[1], fortran: order[1] === 'True', shape: parsed };
}

// Returns { type, shape, data } with data a fresh (aligned) typed array of the ORT type.
function readNpy(file) {
  const buf = readFile(file);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) fail(file, ': not a .npy file (bad magic)');
  const major = buf[6];
  let headerLen, start;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) fail(file, ': truncated .npy header');
    headerLen = buf.readUInt32LE(8);
    start = 12;
  } else {
    fail(file, ': unsupported .npy format version ', major);
  }
  if (start + headerLen > buf.length) fail(file, ': truncated .npy header');
  const h = parseHeader(file, buf.toString(major === 3 ? 'utf8' : 'latin1', start, start + headerLen));
  if (h.fortran) fail(file, ': Fortran-order .npy arrays are not supported (save with np.ascontiguousarray)');
  const order = h.descr[0];
  const key = '<>|='.includes(order) ? h.descr.slice(1) : h.descr;
  const type = FROM_NPY[key];
  if (!type) fail(file, ': unsupported .npy dtype ', h.descr);
  const t = TYPES[type];
  const n = product(h.shape);
  const bytes = n * t.size;
  const off = start + headerLen;
  if (buf.length - off < bytes)
    fail(file, ': truncated data: shape (', h.shape.join(','), ') ', type, ' needs ', bytes, ' bytes, file has ', buf.length - off);
  const raw = new Uint8Array(bytes);
  raw.set(buf.subarray(off, off + bytes));
  if (order === '>' && t.size > 1) {
    for (let i = 0; i < bytes; i += t.size) raw.subarray(i, i + t.size).reverse();
  }
  return { type, shape: h.shape, data: new t.array(raw.buffer) };
}

function encodeNpy(type, shape, data) {
  const t = TYPES[type];
  if (!t) fail('cannot write element type ', type, ' to .npy');
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${t.npy}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  let version = 1;
  let pre = 10;
  if (dict.length + 1 + pre > 65535) {
    version = 2;
    pre = 12;
  }
  const pad = (64 - ((pre + dict.length + 1) % 64)) % 64;
  dict = dict + ' '.repeat(pad) + '\n';
  const head = Buffer.alloc(pre);
  MAGIC.copy(head, 0);
  head[6] = version;
  head[7] = 0;
  if (version === 1) head.writeUInt16LE(dict.length, 8);
  else head.writeUInt32LE(dict.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.concat([head, Buffer.from(dict, 'latin1'), body]);
}

function writeNpy(file, type, shape, data) {
  const expect = product(shape);
  if (data.length !== expect) fail(file, ': ', data.length, ' elements for shape (', shape.join(','), ')');
  try {
    fs.writeFileSync(file, encodeNpy(type, shape, data));
  } catch (e) {
    fail(file, ': cannot write: ', e.message);
  }
}

module.exports = { readNpy, writeNpy, encodeNpy };
