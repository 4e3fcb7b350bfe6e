#include "passes/huffman_decode.h"

#include "lwc/weight_coding.h"

namespace lwc::passes {

PassResult HuffmanDecode::run(Model& m, PassContext&) {
  PassResult r;
  const int64_t decoded = weight_coding::decodeAll(m);
  r.stats = {{"tensors_decoded", decoded}};
  r.changed = decoded > 0;
  // lwc decode of a plain model wrote it unchanged with nothing but "no change" in the table.
  if (decoded == 0)
    r.notes.push_back(m.label() + ": no Huffman-coded weights (ai.lwc HuffmanDecode nodes) to decode; the model is "
                      "written as it was (lwc encode codes them)");
  return r;
}

}  // namespace lwc::passes
