// ai.lwc::HuffmanDecode (see lwc/weight_coding.h). Its inputs are initializers, so a session
// folds it once when it is built (evaluateNode); this kernel also runs it when they are not.
#include "engine/kernel.h"
#include "lwc/weight_coding.h"

namespace lwc::engine {

void registerCodingKernels(KernelRegistry& r) {
  r.addFn(
      weight_coding::kDecodeOp, 1, 1,
      [](KernelContext& c) {
        const auto shape = c.node.attrInts("shape");
        if (!c.node.hasAttr("shape")) c.error("attribute 'shape' is missing");
        try {
          c.outputs[0] = weight_coding::decodeTensor(c.in(0), c.in(1), Shape(shape.begin(), shape.end()));
        } catch (const Error& e) {
          c.error(e.what());
        }
      },
      weight_coding::kDomain);
}

}  // namespace lwc::engine
