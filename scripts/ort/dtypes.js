'use strict';
// Element types as onnxruntime-node names them, with their typed-array and .npy spellings,
// plus float16 <-> float32 conversion (Node 20 has no Float16Array; ORT takes raw Uint16Array).

const TYPES = {
  float32: { array: Float32Array, npy: '<f4', size: 4 },
  float16: { array: Uint16Array, npy: '<f2', size: 2 },
  float64: { array: Float64Array, npy: '<f8', size: 8 },
  int8: { array: Int8Array, npy: '|i1', size: 1 },
  uint8: { array: Uint8Array, npy: '|u1', size: 1 },
  int16: { array: Int16Array, npy: '<i2', size: 2 },
  uint16: { array: Uint16Array, npy: '<u2', size: 2 },
  int32: { array: Int32Array, npy: '<i4', size: 4 },
  uint32: { array: Uint32Array, npy: '<u4', size: 4 },
  int64: { array: BigInt64Array, npy: '<i8', size: 8 },
  uint64: { array: BigUint64Array, npy: '<u8', size: 8 },
  bool: { array: Uint8Array, npy: '|b1', size: 1 },
};

// .npy kind+size (byte order stripped) -> type name.
const FROM_NPY = {};
for (const [name, t] of Object.entries(TYPES)) FROM_NPY[t.npy.slice(1)] = name;

function typeInfo(name) {
  return TYPES[name];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// float -> IEEE half bits, round to nearest even.
function floatToHalf(v) {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry into the exponent is correct
  return sign | h;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// Numbers of any element type as a plain Float64Array (for top-k, statistics).
function toFloat64(type, data) {
  const out = new Float64Array(data.length);
  if (type === 'float16') for (let i = 0; i < data.length; i++) out[i] = halfToFloat(data[i]);
  else for (let i = 0; i < data.length; i++) out[i] = Number(data[i]);
  return out;
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

module.exports = { TYPES, FROM_NPY, typeInfo, floatToHalf, halfToFloat, toFloat64, product };
