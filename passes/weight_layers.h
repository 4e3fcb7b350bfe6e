// Which layers a weight-rewriting pass (prune_magnitude, weight_share) works on: Conv,
// ConvTranspose, Gemm and MatMul of the default domain whose second input is a constant float32
// tensor of rank >= 2, chosen by the passes' common include / exclude / min_params options. One
// entry per weight tensor: a weight several layers read is changed for all of them or, where
// include/exclude or min_params keeps one reader as it is, for none. Every layer passed over for a
// reason the user can act on gets a note ("Conv 'c1': left dense (include/exclude)"); layers with
// float16 weights or a constant first operand are named too, not skipped without a word.
#pragma once

#include <string>
#include <vector>

#include "lwc/graph.h"
#include "lwc/pass.h"

namespace lwc::passes {

struct WeightLayer {
  size_t node;
  std::string weight;
};

struct WeightLayerFilter {
  std::vector<std::string> include, exclude;  ///< node names or op types
  int64_t min_params = 0;
  std::string kept = "left alone";  ///< how a note says "not changed": "left dense", "left alone"
};

/// The node names and op types option `key` (include / exclude) lists, each checked against `g`:
/// fails naming the option (o.key) when one names no node or op type, with `hint` appended. An
/// entry that names none but holds commas is a comma-separated list (the CLI hands `--exclude A,B`
/// over whole), whose pieces are joined back where the joined text names a node: a node named
/// "fc1,a" can be given on the command line, alone or in a list.
std::vector<std::string> resolveNodeList(const Graph& g, const PassOptions& o, const std::string& key,
                                         const std::string& label, const std::string& hint = "");

/// The filter of options include / exclude (through resolveNodeList) and min_params; `kept` as in
/// WeightLayerFilter.
WeightLayerFilter weightLayerFilter(const Graph& g, const PassOptions& o, const std::string& label, std::string kept);

/// Fails naming option exclude when one of its entries is also in `include`: in both lists it means
/// nothing (prune_magnitude then said only "no layer to prune", huffman_encode nothing).
void refuseInBoth(const std::vector<std::string>& include, const std::vector<std::string>& exclude, const PassOptions& o);

std::vector<WeightLayer> selectWeightLayers(const Graph& g, const WeightLayerFilter& f, std::vector<std::string>& notes);

/// "its weights are Huffman-coded (...: decode them first)" when `value` is computed by lwc's
/// weight decoder (ai.lwc HuffmanDecode); empty otherwise. Passes that leave such a layer alone say
/// this rather than nothing, or that its weights are not constant.
std::string codedWeightsReason(const Graph& g, const std::string& value);

}  // namespace lwc::passes
