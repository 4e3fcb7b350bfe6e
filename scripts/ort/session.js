'use strict';
// onnxruntime-node session creation, model I/O metadata, input files and random inputs.

const fs = require('fs');
const path = require('path');
const { ToolError, fail, oneLine } = require('./errors');
const { TYPES, floatToHalf, product } = require('./dtypes');
const { readNpy } = require('./npy');
const { readTensorProto } = require('./tensorproto');

let ort;
function runtime() {
  if (!ort) {
    try {
      ort = require('onnxruntime-node');
    } catch (e) {
      fail('cannot load onnxruntime-node (run scripts/setup.sh): ', oneLine(e.message));
    }
    ort.env.logLevel = 'fatal';
  }
  return ort;
}

function version() {
  const v = runtime().env.versions;
  return (v && (v.node || v.common)) || 'unknown';
}

async function createSession(modelPath, threads = 2, extra = {}) {
  const o = runtime();
  if (!fs.existsSync(modelPath)) fail(modelPath, ': no such file');
  if (fs.statSync(modelPath).isDirectory()) fail(modelPath, ': is a directory, not an ONNX model');
  try {
    return await o.InferenceSession.create(modelPath, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      // LWC_ORT_OPT_LEVEL=disabled|basic|extended tells a wrong result of ours from one of ORT's graph rewrites.
      graphOptimizationLevel: process.env.LWC_ORT_OPT_LEVEL || 'all',
      executionMode: 'sequential',
      logSeverityLevel: 4, // fatal only: errors reach the user through our one-line message
      ...extra,
    });
  } catch (e) {
    fail(modelPath, ': ONNX Runtime cannot load the model: ', oneLine(e.message));
  }
}

// [{ name, isTensor, type, shape }] where shape entries are numbers or symbolic names (strings).
function describe(session, which) {
  const meta = which === 'input' ? session.inputMetadata : session.outputMetadata;
  const names = which === 'input' ? session.inputNames : session.outputNames;
  return names.map((name, i) => {
    const m = (meta && meta[i]) || { name, isTensor: true };
    if (!m.isTensor) return { name, isTensor: false, type: null, shape: null };
    const shape = (m.shape || []).map((d) => (typeof d === 'number' && d >= 0 ? d : typeof d === 'string' && d ? d : '?'));
    return { name, isTensor: true, type: m.type, shape };
  });
}

// Concrete shape for a metadata shape: symbolic dim 0 -> batch, other symbolic dims -> 1,
// unless named in dims (a { symbol: value } map).
function concreteShape(shape, batch, dims = {}) {
  return shape.map((d, i) => {
    if (typeof d === 'number') return d;
    if (d in dims) return dims[d];
    return i === 0 ? batch : 1;
  });
}

// Uniform [-1, 1) floats; int8/uint8 over their full range; wider integers in [0, 10); bools 0/1.
function randomTensor(type, shape, rand) {
  const t = TYPES[type];
  if (!t) fail('cannot make random data of type ', type);
  const n = product(shape);
  const data = new t.array(n);
  const u = () => rand() * 2 - 1;
  if (type === 'float32' || type === 'float64') for (let i = 0; i < n; i++) data[i] = u();
  else if (type === 'float16') for (let i = 0; i < n; i++) data[i] = floatToHalf(u());
  else if (type === 'int8') for (let i = 0; i < n; i++) data[i] = Math.floor(rand() * 256) - 128;
  else if (type === 'uint8') for (let i = 0; i < n; i++) data[i] = Math.floor(rand() * 256);
  else if (type === 'bool') for (let i = 0; i < n; i++) data[i] = rand() < 0.5 ? 0 : 1;
  else if (type === 'int64' || type === 'uint64') for (let i = 0; i < n; i++) data[i] = BigInt(Math.floor(rand() * 10));
  else for (let i = 0; i < n; i++) data[i] = Math.floor(rand() * 10);
  return { type, shape, data };
}

// Random inputs for every tensor input in `inputs` (from describe()).
function randomInputs(inputs, batch, rand, dims) {
  const out = {};
  for (const m of inputs) {
    if (!m.isTensor) fail('input "', m.name, '" is not a tensor; cannot make random data for it');
    if (m.type === 'string') fail('input "', m.name, '" is a string tensor; cannot make random data for it');
    out[m.name] = randomTensor(m.type, concreteShape(m.shape, batch, dims), rand);
  }
  return out;
}

// .npy or TensorProto .pb, chosen by content (falls back to the extension in messages).
function readTensorFile(file) {
  let head = Buffer.alloc(0);
  try {
    const fd = fs.openSync(file, 'r');
    head = Buffer.alloc(6);
    fs.readSync(fd, head, 0, 6, 0);
    fs.closeSync(fd);
  } catch (e) {
    fail(file, ': cannot read: ', e.code === 'ENOENT' ? 'no such file' : e.message);
  }
  if (head[0] === 0x93 && head.toString('latin1', 1, 6) === 'NUMPY') return readNpy(file);
  const ext = path.extname(file).toLowerCase();
  if (ext === '.npy') fail(file, ': not a .npy file (bad magic)');
  if (ext === '.pb') return readTensorProto(file);
  try {
    return readTensorProto(file);
  } catch (e) {
    if (e instanceof ToolError) fail(file, ': neither a .npy file nor an ONNX TensorProto .pb');
    throw e;
  }
}

function requireTensor(file, m) {
  if (!m.isTensor) fail(file, ': model input "', m.name, '" is a sequence, map or optional; only tensor inputs are supported');
}

// Makes tensor (from a file) fit input metadata m: checks rank and fixed dims, and casts
// float64 -> float32/float16 and float32 -> float16 (NumPy's default dtype is float64).
function conformInput(file, tensor, m) {
  requireTensor(file, m);
  let { type, data } = tensor;
  if (type !== m.type) {
    const isFloat = (t) => t === 'float32' || t === 'float64';
    if (m.type === 'float32' && type === 'float64') data = Float32Array.from(data);
    else if (m.type === 'float16' && isFloat(type)) data = Uint16Array.from(data, floatToHalf);
    else fail(file, ': dtype ', type, ' but model input "', m.name, '" is ', m.type);
    type = m.type;
  }
  if (!m.shape.length) return { type, shape: tensor.shape, data }; // [] = scalar or unknown rank: ORT decides
  if (m.shape.length !== tensor.shape.length)
    fail(file, ': shape [', tensor.shape.join(','), '] but model input "', m.name, '" has rank ', m.shape.length, ' [', m.shape.join(','), ']');
  m.shape.forEach((d, i) => {
    if (typeof d === 'number' && d !== tensor.shape[i])
      fail(file, ': shape [', tensor.shape.join(','), '] does not match model input "', m.name, '" [', m.shape.join(','), ']');
  });
  return { type, shape: tensor.shape, data };
}

function toOrt(t) {
  return new (runtime().Tensor)(t.type, t.data, t.shape);
}

function feedsOf(tensors) {
  const feeds = {};
  for (const [name, t] of Object.entries(tensors)) feeds[name] = toOrt(t);
  return feeds;
}

async function runSession(session, feeds, what) {
  try {
    return await session.run(feeds);
  } catch (e) {
    fail(what, ': ONNX Runtime failed to run the model: ', oneLine(e.message));
  }
}

// Names with '/', ':' or '\' become file-system safe ('_').
function safeName(name) {
  return name.replace(/[/:\\]/g, '_');
}

module.exports = {
  runtime, version, createSession, describe, concreteShape, randomTensor, randomInputs,
  readTensorFile, requireTensor, conformInput, toOrt, feedsOf, runSession, safeName,
};
