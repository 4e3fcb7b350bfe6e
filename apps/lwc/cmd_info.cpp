// lwc info MODEL: what is in a model and what it costs.
#include <algorithm>
#include <limits>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "lwc/huffman.h"
#include "lwc/json_text.h"
#include "lwc/weight_coding.h"
#include "format.h"
#include "lwc/analysis.h"
#include "lwc/dataset.h"
#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "lwc/shape_inference.h"
#include "passes/fold_constants.h"

namespace lwc::app {

namespace {

struct CodedTensor {
  std::string name, dtype, shape;
  int64_t elements = 0, raw_bytes = 0, stream_bytes = 0, codebook_bytes = 0, symbols = 0;
  bool sparse = false;
  double bits_per_weight = 0;         ///< Huffman codes only
  double stored_bits_per_weight = 0;  ///< stream (header, code lengths, codes) and codebook
};

/// ai.lwc::HuffmanDecode nodes and their sizes (header read only; nothing is decoded).
std::vector<CodedTensor> codedTensors(const Model& m) {
  std::vector<CodedTensor> r;
  for (const auto& n : m.graph.nodes) {
    if (n.domain != weight_coding::kDomain || n.op_type != weight_coding::kDecodeOp || n.inputs.size() < 2) continue;
    const Tensor* s = m.graph.initializers.find(n.inputs[0]);
    const Tensor* c = m.graph.initializers.find(n.inputs[1]);
    if (!s || !c || s->dtype() != DType::UInt8) continue;
    CodedTensor t;
    t.name = n.outputs.empty() ? n.describe() : n.outputs[0];
    t.dtype = std::string(dtypeName(c->dtype()));
    const auto shape = n.attrInts("shape");
    t.shape = shapeStr(Shape(shape.begin(), shape.end()));
    t.elements = numelOf(Shape(shape.begin(), shape.end()));
    t.raw_bytes = t.elements * static_cast<int64_t>(dtypeSize(c->dtype()));
    t.stream_bytes = static_cast<int64_t>(s->nbytes());
    t.codebook_bytes = static_cast<int64_t>(c->nbytes());
    try {
      const auto info = huffman::inspect(std::span<const uint8_t>(static_cast<const uint8_t*>(s->raw()), s->nbytes()));
      t.symbols = info.num_symbols;
      t.sparse = info.sparse;
      t.bits_per_weight = t.elements ? 8.0 * double(info.payload_bytes) / double(t.elements) : 0.0;
      t.stored_bits_per_weight = t.elements ? 8.0 * double(t.stream_bytes + t.codebook_bytes) / double(t.elements) : 0.0;
    } catch (const Error& e) {
      fail(m.label(), ": ", n.describe(), ": ", e.what());
    }
    r.push_back(t);
  }
  return r;
}

struct InfoOptions {
  std::string model;
  bool json = false;
  bool per_layer = false;
  int64_t batch = 1;
};

nlohmann::json shapeJson(const ValueInfo& v) {
  if (!v.shape) return nullptr;
  nlohmann::json a = nlohmann::json::array();
  for (const auto& d : *v.shape) {
    if (d.known()) a.push_back(d.value);
    else a.push_back(d.param.empty() ? "?" : d.param);
  }
  return a;
}

std::string typeStr(const ValueInfo& v) {
  // A tensor of an element type lwc has no kernels for (bfloat16, string, complex) is a tensor:
  // it was shown as "(non-tensor)".
  if (v.other_type && v.other_type->has_tensor_type()) {
    const auto& tt = v.other_type->tensor_type();
    std::string dims;
    if (tt.has_shape())
      for (int i = 0; i < tt.shape().dim_size(); ++i) {
        const auto& d = tt.shape().dim(i);
        dims += (i ? "," : "") + (d.has_dim_value() ? std::to_string(d.dim_value()) : d.dim_param().empty() ? "?" : d.dim_param());
      }
    std::string lower = onnxTypeName(tt.elem_type());
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return lower + " " + (tt.has_shape() ? "[" + dims + "]" : "[?]") + " (an element type lwc does not compute with)";
  }
  if (v.other_type) return "(non-tensor)";
  return std::string(dtypeName(v.dtype)) + " " + (v.shape ? symShapeStr(*v.shape) : "[?]");
}

nlohmann::json buildJson(const Model& m, const ModelStats& st) {
  nlohmann::json j;
  j["schema"] = "lwc.info";
  j["schema_version"] = 1;
  j["model"] = m.source.string();
  j["file_bytes"] = st.file_bytes;
  j["producer"] = {{"name", m.producer_name}, {"version", m.producer_version}};
  j["ir_version"] = m.ir_version;
  nlohmann::json ops = nlohmann::json::object();
  for (const auto& o : m.opset_imports) ops[o.domain.empty() ? "ai.onnx" : o.domain] = o.version;
  j["opsets"] = ops;
  j["batch"] = st.batch;
  auto values = [](const std::vector<const ValueInfo*>& vs) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto* v : vs)
      a.push_back({{"name", v->name}, {"dtype", std::string(dtypeName(v->dtype))}, {"shape", shapeJson(*v)}});
    return a;
  };
  std::vector<const ValueInfo*> outs;
  for (const auto& o : m.graph.outputs) outs.push_back(&o);
  j["inputs"] = values(m.graph.realInputs());
  j["outputs"] = values(outs);
  j["nodes"] = st.nodes;
  j["op_histogram"] = st.op_histogram;
  j["params"] = st.params;
  j["bn_running_stats"] = st.bn_running_stats;
  j["constants"] = st.constants;
  j["macs"] = st.macs;
  // 2 × MACs, or the double when that leaves int64 (a model beyond 4.6e18 MACs at this batch).
  if (st.macs <= std::numeric_limits<int64_t>::max() / 2) j["flops"] = 2 * st.macs;
  else j["flops"] = 2.0 * double(st.macs);
  j["macs_complete"] = st.macs_complete;
  j["other_ops"] = st.other_ops;
  j["weight_bytes"] = st.weight_bytes;
  j["weight_bytes_by_dtype"] = st.weight_bytes_by_dtype;
  j["weights"] = {{"elements", st.weight_elements},
                  {"zeros", st.weight_zeros},
                  {"sparsity", st.weight_elements ? double(st.weight_zeros) / double(st.weight_elements) : 0.0}};
  j["entropy_bound_bytes"] = static_cast<int64_t>(std::ceil(st.entropy_bytes));
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& L : st.layers) {
    layers.push_back({{"name", L.name},
                      {"op_type", L.op_type},
                      {"params", L.params},
                      {"macs", L.macs},
                      {"output_shape", L.output_shape},
                      {"weight_elements", L.weight_elements},
                      {"weight_zeros", L.weight_zeros}});
  }
  j["layers"] = layers;
  j["unsupported_ops"] = engine::unsupportedOps(m);
  const std::string problem = inputModelProblem(m);
  j["checks"] = {{"passed", problem.empty()}, {"problem", problem}, {"undeclared_outputs", undeclaredOutputs(m)}};
  nlohmann::json coded = nlohmann::json::array();
  for (const auto& t : codedTensors(m))
    coded.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"elements", t.elements},
                     {"raw_bytes", t.raw_bytes}, {"stream_bytes", t.stream_bytes}, {"codebook_bytes", t.codebook_bytes},
                     {"symbols", t.symbols}, {"sparse", t.sparse}, {"bits_per_weight", t.bits_per_weight},
                     {"stored_bits_per_weight", t.stored_bits_per_weight}});
  if (!coded.empty()) j["huffman_coded"] = coded;
  return j;
}


void printHuman(const Model& m, const ModelStats& st, bool per_layer) {
  auto& o = std::cout;
  o << "model       " << m.source.string();
  if (st.file_bytes >= 0) o << "  (" << humanBytes(double(st.file_bytes)) << " on disk)";
  o << "\nproducer    " << (m.producer_name.empty() ? "(none)" : m.producer_name) << " " << m.producer_version
    << ", IR version " << m.ir_version << ", opsets:";
  for (const auto& op : m.opset_imports) o << " " << (op.domain.empty() ? "ai.onnx" : op.domain) << " " << op.version;
  o << "\n";
  for (const auto* v : m.graph.realInputs()) o << "input       " << printable(v->name) << "  " << typeStr(*v) << "\n";
  for (const auto& v : m.graph.outputs) o << "output      " << printable(v.name) << "  " << typeStr(v) << "\n";
  std::vector<std::pair<std::string, int64_t>> hist(st.op_histogram.begin(), st.op_histogram.end());
  std::stable_sort(hist.begin(), hist.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  o << "nodes       " << st.nodes << ":";
  for (size_t i = 0; i < hist.size(); ++i) o << (i ? ", " : " ") << hist[i].first << " " << hist[i].second;
  o << "\nparams      " << grouped(st.params) << " (" << humanCount(double(st.params)) << ")";
  if (st.bn_running_stats) o << "; BatchNorm running statistics " << grouped(st.bn_running_stats) << " not counted";
  o << "\nMACs        " << humanCount(double(st.macs)) << " at batch " << st.batch
    << (st.macs_complete ? "" : " (incomplete: some shapes unknown or beyond 64 bits, or a subgraph's MACs not counted)") << "; FLOPs = 2 x MACs = "
    << humanCount(2.0 * double(st.macs)) << "; other ops " << humanCount(double(st.other_ops)) << "\n";
  o << "weights     " << humanBytes(double(st.weight_bytes)) << ":";
  for (const auto& [dt, b] : st.weight_bytes_by_dtype) o << " " << dt << " " << humanBytes(double(b));
  o << "\nsparsity    " << percent(st.weight_elements ? double(st.weight_zeros) / double(st.weight_elements) : 0.0)
    << " of " << grouped(st.weight_elements) << " Conv/Gemm/MatMul weights are exactly zero\n";
  o << "entropy     " << humanBytes(st.entropy_bytes) << " Shannon bound of parameter values";
  if (st.entropy_bytes > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2fx", double(st.plain_weight_bytes) / st.entropy_bytes);
    o << " (" << buf << " below their raw size"
      << (st.plain_weight_bytes != st.weight_bytes ? ", " + humanBytes(double(st.plain_weight_bytes)) + " decoded" : "")
      << ")";
  }
  o << "\n";
  const auto unsupported = engine::unsupportedOps(m);
  if (unsupported.empty()) {
    o << "engine      every op has an lwc engine kernel at its opset (element types are checked when run)\n";
  } else {
    o << "engine      " << unsupported.size() << " node(s) the lwc engine cannot run yet:";
    for (size_t i = 0; i < std::min<size_t>(unsupported.size(), 5); ++i) o << (i ? "; " : " ") << unsupported[i];
    if (unsupported.size() > 5) o << "; ...";
    o << "\n";
  }
  const std::string problem = inputModelProblem(m);
  const auto undeclared = undeclaredOutputs(m);
  if (!problem.empty()) {
    o << "checks      the model " << problem << "\n            lwc's commands that write a model refuse it until it is repaired\n";
  } else if (undeclared.empty()) {
    o << "checks      passes ONNX's checker, strict shape inference and lwc's weight-shape checks\n";
  } else {
    o << "checks      passes ONNX's checker, strict shape inference and lwc's weight-shape checks once shape inference\n"
         "            fills in the type or shape that graph output";
    for (size_t i = 0; i < undeclared.size(); ++i) o << (i ? ", '" : " '") << undeclared[i] << "'";
    o << " leaves out (the commands that write a model do this)\n";
  }
  const auto coded = codedTensors(m);
  if (!coded.empty()) {
    int64_t raw = 0, stream = 0, book = 0;
    o << "\nHuffman-coded weights (ai.lwc.HuffmanDecode; `lwc decode` restores plain ONNX):\n";
    // bits/w stored: what a weight costs in the file (stream and codebook; JSON stored_bits_per_weight);
    // in codes: the Huffman codes alone (JSON bits_per_weight).
    std::printf("%-36s %-14s %10s %10s %10s %8s %7s %7s %9s\n", "tensor", "shape", "raw B", "stream B", "codebook B",
                "values", "coding", "bits/w", "bits/w in");
    std::printf("%-36s %-14s %10s %10s %10s %8s %7s %7s %9s\n", "", "", "", "", "", "", "", "stored", "codes");
    for (const auto& t : coded) {
      std::printf("%s %-14s %10lld %10lld %10lld %8lld %7s %7.2f %9.2f\n", column(t.name, 36).c_str(), t.shape.c_str(),
                  (long long)t.raw_bytes, (long long)t.stream_bytes, (long long)t.codebook_bytes, (long long)t.symbols,
                  t.sparse ? "sparse" : "dense", t.stored_bits_per_weight, t.bits_per_weight);
      raw += t.raw_bytes;
      stream += t.stream_bytes;
      book += t.codebook_bytes;
    }
    // Each sum under its own column (the stored total stood under "codebook B"), then the total.
    std::printf("%-36s %-14s %10lld %10lld %10lld   stored %lld B, %.1fx smaller than raw\n", "total", "", (long long)raw,
                (long long)stream, (long long)book, (long long)(stream + book),
                stream + book ? double(raw) / double(stream + book) : 0.0);
    std::fflush(stdout);
  }
  if (!per_layer) return;
  o << "\n";
  std::printf("%-40s %-20s %12s %14s  %s\n", "layer", "op", "params", "MACs", "output");
  for (const auto& L : st.layers) {
    std::printf("%s %s %12s %14s  %s\n", column(L.name, 40).c_str(), column(L.op_type, 20).c_str(), grouped(L.params).c_str(),
                L.macs < 0 ? "?" : grouped(L.macs).c_str(), L.output_shape.c_str());
  }
  std::printf("%-40s %-20s %12s %14s\n", "total", "", grouped(st.params).c_str(), grouped(st.macs).c_str());
  std::fflush(stdout);
}

}  // namespace

void addInfoCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto opts = std::make_shared<InfoOptions>();
  auto* cmd = app.add_subcommand("info", "Show a model's inputs, ops, parameters, MACs, size and sparsity");
  cmd->add_option("model", opts->model, "ONNX model file")->required();
  cmd->add_flag("--json", opts->json, "Machine-readable output (schema in README)");
  cmd->add_flag("--per-layer", opts->per_layer, "Table of parameters and MACs per layer (--json always lists the layers)");
  // Capped so that MACs and FLOPs (2 per MAC) of any real model stay within 64 bits.
  cmd->add_option("--batch", opts->batch, "Batch size for MACs")->default_val(1)->check(CLI::Range(int64_t(1), kMaxBatch));
  cmd->callback([&action, opts, cmd] {
    const bool batch_given = cmd->count("--batch") > 0;
    action = [opts, batch_given] {
      const Model m = loadInputModel(opts->model);
      ModelStats st = passes::analyzeFolded(m, AnalyzeOptions{opts->batch});
      // --batch fills a symbolic batch dimension; a model whose input fixes it is counted at its
      // own batch size, and says so (it printed "at batch 1" for a batch-3 model's MACs).
      if (const int64_t fixed = fixedBatchSize(m); fixed > 0) {
        if (batch_given && fixed != opts->batch)
          spdlog::warn("{}: the model's input fixes the batch size at {}; MACs are at batch {} (--batch {} ignored)",
                       opts->model, fixed, fixed, opts->batch);
        st.batch = fixed;
      }
      if (opts->json) std::cout << dumpJson(buildJson(m, st)) << "\n";
      else printHuman(m, st, opts->per_layer);
      return 0;
    };
  });
}

}  // namespace lwc::app
