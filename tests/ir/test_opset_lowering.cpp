// Models newer than Debian's ONNX 1.12 (opset 17, IR 8), as lwc reads them (lwc/opset_lowering.h);
// what they compute is tested in tests/engine/test_opset_lowering.cpp. Here under the sanitizers.
#include <catch2/catch.hpp>

#include <onnx/checker.h>

#include "lwc/model_fixups.h"
#include "lwc/model_io.h"
#include "lwc/opset_lowering.h"
#include "lwc/status.h"

using namespace lwc;

TEST_CASE("opset lowering refuses what opset 17 cannot say, naming the node", "[opset_lowering]") {
  auto refused = [](const char* text) -> std::string {
    try {
      parseModelText(text);
    } catch (const Error& e) {
      return e.what();
    }
    return "(read without an error)";
  };
  // Each node, in the graph `head` opens, is refused naming it and the fix.
  using Cases = std::vector<std::pair<const char*, const char*>>;
  auto refusedNodes = [&](const char* head, const Cases& cases) {
    for (const auto& [node, expect] : cases) {
      INFO(node);
      CHECK_THAT(refused((std::string(head) + node + "\n}\n").c_str()),
                 Catch::Contains(expect) && Catch::Contains("opset_version=17"));
    }
  };
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 4] x, int64[1] k) => (float[2] y)
{
  y = ReduceMean <keepdims = 0> (x, k)
}
)"),
             Catch::Contains("ReduceMean (output 'y')") && Catch::Contains("'k', which is computed at run time") &&
                 Catch::Contains("opset_version=17"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 4] x) => (float[2, 6] y)
<int64[2] pads = {1, 1}, int64[1] axes = {1}>
{
  y = Pad (x, pads, , axes)
}
)"),
             Catch::Contains("Pad (output 'y') pads only some axes"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[1, 1, 4, 4] x) => (float[1, 1, 2, 2] y)
<float[4] scales = {1.0, 1.0, 0.5, 0.5}>
{
  y = Resize <antialias = 1> (x, , scales)
}
)"),
             Catch::Contains("Resize (output 'y') has antialias 1"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 21]>
g (float[1, 4, 2] x, int64[3] s) => (float[1, 4, 2] y)
{
  y = CenterCropPad (x, s)
}
)"),
             Catch::Contains("CenterCropPad (output 'y') is an op opset 17 does not have"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 21]>
g (float[1, 4, 2] x, float[4] s) => (float[1, 4, 2] y)
{
  y = GroupNormalization <num_groups = 2> (x, s)
}
)"),
             Catch::Contains("GroupNormalization (output 'y') has 2 inputs and 1 outputs; GroupNormalization takes X, "
                             "scale and bias"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 21]>
g (float[1, 4, 2] x, float[4] s, float[4] b) => (float[1, 4, 2] y)
{
  y = GroupNormalization <num_groups = 0> (x, s, b)
}
)"),
             Catch::Contains("GroupNormalization (output 'y') has num_groups 0") && Catch::Contains("opset_version=17"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 26]>
g (float[2] x) => (float[2] y)
{
  y = Relu (x)
}
)"),
             Catch::Contains("imports opset 26; lwc reads opsets up to 25"));
  // Opsets 23-25: ops with no opset-17 form, attributes that may change the result, corrupt nodes.
  refusedNodes(R"(
<ir_version: 8, opset_import: ["" : 24]>
g (float[2, 4] x, float[1, 2, 8] x3, float[1, 2, 3, 4] x4) => (float[2, 4] y)
<float[4] s = {1.0, 1.0, 1.0, 1.0}, uint8 z = {0}>
{
  h = Relu (x)
  )", {
      {"y = Attention (x, x, x, , x, x)", "Attention (output 'y') reads a key/value cache"},
      {"y, pk = Attention (x, x, x)", "Attention (output 'y') gives output 1"},
      {"y = Attention <softcap = 30.0> (x, x, x)", "Attention (output 'y') has softcap"},
      {"y = Attention (x4, x4, x4, h)", "has an attn_mask 'h' whose element type is not declared"},
      {"y = Attention (x3, x3, x3)", "has 3-D inputs without q_num_heads and kv_num_heads"},
      {"y = Attention <q_num_heads = 4, kv_num_heads = 2> (x3, x3, x3)", "groups 4 query heads over 2 key/value heads"},
      {"y = Attention <q_num_heads = 2, kv_num_heads = 2> (h, h, h)", "q_num_heads/kv_num_heads for a Q whose rank"},
      {"y = RotaryEmbedding (x, x, x)", "RotaryEmbedding (output 'y') is an op opset 17 does not have"},
      {"y = RMSNormalization <axis = 1> (h, s)", "normalises from axis 1 of an input whose rank is not declared"},
      {"y = RMSNormalization <axis = 2> (x, s)", "has axis 2 for an input of rank 2"},
      {"y = RMSNormalization <axis = -3> (x, s)", "has axis -3 for an input of rank 2"},
      {"y = RMSNormalization <axis = -2147483648> (h, s)", "has axis -2147483648"},
      {"y = RMSNormalization <stash_type = 6> (x, s)", "has stash_type 6"},
      {"q = QuantizeLinear <precision = 10> (x, s, z)", "QuantizeLinear (output 'q') sets precision 10 (opset 23)"},
      {"y = DequantizeLinear <output_dtype = 10> (z, s, z)", "DequantizeLinear (output 'y') sets output_dtype 10 (opset 23)"},
  });
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 24]>
g (float[2] x) => (float[2] y)
{
  y = Swish ()
}
)"),
             Catch::Contains("Swish (output 'y') has 0 inputs and 1 outputs; Swish takes one input and gives one output"));
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 20]>
g (float[2] x) => (float[2] y)
{
  y = Gelu ()
}
)"),
             Catch::Contains("Gelu (output 'y') has 0 inputs and 1 outputs; Gelu takes one input and gives one output"));
  // The other rewrites' refusals, one node each at opset 20.
  refusedNodes(R"(
<ir_version: 8, opset_import: ["" : 21]>
g (float[2, 4] x) => (float[2, 4] y)
<int64[4] p = {0, 1, 0, 1}, int64[2, 4] i = {0, 0, 0, 0, 0, 0, 0, 0}, float[2] s = {1.0, 1.0}>
{
  )", {
      {"y = AveragePool <kernel_shape = [2], dilations = [2]> (x)", "AveragePool (output 'y') has dilations other than 1"},
      {"y = Pad <mode = \"wrap\"> (x, p)", "Pad (output 'y') pads in mode 'wrap'"},
      {"y = ScatterElements <reduction = \"max\"> (x, i, x)", "ScatterElements (output 'y') has reduction 'max'"},
      {"y = Gelu <approximate = \"cubic\"> (x)", "Gelu (output 'y') has approximate 'cubic'"},
      {"y, z = Split <axis = 1, num_outputs = 3> (x)", "Split (output 'y') has num_outputs 3 but 2 outputs"},
      {"y = Resize <keep_aspect_ratio_policy = \"not_larger\"> (x, , s)", "keep_aspect_ratio_policy 'not_larger'"},
      {"y = QuantizeLinear <output_dtype = 3> (x, s)", "QuantizeLinear (output 'y') sets output_dtype 3 without a zero point"},
  });
  // An opset-18 Split whose chunks of ceil(5 / 4) = 2 leave nothing for its last output.
  CHECK_THAT(refused(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 5] x) => (float[2, 2] a, float[2, 2] b, float[2, 1] c, float[2, 0] d)
{
  a, b, c, d = Split <axis = 1, num_outputs = 4> (x)
}
)"),
             Catch::Contains("Split (output 'a') splits a dimension of 5 into 4 chunks of 2, which leaves none for the "
                             "last: the model is corrupt"));
  // A float8 tensor (IR 9 on): refused by type, whatever the opset.
  onnx::ModelProto p = modelToProto(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x) => (float[2] y)
{
  y = Relu (x)
}
)"));
  p.set_ir_version(9);
  p.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(17);
  CHECK_THROWS_WITH(modelFromProto(p, {}, "f8.onnx"), Catch::Contains("f8.onnx: uses element type 17") &&
                                                         Catch::Contains("export the model in float32 or float16"));
}

TEST_CASE("a model at a known opset and IR version is read unchanged", "[opset_lowering]") {
  const char* text = R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2] y)
{
  y = ReduceMean <keepdims = 0, axes = [1]> (x)
}
)";
  Model m = parseModelText(text);
  CHECK(m.load_notes.empty());
  CHECK(m.opsetFor("") == 17);
  onnx::ModelProto p = modelToProto(m);
  onnx::ModelProto lowered = p;
  CHECK(lowerToKnownVersions(lowered, "m").empty());
  CHECK(lowered.SerializeAsString() == p.SerializeAsString());
  // The same model at IR 9 only changes its IR version.
  p.set_ir_version(9);
  const Model m9 = modelFromProto(p, {}, "m9");
  REQUIRE(m9.load_notes.size() == 1);
  CHECK_THAT(m9.load_notes[0], Catch::Contains("reads IR version 9 as IR version 8"));
  CHECK(m9.ir_version == 8);
}

TEST_CASE("opset lowering rewrites model-local function bodies with Constant nodes for their scalars", "[opset_lowering]") {
  onnx::ModelProto p = modelToProto(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17, "lwc.test" : 1]>
g (float[2, 3] x) => (float[2, 3] y)
{
  y = lwc.test.Act (x)
}
)"));
  onnx::FunctionProto* f = p.add_functions();
  f->set_domain("lwc.test");
  f->set_name("Act");
  f->add_input("a");
  f->add_output("b");
  onnx::NodeProto* gelu = f->add_node();
  gelu->set_op_type("Gelu");
  gelu->add_input("a");
  gelu->add_output("b");
  auto* o = f->add_opset_import();
  o->set_domain("");
  o->set_version(20);
  p.mutable_opset_import(0)->set_version(20);

  Model m = modelFromProto(p, {}, "fn.onnx");
  REQUIRE(m.functions.size() == 1);
  const onnx::FunctionProto& body = m.functions[0];
  CHECK(body.opset_import(0).version() == 17);
  int constants = 0, gelus = 0, erfs = 0;
  for (const auto& n : body.node()) {
    constants += n.op_type() == "Constant";
    gelus += n.op_type() == "Gelu";
    erfs += n.op_type() == "Erf";
  }
  CHECK(constants == 3);
  CHECK(gelus == 0);
  CHECK(erfs == 1);
  CHECK(m.graph.initializers.size() == 0);  // a body has no initializers to put them in
  // Inlined, the model is one ONNX 1.12's checker accepts.
  normalizeModel(m);
  CHECK(m.functions.empty());
  CHECK_NOTHROW(onnx::checker::check_model(modelToProto(m)));
}
