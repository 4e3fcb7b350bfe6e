'use strict';
// `eval`: top-1 / top-5 accuracy of an image classifier on IDX (MNIST-style) or .npy data.

const fs = require('fs');
const { fail } = require('./errors');
const { floatToHalf, toFloat64 } = require('./dtypes');
const { readIdx } = require('./idx');
const { readNpy } = require('./npy');
const S = require('./session');

// Images as { n, c, h, w, data } (NCHW, uint8 or float32 raw pixel values) and labels as numbers.
function loadData(opts) {
  let img, lab, imgFile, labFile;
  if (opts.images || opts.labels) {
    if (opts.npy || opts['npy-labels']) fail('eval: use either --images/--labels or --npy/--npy-labels, not both');
    if (!opts.images || !opts.labels) fail('eval: --images and --labels go together');
    [imgFile, labFile] = [opts.images, opts.labels];
    [img, lab] = [readIdx(imgFile), readIdx(labFile)];
  } else if (opts.npy || opts['npy-labels']) {
    if (!opts.npy || !opts['npy-labels']) fail('eval: --npy and --npy-labels go together');
    [imgFile, labFile] = [opts.npy, opts['npy-labels']];
    [img, lab] = [readNpy(imgFile), readNpy(labFile)];
  } else {
    fail('eval: give the data with --images/--labels (IDX) or --npy/--npy-labels');
  }
  if (img.type !== 'uint8' && img.type !== 'float32') fail(imgFile, ': images must be uint8 (or float32), got ', img.type);
  let [n, c, h, w] = [0, 1, 0, 0];
  if (img.shape.length === 3) [n, h, w] = img.shape;
  else if (img.shape.length === 4) [n, c, h, w] = img.shape;
  else fail(imgFile, ': images must have shape [n,rows,cols] or [n,c,rows,cols], got [', img.shape.join(','), ']');
  if (!(lab.shape.length === 1 || (lab.shape.length === 2 && lab.shape[1] === 1)))
    fail(labFile, ': labels must have shape [n], got [', lab.shape.join(','), ']');
  if (/float|bool/.test(lab.type)) fail(labFile, ': labels must be integers, got ', lab.type);
  if (lab.shape[0] !== n) fail(labFile, ': ', lab.shape[0], ' labels for ', n, ' images in ', imgFile);
  const labels = Int32Array.from(lab.data, Number);
  return { images: { n, c, h, w, data: img.data }, labels, source: imgFile };
}

// --preprocess takes JSON text or the path of a JSON file such as lwc's preprocess.json.
function parsePreprocess(arg) {
  let p = {};
  let text = arg;
  let where = '--preprocess';
  if (arg && !arg.trimStart().startsWith('{')) {
    where = arg;
    try {
      text = fs.readFileSync(arg, 'utf8');
    } catch (e) {
      fail('eval: --preprocess ', arg, ': neither JSON text nor a readable file (', e.code || e.message, ')');
    }
  }
  if (text) {
    try {
      p = JSON.parse(text);
    } catch (e) {
      fail('eval: ', where, ' is not valid JSON: ', e.message);
    }
    if (typeof p !== 'object' || p === null || Array.isArray(p)) fail('eval: ', where, ' must be a JSON object');
  }
  for (const k of Object.keys(p)) {
    if (k === 'resize' || k === 'crop')
      fail('eval: ', where, ': "', k, '" is not done by this tool (it does not resize); drop the key and give images of the size the model takes');
    if (!['scale', 'mean', 'std', 'layout', 'color'].includes(k)) fail('eval: ', where, ': unknown key "', k, '" (scale, mean, std, layout, color)');
  }
  if (p.color !== undefined && p.color !== null && !['gray', 'rgb'].includes(p.color))
    fail('eval: ', where, ': "color" ', JSON.stringify(p.color), ' is not done by this tool (it takes "gray" or "rgb": the data as stored)');
  const arr = (v, name) => {
    const a = Array.isArray(v) ? v : [v];
    if (!a.length || a.some((x) => typeof x !== 'number' || !Number.isFinite(x))) fail('eval: ', where, ': "', name, '" must be a number or an array of numbers');
    return a;
  };
  const pre = {
    scale: p.scale === undefined ? 1 / 255 : p.scale,
    mean: p.mean === undefined ? [0] : arr(p.mean, 'mean'),
    std: p.std === undefined ? [1] : arr(p.std, 'std'),
    layout: p.layout,
    color: p.color === null ? undefined : p.color,
    where,
  };
  if (typeof pre.scale !== 'number' || !Number.isFinite(pre.scale)) fail('eval: ', where, ': "scale" must be a number');
  if (pre.std.some((s) => s === 0)) fail('eval: ', where, ': "std" has a zero');
  if (pre.layout !== undefined && pre.layout !== 'NCHW' && pre.layout !== 'NHWC') fail('eval: ', where, ': "layout" must be "NCHW" or "NHWC"');
  return pre;
}

// How to lay a batch out for the model's first input: rank 4 (NCHW/NHWC), 3 ([N,H,W]) or 2 ([N,C*H*W]).
function planInput(model, m, img, pre) {
  if (!m.isTensor || (m.type !== 'float32' && m.type !== 'float16'))
    fail(model, ': first input "', m.name, '" is ', m.type || 'not a tensor', '; eval needs a float32 or float16 image input');
  const s = m.shape;
  const known = (d) => typeof d === 'number';
  const want = (d, v, what) => {
    if (known(d) && d !== v) fail(model, ': input "', m.name, '" [', s.join(','), '] expects ', what, ' ', d, ', the data has ', v);
  };
  let layout = 'NCHW';
  let ch = img.c;
  if (s.length === 4) {
    // Without "layout": NHWC when the last axis looks like channels (<= 4) and axis 1 does not.
    const lastIsChannels = known(s[3]) && s[3] <= 4 && !(known(s[1]) && s[1] <= 4);
    layout = pre.layout || (lastIsChannels ? 'NHWC' : 'NCHW');
    const [cd, hd, wd] = layout === 'NCHW' ? [s[1], s[2], s[3]] : [s[3], s[1], s[2]];
    if (known(cd)) ch = cd;
    if (ch !== img.c && img.c !== 1) fail(model, ': input "', m.name, '" [', s.join(','), '] wants ', ch, ' channels, the data has ', img.c);
    want(hd, img.h, 'height');
    want(wd, img.w, 'width');
  } else if (s.length === 3) {
    if (img.c !== 1) fail(model, ': input "', m.name, '" [', s.join(','), '] has no channel axis, the data has ', img.c, ' channels');
    want(s[1], img.h, 'height');
    want(s[2], img.w, 'width');
  } else if (s.length === 2) {
    want(s[1], img.c * img.h * img.w, 'features');
  } else {
    fail(model, ': input "', m.name, '" has shape [', s.join(','), ']; eval needs rank 2, 3 or 4');
  }
  for (const [k, v] of [['mean', pre.mean], ['std', pre.std]])
    if (v.length !== 1 && v.length !== ch) fail('eval: ', pre.where, ': "', k, '" has ', v.length, ' values for ', ch, ' channels');
  const fixedBatch = known(s[0]) ? s[0] : 0;
  const itemShape = s.length === 4 ? (layout === 'NCHW' ? [ch, img.h, img.w] : [img.h, img.w, ch]) : s.length === 3 ? [img.h, img.w] : [ch * img.h * img.w];
  return { layout: s.length === 4 ? layout : 'NCHW', ch, fixedBatch, itemShape, type: m.type };
}

// Fills out (length count*ch*h*w) with preprocessed images [first, first+count).
function preprocessInto(out, img, first, count, plan, pre) {
  const { h, w, c: srcC, data } = img;
  const ch = plan.ch;
  const hw = h * w;
  const a = [], b = [];
  for (let k = 0; k < ch; k++) {
    const mean = pre.mean.length === 1 ? pre.mean[0] : pre.mean[k];
    const std = pre.std.length === 1 ? pre.std[0] : pre.std[k];
    a.push(pre.scale / std);
    b.push(-mean / std);
  }
  const per = ch * hw;
  for (let i = 0; i < count; i++) {
    const base = (first + i) * srcC * hw;
    const dst = i * per;
    for (let k = 0; k < ch; k++) {
      const src = base + (srcC === 1 ? 0 : k * hw);
      const ak = a[k], bk = b[k];
      if (plan.layout === 'NCHW') {
        const d = dst + k * hw;
        for (let p = 0; p < hw; p++) out[d + p] = data[src + p] * ak + bk;
      } else {
        for (let p = 0; p < hw; p++) out[dst + p * ch + k] = data[src + p] * ak + bk;
      }
    }
  }
}

// Rank of the label's score among the classes (0 = best); ties go to the lower class index.
function labelRank(scores, off, classes, label) {
  if (label < 0 || label >= classes) return classes;
  const s = scores[off + label];
  if (Number.isNaN(s)) return classes;
  let rank = 0;
  for (let j = 0; j < classes; j++) {
    const v = scores[off + j];
    if (v > s || (v === s && j < label)) rank++;
  }
  return rank;
}

async function evalCommand(opts, model) {
  const tStart = process.hrtime.bigint();
  const threads = opts.threads === undefined ? 2 : opts.threads;
  if (threads < 1) fail('eval: --threads must be at least 1');
  const pre = parsePreprocess(opts.preprocess);
  const { images, labels, source } = loadData(opts);
  // "color" as lwc reads it: gray is one channel, rgb three; this tool feeds the data as stored
  // (gray repeated for a 3-channel model) and only checks that the data is what the file says.
  if (pre.color && images.c !== (pre.color === 'gray' ? 1 : 3) && !(pre.color === 'rgb' && images.c === 1))
    fail('eval: ', pre.where, ': "color" "', pre.color, '" but ', source, ' has ', images.c, ' channels; this tool does not convert colours');
  const session = await S.createSession(model, threads);
  const input = S.describe(session, 'input')[0];
  const outputName = session.outputNames[0];
  if (!input || !outputName) fail(model, ': the model needs at least one input and one output');
  const plan = planInput(model, input, images, pre);
  let total = images.n;
  if (opts.limit !== undefined) total = Math.min(total, opts.limit);
  if (total === 0) fail('eval: no images to evaluate');
  let batch = opts.batch === undefined ? 100 : opts.batch;
  if (batch < 1) fail('eval: --batch must be at least 1');
  if (plan.fixedBatch) batch = plan.fixedBatch; // the model's batch is fixed: use it, pad the last batch
  const per = plan.itemShape.reduce((x, y) => x * y, 1);

  let correct = 0, correct5 = 0, classes = 0;
  let loopNs = 0n;
  const f32 = new Float32Array(batch * per);
  for (let first = 0; first < total; first += batch) {
    const count = Math.min(batch, total - first);
    const rows = plan.fixedBatch ? batch : count;
    const t0 = process.hrtime.bigint();
    const buf = rows === batch ? f32 : f32.subarray(0, rows * per);
    if (rows > count) buf.fill(0, count * per);
    preprocessInto(buf, images, first, count, plan, pre);
    const data = plan.type === 'float16' ? Uint16Array.from(buf, floatToHalf) : buf;
    const tensor = S.toOrt({ type: plan.type, data, shape: [rows, ...plan.itemShape] });
    const results = await S.runSession(session, { [input.name]: tensor }, model);
    loopNs += process.hrtime.bigint() - t0;
    const out = results[outputName];
    if (out.type === 'string' || !out.data) fail(model, ': output "', outputName, '" is not a numeric tensor');
    const len = out.data.length;
    if (len % rows !== 0 || len === 0) fail(model, ': output "', outputName, '" has ', len, ' values for a batch of ', rows);
    const c = len / rows;
    if (classes && c !== classes) fail(model, ': output "', outputName, '" changed from ', classes, ' to ', c, ' classes');
    classes = c;
    const scores = out.type === 'float32' || out.type === 'float64' ? out.data : toFloat64(out.type, out.data);
    for (let i = 0; i < count; i++) {
      const r = labelRank(scores, i * c, c, labels[first + i]);
      if (r === 0) correct++;
      if (r < 5) correct5++;
    }
    for (const t of Object.values(results)) if (t.dispose) t.dispose();
  }
  const seconds = Number(loopNs) / 1e9;
  const result = {
    runtime: 'onnxruntime-node',
    version: S.version(),
    model,
    data: source,
    top1: correct / total,
    top5: correct5 / total,
    correct,
    correct_top5: correct5,
    count: total,
    classes,
    batch,
    threads,
    seconds,
    images_per_s: total / seconds,
    total_seconds: Number(process.hrtime.bigint() - tStart) / 1e9,
  };
  if (opts.json) console.log(JSON.stringify(result));
  else
    console.log(
      `${model}: top-1 ${(100 * result.top1).toFixed(2)}% (${correct}/${total}), top-5 ${(100 * result.top5).toFixed(2)}% ` +
        `(${correct5}/${total}); ${seconds.toFixed(3)} s in the loop, ${result.images_per_s.toFixed(1)} images/s ` +
        `(batch ${batch}, ${threads} threads, onnxruntime-node ${result.version})`,
    );
}

module.exports = { evalCommand, parsePreprocess, planInput, preprocessInto, labelRank };
