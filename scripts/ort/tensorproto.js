'use strict';
// ONNX TensorProto (.pb, as in the test_data_set_N/input_0.pb layout), decoded by hand:
// dims, data_type, name and the data in raw_data or the typed repeated fields.

const { fail } = require('./errors');
const { readFile } = require('./fsutil');
const { TYPES, product } = require('./dtypes');

// TensorProto.DataType -> ORT type name.
const ONNX_TYPES = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64',
};
const ONNX_TYPE_NAMES = { 8: 'string', 14: 'complex64', 15: 'complex128', 16: 'bfloat16' };

class Reader {
  constructor(file, buf, start = 0, end = buf.length) {
    this.file = file;
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }
  done() {
    return this.pos >= this.end;
  }
  varint() { // as BigInt (int64 fields need all 64 bits)
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.end) fail(this.file, ': truncated protobuf varint');
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
      if (shift > 63n) fail(this.file, ': malformed protobuf varint');
    }
  }
  bytes() {
    const len = Number(this.varint());
    if (this.pos + len > this.end) fail(this.file, ': truncated protobuf field');
    const s = this.pos;
    this.pos += len;
    return [s, s + len];
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else fail(this.file, ': unsupported protobuf wire type ', wire);
  }
}

// Repeated scalar field: packed (wire 2) or one element per tag.
function readRepeated(r, wire, kind, out) {
  const one = (rr) => {
    if (kind === 'varint') out.push(rr.varint());
    else {
      const size = kind === 'f32' ? 4 : 8;
      if (rr.pos + size > rr.end) fail(rr.file, ': truncated protobuf field');
      out.push(size === 4 ? rr.buf.readFloatLE(rr.pos) : rr.buf.readDoubleLE(rr.pos));
      rr.pos += size;
    }
  };
  if (wire === 2) {
    const [s, e] = r.bytes();
    const sub = new Reader(r.file, r.buf, s, e);
    while (!sub.done()) one(sub);
  } else {
    one(r);
  }
}

function readTensorProto(file) {
  const buf = readFile(file);
  const r = new Reader(file, buf);
  const dims = [];
  let dataType = 0;
  let name = '';
  let raw = null;
  let external = false;
  const fields = { 4: [], 5: [], 7: [], 10: [], 11: [] };
  while (!r.done()) {
    const key = Number(r.varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (field === 1) readRepeated(r, wire, 'varint', dims);
    else if (field === 2 && wire === 0) dataType = Number(r.varint());
    else if (field === 4) readRepeated(r, wire, 'f32', fields[4]);
    else if (field === 5 || field === 7 || field === 11) readRepeated(r, wire, 'varint', fields[field]);
    else if (field === 10) readRepeated(r, wire, 'f64', fields[10]);
    else if (field === 8 && wire === 2) { const [s, e] = r.bytes(); name = buf.toString('utf8', s, e); }
    else if (field === 9 && wire === 2) { const [s, e] = r.bytes(); raw = buf.subarray(s, e); }
    else if (field === 13) { r.skip(wire); external = true; }
    else if (field === 14 && wire === 0) { if (Number(r.varint()) === 1) external = true; }
    else r.skip(wire);
    if (r.pos > r.end) fail(file, ': truncated protobuf');
  }
  if (external) fail(file, ': TensorProto with external data is not supported');
  const type = ONNX_TYPES[dataType];
  if (!type) fail(file, ': unsupported TensorProto data_type ', ONNX_TYPE_NAMES[dataType] || dataType);
  const shape = dims.map((d) => Number(BigInt.asIntN(64, d)));
  if (shape.some((d) => d < 0)) fail(file, ': negative dimension in TensorProto');
  const n = product(shape);
  const t = TYPES[type];
  let data;
  if (raw) {
    if (raw.length !== n * t.size) fail(file, ': raw_data has ', raw.length, ' bytes, shape [', shape.join(','), '] ', type, ' needs ', n * t.size);
    const copy = new Uint8Array(raw.length);
    copy.set(raw);
    data = new t.array(copy.buffer);
  } else {
    let src;
    if (type === 'float32') src = fields[4];
    else if (type === 'float64') src = fields[10];
    else if (type === 'int64') src = fields[7].map((v) => BigInt.asIntN(64, v));
    else if (type === 'uint64' || type === 'uint32') src = fields[11].map((v) => (type === 'uint64' ? BigInt.asUintN(64, v) : Number(BigInt.asUintN(32, v))));
    else src = fields[5].map((v) => Number(BigInt.asIntN(32, v))); // int8..int32, uint8, uint16, bool, float16 bits
    if (src.length !== n) fail(file, ': ', src.length, ' values for shape [', shape.join(','), ']');
    data = new t.array(n);
    for (let i = 0; i < n; i++) data[i] = src[i];
  }
  return { name, type, shape, data };
}

module.exports = { readTensorProto };
