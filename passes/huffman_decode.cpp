#include "passes/huffman_decode.h"

#include "lwc/weight_coding.h"

namespace lwc::passes {

PassResult HuffmanDecode::run(Model& m, PassContext&) {
  PassResult r;
  const int64_t decoded = weight_coding::decodeAll(m);
  r.stats = {{"tensors_decoded", decoded}};
  r.changed = decoded > 0;
  return r;
}

}  // namespace lwc::passes
