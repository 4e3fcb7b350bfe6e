#include "passes/registry.h"

#include "passes/eliminate_dead.h"
#include "passes/eliminate_identity.h"
#include "passes/float16_weights.h"
#include "passes/fold_constants.h"
#include "passes/fuse_batchnorm.h"
#include "passes/fuse_bias_add.h"
#include "passes/fuse_pad_into_conv.h"
#include "passes/fuse_reshape.h"
#include "passes/fuse_slices.h"
#include "passes/prune_magnitude.h"
#include "passes/weight_share.h"
#include "passes/prune_channels.h"
#include "passes/huffman_encode.h"
#include "passes/huffman_decode.h"
#include "passes/quantize_dynamic.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

void registerBuiltinPasses(PassRegistry& r) {
  r.add([] { return std::make_unique<EliminateDead>(); });
  r.add([] { return std::make_unique<EliminateIdentity>(); });
  r.add([] { return std::make_unique<FoldConstants>(); });
  r.add([] { return std::make_unique<FuseBatchnorm>(); });
  r.add([] { return std::make_unique<FuseBiasAdd>(); });
  r.add([] { return std::make_unique<FusePadIntoConv>(); });
  r.add([] { return std::make_unique<FuseReshape>(); });
  r.add([] { return std::make_unique<FuseSlices>(); });
  r.add([] { return std::make_unique<QuantizeStatic>(); });
  r.add([] { return std::make_unique<QuantizeDynamic>(); });
  r.add([] { return std::make_unique<PruneMagnitude>(); });
  r.add([] { return std::make_unique<WeightShare>(); });
  r.add([] { return std::make_unique<PruneChannels>(); });
  r.add([] { return std::make_unique<HuffmanEncode>(); });
  r.add([] { return std::make_unique<HuffmanDecode>(); });
  r.add([] { return std::make_unique<Float16Weights>(); });
}

const PassRegistry& builtinPasses() {
  static const PassRegistry r = [] {
    PassRegistry reg;
    registerBuiltinPasses(reg);
    return reg;
  }();
  return r;
}

}  // namespace lwc::passes
