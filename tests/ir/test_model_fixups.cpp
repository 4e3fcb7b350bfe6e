#include <catch2/catch.hpp>

#include "lwc/model_fixups.h"
#include "lwc/model_io.h"
#include "lwc/status.h"

using namespace lwc;

namespace {

onnx::NodeProto protoNode(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                          const std::string& domain = "", const std::string& name = "") {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_domain(domain);
  n.set_name(name);
  for (const auto& s : in) n.add_input(s);
  for (const auto& s : out) n.add_output(s);
  return n;
}

/// custom.Scale(x, w) -> (y, unused): t = Mul(x, w); y = LeakyRelu<alpha = @alpha>(t); a second
/// output the calls may leave out.
onnx::FunctionProto scaleFunction(int64_t opset = 13) {
  onnx::FunctionProto f;
  f.set_domain("custom");
  f.set_name("Scale");
  for (const char* s : {"x", "w"}) f.add_input(s);
  for (const char* s : {"y", "extra"}) f.add_output(s);
  f.add_attribute("alpha");
  *f.add_node() = protoNode("Mul", {"x", "w"}, {"t"}, "", "mul");
  onnx::NodeProto relu = protoNode("LeakyRelu", {"t"}, {"y"});
  auto* a = relu.add_attribute();
  a->set_name("alpha");
  a->set_ref_attr_name("alpha");
  a->set_type(onnx::AttributeProto::FLOAT);
  *f.add_node() = relu;
  *f.add_node() = protoNode("Identity", {"t"}, {"extra"});
  auto* o = f.add_opset_import();
  o->set_domain("");
  o->set_version(opset);
  return f;
}

Model callingModel() {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13, "custom" : 1]>
g (float[2] x) => (float[2] y)
<float[2] w = {3.0, 4.0}>
{
  t = Identity(x)
  y = Identity(t)
}
)");
  // The two Identities become calls: 'call' sets alpha, the second (unnamed) leaves it out.
  Node& c1 = m.graph.nodes[0];
  c1.op_type = "Scale";
  c1.domain = "custom";
  c1.name = "call";
  c1.inputs = {"x", "w"};
  c1.setAttr("alpha", 0.5f);
  Node& c2 = m.graph.nodes[1];
  c2.op_type = "Scale";
  c2.domain = "custom";
  c2.name = "";
  c2.inputs = {"t", "w"};
  m.functions.push_back(scaleFunction());
  return m;
}

const Node* findNode(const Model& m, const std::string& name) {
  for (const auto& n : m.graph.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

}  // namespace

TEST_CASE("inlineLocalFunctions replaces each call by the body, renamed under the call") {
  Model m = callingModel();
  const auto lines = inlineLocalFunctions(m);
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("'custom.Scale' (2 calls)"));
  REQUIRE(m.graph.nodes.size() == 6);
  CHECK(m.functions.empty());
  CHECK(m.opsetFor("custom") == 0);  // no node of the functions' domain is left
  CHECK(m.opsetFor("") == 13);

  const Node* mul = findNode(m, "call/mul");
  REQUIRE(mul);
  CHECK(mul->op_type == "Mul");
  CHECK(mul->inputs == std::vector<std::string>{"x", "w"});
  CHECK(mul->outputs == std::vector<std::string>{"call/t"});
  const Node* relu = findNode(m, "call/LeakyRelu_1");
  REQUIRE(relu);
  CHECK(relu->inputs == std::vector<std::string>{"call/t"});
  CHECK(relu->outputs == std::vector<std::string>{"t"});  // the call's output
  CHECK(relu->attrFloat("alpha", -1.f) == 0.5f);
  CHECK(relu->attr("alpha")->ref_attr_name().empty());
  // The call left the second output out: the body's value gets an internal name.
  const Node* extra = findNode(m, "call/Identity_2");
  REQUIRE(extra);
  CHECK(extra->outputs == std::vector<std::string>{"call/extra"});

  // The unnamed call is prefixed with the function's name; it did not set alpha, so the body's
  // LeakyRelu has none (the operator's default).
  const Node* relu2 = findNode(m, "Scale/LeakyRelu_1");
  REQUIRE(relu2);
  CHECK(relu2->inputs == std::vector<std::string>{"Scale/t"});
  CHECK(relu2->outputs == std::vector<std::string>{"y"});
  CHECK_FALSE(relu2->hasAttr("alpha"));
  validateGraph(m.graph);

  // Written and read back, the model has no function left to run.
  const Model back = modelFromProto(modelToProto(m), ".", "back");
  CHECK(back.functions.empty());
  CHECK(back.graph.nodes.size() == 6);
}

TEST_CASE("inlineLocalFunctions keeps a function that a subgraph still calls, and its domain") {
  // The If branch's call is not inlined: dropping the function (and the 'custom' import) made the
  // model fail ONNX's checker ("No opset import for domain").
  Model m = callingModel();
  onnx::GraphProto branch;
  branch.set_name("then");
  *branch.add_node() = protoNode("Scale", {"x", "w"}, {"b"}, "custom", "inner");
  auto* out = branch.add_output();
  out->set_name("b");
  Node& second = m.graph.nodes[1];  // the second call becomes an If whose branch calls Scale
  second = Node{};
  second.op_type = "If";
  second.name = "if";
  second.inputs = {"c"};
  second.outputs = {"y"};
  for (const char* name : {"then_branch", "else_branch"}) {
    onnx::AttributeProto a;
    a.set_name(name);
    a.set_type(onnx::AttributeProto::GRAPH);
    *a.mutable_g() = branch;
    second.attrs.push_back(a);
  }
  const auto lines = inlineLocalFunctions(m);
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("(1 call)"));
  REQUIRE(m.functions.size() == 1);
  CHECK(m.functions[0].name() == "Scale");
  CHECK(m.opsetFor("custom") == 1);
  // Without the If, the same inlining drops both.
  Model plain = callingModel();
  inlineLocalFunctions(plain);
  CHECK(plain.functions.empty());
}

TEST_CASE("inlineLocalFunctions inlines nested calls and refuses recursion and a foreign opset") {
  SECTION("a function calling another") {
    Model m = callingModel();
    onnx::FunctionProto outer;
    outer.set_domain("custom");
    outer.set_name("Outer");
    outer.add_input("a");
    outer.add_input("b");
    outer.add_output("c");
    onnx::NodeProto inner = protoNode("Scale", {"a", "b"}, {"c"}, "custom", "inner");
    auto* alpha = inner.add_attribute();
    alpha->set_name("alpha");
    alpha->set_type(onnx::AttributeProto::FLOAT);
    alpha->set_f(0.25f);
    *outer.add_node() = inner;
    auto* o = outer.add_opset_import();
    o->set_domain("custom");
    o->set_version(1);
    m.functions.push_back(outer);
    m.graph.nodes[0].op_type = "Outer";
    m.graph.nodes[0].removeAttr("alpha");
    const auto lines = inlineLocalFunctions(m);
    CHECK(lines.size() == 2);
    const Node* relu = findNode(m, "call/inner/LeakyRelu_1");
    REQUIRE(relu);
    CHECK(relu->attrFloat("alpha", -1.f) == 0.25f);
    CHECK(relu->outputs == std::vector<std::string>{"t"});
    CHECK(m.functions.empty());
    validateGraph(m.graph);
  }
  SECTION("recursion") {
    Model m = callingModel();
    m.functions[0].mutable_node(0)->set_op_type("Scale");
    m.functions[0].mutable_node(0)->set_domain("custom");
    CHECK_THROWS_WITH(inlineLocalFunctions(m), Catch::Contains("'custom.Scale' calls itself"));
  }
  SECTION("a body at another opset") {
    Model m = callingModel();
    m.functions[0] = scaleFunction(11);
    CHECK_THROWS_WITH(inlineLocalFunctions(m), Catch::Contains("imports opset 11 of domain 'ai.onnx' and the model opset 13"));
  }
  SECTION("a body with a subgraph (If)") {
    Model m = callingModel();
    onnx::NodeProto iff = protoNode("If", {"x"}, {"y"});
    auto* a = iff.add_attribute();
    a->set_name("then_branch");
    a->set_type(onnx::AttributeProto::GRAPH);
    a->mutable_g()->set_name("then");
    *m.functions[0].mutable_node(1) = iff;
    CHECK_THROWS_WITH(inlineLocalFunctions(m), Catch::Contains("node with a subgraph"));
  }
  SECTION("no functions, or none called: nothing changes") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x) => (float[2] y) { y = Relu(x) }
)");
    CHECK(inlineLocalFunctions(m).empty());
    m.functions.push_back(scaleFunction());
    CHECK(inlineLocalFunctions(m).empty());
    CHECK(m.functions.size() == 1);
  }
}

TEST_CASE("initializerInputsToConstants takes initializers out of the input list") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x, float[2] w) => (float[2] y)
<float[2] w = {3.0, 4.0}>
{ y = Mul(x, w) }
)");
  REQUIRE(m.graph.inputs.size() == 2);
  const auto lines = initializerInputsToConstants(m);
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("1 initializer is also listed as graph input (e.g. 'w'"));
  REQUIRE(m.graph.inputs.size() == 1);
  CHECK(m.graph.inputs[0].name == "x");
  CHECK(m.graph.initializers.contains("w"));
  CHECK(initializerInputsToConstants(m).empty());
}

TEST_CASE("makeNodeNamesUnique numbers repeated node names and leaves empty ones") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x) => (float[2] y)
{
  a = Relu(x)
  b = Relu(a)
  c = Relu(b)
  d = Relu(c)
  y = Relu(d)
}
)");
  auto& n = m.graph.nodes;
  n[0].name = "r";
  n[1].name = "r";
  n[2].name = "r_1";  // the number the first repeat would take is already used
  n[3].name = "";
  n[4].name = "";
  const auto lines = makeNodeNamesUnique(m);
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("1 node name is shared by several nodes ('r' by 2)"));
  CHECK_THAT(lines[0], Catch::Contains("renames the repeats ('r' -> 'r_2', ...)"));  // the name it wrote
  CHECK(n[0].name == "r");
  CHECK(n[1].name == "r_2");
  CHECK(n[2].name == "r_1");
  CHECK(n[3].name.empty());
  CHECK(n[4].name.empty());
  CHECK(makeNodeNamesUnique(m).empty());
}
