// libFuzzer target for reading a model: the bytes of an ONNX file go through protobuf parsing,
// lwc's model building (validation, opset lowering of newer opsets, function inlining), the
// analysis `lwc info` prints (parameters, MACs, weight statistics) and shape inference, with a
// batch size given and without. lwc::Error is the expected answer to a bad model; anything else
// (another exception, a sanitizer report, a crash inside ONNX's shape inference) is a bug, in lwc
// or in a library lwc must keep away from what crashes it.
// Seeds: the model.onnx files of libonnx-testdata's node tests (scripts/test.sh copies them).
#include <onnx/onnx_pb.h>

#include <cstdint>

#include "lwc/analysis.h"
#include "lwc/model_io.h"
#include "lwc/shape_inference.h"
#include "lwc/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onnx::ModelProto proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  try {
    // External data resolves against a folder that does not exist: no file is read.
    const lwc::Model m = lwc::modelFromProto(proto, "/nonexistent/lwc-fuzz", "fuzz.onnx");
    lwc::AnalyzeOptions a;
    a.batch = 2;
    (void)lwc::analyzeModel(m, a);
    (void)lwc::inferShapes(m);
    (void)lwc::modelToProto(m);
  } catch (const lwc::Error&) {
  }
  return 0;
}
