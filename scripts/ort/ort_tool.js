#!/usr/bin/env node
'use strict';
// ort_tool: ONNX Runtime (onnxruntime-node) as the peer runtime for lwc's tests and benchmarks.
// Subcommands: info, run, bench, profile, eval. See README.md in this folder.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { ToolError, fail, oneLine } = require('./errors');
const { parseArgs, splitPair } = require('./args');
const { writeNpy } = require('./npy');
const { ensureDir } = require('./fsutil');
const { mulberry32 } = require('./rng');
const S = require('./session');
const { evalCommand } = require('./eval');

const USAGE = `usage: node scripts/ort/ort_tool.js <command> ...
  info  MODEL
  run   MODEL [--input NAME=FILE.npy|.pb ...] [--test-data DIR] [--random-batch N] [--seed S]
              [--dim SYMBOL=V ...] --outdir DIR [--threads T] [--json]
  bench MODEL [--batch N] [--threads T] [--warmup W] [--iters I | --seconds S] [--seed S]
              [--dim SYMBOL=V ...] [--json]
  profile MODEL [--batch N] [--threads T] [--warmup W] [--iters I] [--seed S] [--dim SYMBOL=V ...]
              [--top K] [--json]
  eval  MODEL (--images IDX --labels IDX | --npy IMAGES.npy --npy-labels LABELS.npy)
              [--preprocess JSON] [--batch N] [--limit N] [--threads T] [--json]
Errors: one line on stderr, exit 1 (2 = a bug in this tool).`;

function oneModel(positional, command) {
  if (positional.length !== 1) fail(command, ': expected exactly one MODEL argument', positional.length ? ', got ' + positional.join(' ') : '');
  return positional[0];
}

function parseDims(list) {
  const dims = {};
  for (const s of list) {
    const [k, v] = splitPair(s, '--dim');
    if (k === null || !/^\d+$/.test(v)) fail('--dim "', s, '": expected SYMBOL=N');
    dims[k] = parseInt(v, 10);
  }
  return dims;
}

function threadsOf(opts) {
  const t = opts.threads === undefined ? 2 : opts.threads;
  if (t < 1) fail('--threads must be at least 1');
  return t;
}

// ---------------------------------------------------------------- info
async function infoCommand(argv) {
  const { positional } = parseArgs(argv, {}, 'info');
  const model = oneModel(positional, 'info');
  const session = await S.createSession(model, 1);
  const strip = (v) => ({ name: v.name, type: v.isTensor ? v.type : 'non-tensor', shape: v.shape });
  const info = {
    runtime: 'onnxruntime-node',
    version: S.version(),
    model,
    loads: true,
    inputs: S.describe(session, 'input').map(strip),
    outputs: S.describe(session, 'output').map(strip),
  };
  // indented, with each shape on one line
  console.log(JSON.stringify(info, null, 2).replace(/\[\s+([^[\]{}]*?)\s+\]/g, (m, inner) => '[' + inner.replace(/\s*\n\s*/g, ' ') + ']'));
}

// ---------------------------------------------------------------- run
function testDataInputs(dir, inputs) {
  let files;
  try {
    files = fs.readdirSync(dir);
  } catch (e) {
    fail(dir, ': cannot read directory: ', e.code === 'ENOENT' ? 'no such directory' : e.message);
  }
  const found = files.map((f) => /^input_(\d+)\.pb$/.exec(f)).filter(Boolean).sort((a, b) => a[1] - b[1]);
  if (!found.length) fail(dir, ': no input_<i>.pb files');
  const out = [];
  for (const m of found) {
    const file = path.join(dir, m[0]);
    const i = parseInt(m[1], 10);
    if (inputs[i]) S.requireTensor(file, inputs[i]); // before parsing: SequenceProto etc. are not tensors
    const t = S.readTensorFile(file);
    const byName = inputs.find((v) => v.name === t.name);
    const target = byName || inputs[i];
    if (!target) fail(file, ': the model has only ', inputs.length, ' inputs');
    out.push([target.name, file, t]);
  }
  return out;
}

async function runCommand(argv) {
  const spec = {
    '--input': 'list', '--test-data': 'string', '--random-batch': 'int', '--seed': 'int',
    '--dim': 'list', '--outdir': 'string', '--threads': 'int', '--json': 'bool',
  };
  const { opts, positional } = parseArgs(argv, spec, 'run');
  const model = oneModel(positional, 'run');
  if (!opts.outdir) fail('run: --outdir DIR is required');
  const dims = parseDims(opts.dim);
  const session = await S.createSession(model, threadsOf(opts));
  const inputs = S.describe(session, 'input');
  const byName = new Map(inputs.map((v) => [v.name, v]));

  const loaded = []; // [name, file, tensor]
  if (opts['test-data']) loaded.push(...testDataInputs(opts['test-data'], inputs));
  const unnamed = [];
  for (const s of opts.input) {
    const [name, file] = splitPair(s, '--input');
    if (name !== null && byName.has(name)) {
      S.requireTensor(file, byName.get(name));
      loaded.push([name, file, S.readTensorFile(file)]);
    }
    else if (fs.existsSync(s)) unnamed.push(s); // a bare path (possibly containing '=')
    else if (name !== null) fail('--input "', s, '": the model has no input "', name, '" (inputs: ', inputs.map((v) => v.name).join(', '), ')');
    else fail(s, ': no such file');
  }
  const tensors = {};
  for (const [name, file, t] of loaded) {
    if (name in tensors) fail('--input: input "', name, '" given twice');
    tensors[name] = S.conformInput(file, t, byName.get(name));
  }
  for (const file of unnamed) { // bare files fill the remaining inputs in order
    const m = inputs.find((v) => !(v.name in tensors));
    if (!m) fail(file, ': every model input already has a value');
    S.requireTensor(file, m);
    tensors[m.name] = S.conformInput(file, S.readTensorFile(file), m);
  }
  const missing = inputs.filter((v) => !(v.name in tensors));
  let random = {};
  if (missing.length) {
    if (opts['random-batch'] === undefined)
      fail(model, ': no value for input(s) ', missing.map((v) => '"' + v.name + '"').join(', '), ' (use --input NAME=FILE or --random-batch N)');
    if (opts['random-batch'] < 1) fail('--random-batch must be at least 1');
    if (opts['random-batch'] > 16777216) fail('--random-batch ', opts['random-batch'], ' is outside [1, 16777216] (as lwc exec)');
    random = S.randomInputs(missing, opts['random-batch'], mulberry32(opts.seed || 0), dims);
    Object.assign(tensors, random);
  }

  const results = await S.runSession(session, S.feedsOf(tensors), model);
  ensureDir(opts.outdir);
  if (Object.keys(random).length) ensureDir(path.join(opts.outdir, 'inputs'));
  const manifest = { model, inputs: [], outputs: [] };
  const usedInputs = new Set();
  for (const [name, t] of Object.entries(random)) {
    let base = S.safeName(name);
    for (let k = 1; usedInputs.has(base); k++) base = S.safeName(name) + '_' + k;
    usedInputs.add(base);
    const file = path.join(opts.outdir, 'inputs', base + '.npy');
    writeNpy(file, t.type, t.shape, t.data);
    manifest.inputs.push({ name, file, type: t.type, shape: t.shape });
  }
  const used = new Set();
  for (const name of session.outputNames) {
    const t = results[name];
    if (!t || t.type === 'string' || !t.data) fail(model, ': output "', name, '" is not a numeric tensor; cannot write it as .npy');
    let base = S.safeName(name);
    for (let k = 1; used.has(base); k++) base = S.safeName(name) + '_' + k;
    used.add(base);
    const file = path.join(opts.outdir, base + '.npy');
    const shape = Array.from(t.dims, Number);
    writeNpy(file, t.type, shape, t.data);
    manifest.outputs.push({ name, file, type: t.type, shape });
  }
  if (opts.json) console.log(JSON.stringify(manifest));
  else for (const o of manifest.outputs) console.log(`${o.name}: ${o.type} [${o.shape.join(',')}] -> ${o.file}`);
}

// ---------------------------------------------------------------- bench
function quantile(sorted, q) { // linear interpolation, like numpy's default
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

async function benchCommand(argv) {
  const spec = {
    '--batch': 'int', '--threads': 'int', '--warmup': 'int', '--iters': 'int', '--seconds': 'number',
    '--seed': 'int', '--dim': 'list', '--json': 'bool',
  };
  const { opts, positional } = parseArgs(argv, spec, 'bench');
  const model = oneModel(positional, 'bench');
  if (opts.iters !== undefined && opts.seconds !== undefined) fail('bench: give --iters or --seconds, not both');
  let batch = opts.batch === undefined ? 1 : opts.batch;
  if (batch < 1) fail('bench: --batch must be at least 1');
  const threads = threadsOf(opts);
  const warmup = opts.warmup === undefined ? 5 : opts.warmup;
  const iters = opts.iters === undefined ? 50 : opts.iters;
  if (opts.iters !== undefined && iters < 1) fail('bench: --iters must be at least 1');
  const session = await S.createSession(model, threads);
  const inputs = S.describe(session, 'input');
  const fixed = inputs.length && inputs[0].isTensor && typeof inputs[0].shape[0] === 'number' ? inputs[0].shape[0] : 0;
  if (fixed && fixed !== batch) {
    if (opts.batch !== undefined) fail(model, ': --batch ', batch, ' but input "', inputs[0].name, '" has a fixed batch of ', fixed);
    batch = fixed; // items/s counts the model's own batch
  }
  const feeds = S.feedsOf(S.randomInputs(inputs, batch, mulberry32(opts.seed || 0), parseDims(opts.dim)));
  const once = async () => {
    const t0 = process.hrtime.bigint();
    const r = await S.runSession(session, feeds, model);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    for (const t of Object.values(r)) if (t.dispose) t.dispose();
    return ms;
  };
  for (let i = 0; i < warmup; i++) await once();
  const times = [];
  if (opts.seconds !== undefined) {
    const end = process.hrtime.bigint() + BigInt(Math.round(opts.seconds * 1e9));
    do times.push(await once());
    while (process.hrtime.bigint() < end);
  } else {
    for (let i = 0; i < iters; i++) times.push(await once());
  }
  const sorted = [...times].sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const r = {
    runtime: 'onnxruntime-node',
    version: S.version(),
    model,
    batch,
    threads,
    median_ms: quantile(sorted, 0.5),
    p90_ms: quantile(sorted, 0.9),
    mean_ms: mean,
    items_per_s: (batch * 1000) / mean,
    iters: times.length,
  };
  if (opts.json) console.log(JSON.stringify(r));
  else
    console.log(
      `${model}: batch ${batch}, ${threads} threads, ${r.iters} iters: median ${r.median_ms.toFixed(3)} ms, ` +
        `p90 ${r.p90_ms.toFixed(3)} ms, mean ${r.mean_ms.toFixed(3)} ms, ${r.items_per_s.toFixed(1)} items/s ` +
        `(onnxruntime-node ${r.version})`,
    );
}

// ---------------------------------------------------------------- profile
// ONNX Runtime's own per-node kernel times (SessionOptions.enableProfiling): the median over the
// timed runs of each node's "_kernel_time" event, warm-up runs left out, the sum per op type, and
// their total. The node names are those of ONNX Runtime's optimized graph (fused nodes included).
async function profileCommand(argv) {
  const spec = {
    '--batch': 'int', '--threads': 'int', '--warmup': 'int', '--iters': 'int', '--seed': 'int', '--dim': 'list',
    '--top': 'int', '--json': 'bool',
  };
  const { opts, positional } = parseArgs(argv, spec, 'profile');
  const model = oneModel(positional, 'profile');
  const batch = opts.batch === undefined ? 1 : opts.batch;
  if (batch < 1) fail('profile: --batch must be at least 1');
  const warmup = opts.warmup === undefined ? 5 : opts.warmup;
  const iters = opts.iters === undefined ? 50 : opts.iters;
  if (warmup < 0 || iters < 1) fail('profile: --warmup must be at least 0 and --iters at least 1');
  const threads = threadsOf(opts);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ort_profile_'));
  try {
    const session = await S.createSession(model, threads, { enableProfiling: true, profileFilePrefix: path.join(dir, 'p') });
    const inputs = S.describe(session, 'input');
    const feeds = S.feedsOf(S.randomInputs(inputs, batch, mulberry32(opts.seed || 0), parseDims(opts.dim)));
    for (let i = 0; i < warmup + iters; i++) {
      const r = await S.runSession(session, feeds, model);
      for (const t of Object.values(r)) if (t.dispose) t.dispose();
    }
    session.endProfiling();
    await session.release();
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
    if (files.length !== 1) fail(model, ': ONNX Runtime wrote ', files.length, ' profile files, expected 1');
    const events = JSON.parse(fs.readFileSync(path.join(dir, files[0]), 'utf8'));
    const perNode = new Map(); // name -> { op, times }
    for (const e of events) {
      if (e.cat !== 'Node' || typeof e.name !== 'string' || !e.name.endsWith('_kernel_time')) continue;
      const name = e.name.slice(0, -'_kernel_time'.length);
      if (!perNode.has(name)) perNode.set(name, { op: (e.args && e.args.op_name) || '?', times: [] });
      perNode.get(name).times.push(e.dur);
    }
    const nodes = [];
    for (const [name, { op, times }] of perNode) {
      const timed = times.slice(Math.min(warmup, times.length - 1)).sort((a, b) => a - b);
      nodes.push({ name, op_type: op, median_us: quantile(timed, 0.5), runs: timed.length });
    }
    nodes.sort((a, b) => b.median_us - a.median_us || (a.name < b.name ? -1 : 1));
    const byOp = {};
    let total = 0;
    for (const n of nodes) {
      byOp[n.op_type] = (byOp[n.op_type] || 0) + n.median_us;
      total += n.median_us;
    }
    const r = { runtime: 'onnxruntime-node', version: S.version(), model, batch, threads, warmup, iters, total_us: total, op_types: byOp, nodes };
    if (opts.json) console.log(JSON.stringify(r));
    else {
      console.log(`${model}: batch ${batch}, ${threads} threads, median of ${iters} runs per node (onnxruntime-node ${r.version})`);
      console.log(`total ${total.toFixed(1)} us over ${nodes.length} nodes`);
      for (const [op, us] of Object.entries(byOp).sort((a, b) => b[1] - a[1])) console.log(`  ${op.padEnd(28)} ${us.toFixed(1).padStart(10)} us`);
      const top = opts.top === undefined ? 20 : opts.top;
      for (const n of nodes.slice(0, top)) console.log(`${n.median_us.toFixed(1).padStart(10)} us  ${n.op_type.padEnd(24)} ${n.name}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- eval
async function evalEntry(argv) {
  const spec = {
    '--images': 'string', '--labels': 'string', '--npy': 'string', '--npy-labels': 'string',
    '--preprocess': 'string', '--batch': 'int', '--limit': 'int', '--threads': 'int', '--json': 'bool',
  };
  const { opts, positional } = parseArgs(argv, spec, 'eval');
  await evalCommand(opts, oneModel(positional, 'eval'));
}

const COMMANDS = { info: infoCommand, run: runCommand, bench: benchCommand, profile: profileCommand, eval: evalEntry };

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (!cmd) {
    process.stderr.write(USAGE + '\n');
    return 1;
  }
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  if (cmd === '--version') {
    console.log(S.version());
    return 0;
  }
  const f = COMMANDS[cmd];
  if (!f) fail('unknown command "', cmd, '" (info, run, bench, profile, eval)');
  await f(rest);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => {
    if (e instanceof ToolError) {
      process.stderr.write(`ort_tool: error: ${oneLine(e.message)}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`ort_tool: internal error: ${oneLine(e && e.stack ? e.stack : e)}\n`);
      process.exitCode = 2;
    }
  },
);
