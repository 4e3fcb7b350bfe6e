'use strict';
// IDX files (the MNIST / Fashion-MNIST format), optionally gzip-compressed (detected by content).
// Header: two zero bytes, a type code, the number of dimensions, then big-endian uint32 sizes.

const zlib = require('zlib');
const { fail } = require('./errors');
const { readFile } = require('./fsutil');
const { product } = require('./dtypes');

const IDX_TYPES = {
  0x08: { type: 'uint8', size: 1, read: (v, o) => v.getUint8(o), array: Uint8Array },
  0x09: { type: 'int8', size: 1, read: (v, o) => v.getInt8(o), array: Int8Array },
  0x0b: { type: 'int16', size: 2, read: (v, o) => v.getInt16(o), array: Int16Array },
  0x0c: { type: 'int32', size: 4, read: (v, o) => v.getInt32(o), array: Int32Array },
  0x0d: { type: 'float32', size: 4, read: (v, o) => v.getFloat32(o), array: Float32Array },
  0x0e: { type: 'float64', size: 8, read: (v, o) => v.getFloat64(o), array: Float64Array },
};

function readMaybeGzip(file) {
  let buf = readFile(file);
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = zlib.gunzipSync(buf);
    } catch (e) {
      fail(file, ': bad gzip data: ', e.message);
    }
  }
  return buf;
}

// Returns { type, shape, data }.
function readIdx(file) {
  const buf = readMaybeGzip(file);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) fail(file, ': not an IDX file (bad magic)');
  const t = IDX_TYPES[buf[2]];
  if (!t) fail(file, ': unsupported IDX element type 0x', buf[2].toString(16));
  const rank = buf[3];
  if (rank < 1 || buf.length < 4 + 4 * rank) fail(file, ': truncated IDX header');
  const shape = [];
  for (let i = 0; i < rank; i++) shape.push(buf.readUInt32BE(4 + 4 * i));
  const off = 4 + 4 * rank;
  const n = product(shape);
  if (buf.length - off < n * t.size)
    fail(file, ': truncated IDX data: shape [', shape.join(','), '] needs ', n * t.size, ' bytes, file has ', buf.length - off);
  let data;
  if (t.size === 1 && t.type === 'uint8') {
    data = new Uint8Array(n);
    data.set(buf.subarray(off, off + n));
  } else {
    data = new t.array(n);
    const view = new DataView(buf.buffer, buf.byteOffset + off, n * t.size);
    for (let i = 0; i < n; i++) data[i] = t.read(view, i * t.size);
  }
  return { type: t.type, shape, data };
}

module.exports = { readIdx, readMaybeGzip };
