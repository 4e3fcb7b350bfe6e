#include <catch2/catch.hpp>

#include "lwc/graph.h"
#include "lwc/model_io.h"

using namespace lwc;

namespace {
Node mk(const std::string& name, const std::string& op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}
Graph chain() {
  Graph g;
  g.inputs.push_back(ValueInfo{.name = "x", .dtype = DType::Float32});
  g.outputs.push_back(ValueInfo{.name = "z", .dtype = DType::Float32});
  // deliberately out of order
  g.nodes.push_back(mk("second", "Relu", {"y"}, {"z"}));
  g.nodes.push_back(mk("first", "Neg", {"x"}, {"y"}));
  return g;
}
}  // namespace

TEST_CASE("topological sort", "[graph]") {
  SECTION("reorders") {
    Graph g = chain();
    topoSort(g);
    CHECK(g.nodes[0].name == "first");
    CHECK(g.nodes[1].name == "second");
  }
  SECTION("stable when already sorted") {
    Graph g;
    g.inputs.push_back(ValueInfo{.name = "x"});
    g.nodes.push_back(mk("b", "Relu", {"x"}, {"b"}));
    g.nodes.push_back(mk("a", "Relu", {"x"}, {"a"}));
    g.nodes.push_back(mk("c", "Add", {"a", "b"}, {"c"}));
    topoSort(g);
    CHECK(g.nodes[0].name == "b");
    CHECK(g.nodes[1].name == "a");
  }
  SECTION("cycle is an error naming a node") {
    Graph g;
    g.inputs.push_back(ValueInfo{.name = "x"});
    g.nodes.push_back(mk("p", "Add", {"x", "q_out"}, {"p_out"}));
    g.nodes.push_back(mk("q", "Relu", {"p_out"}, {"q_out"}));
    CHECK_THROWS_WITH(topoSort(g, "m.onnx"), Catch::Contains("m.onnx") && Catch::Contains("cycle") &&
                                                 (Catch::Contains("'p'") || Catch::Contains("'q'")));
  }
}

TEST_CASE("graph validation", "[graph]") {
  Graph g = chain();
  CHECK_NOTHROW(validateGraph(g));
  g.nodes.push_back(mk("dangling", "Relu", {"nowhere"}, {"w"}));
  CHECK_THROWS_WITH(validateGraph(g, "m.onnx"), Catch::Contains("'dangling'") && Catch::Contains("'nowhere'"));
  Graph h = chain();
  h.nodes.push_back(mk("dup", "Relu", {"x"}, {"y"}));
  CHECK_THROWS_WITH(validateGraph(h), Catch::Contains("more than once"));
  Graph k = chain();
  k.outputs.push_back(ValueInfo{.name = "missing"});
  CHECK_THROWS_WITH(validateGraph(k), Catch::Contains("'missing'"));
}

TEST_CASE("graph index and names", "[graph]") {
  Graph g = chain();
  topoSort(g);
  GraphIndex idx(g);
  CHECK(idx.producer("y") == 0);
  CHECK(idx.producer("x") == -1);
  CHECK(idx.consumers("y") == std::vector<int>{1});
  CHECK(idx.consumers("z").empty());
  CHECK(g.uniqueName("y") == "y_1");
  CHECK(g.uniqueName("fresh") == "fresh");
  // Names inside a subgraph are taken too: a new outer value named like a branch's own value would
  // be defined twice in the branch's scope.
  onnx::AttributeProto branch;
  branch.set_name("then_branch");
  branch.set_type(onnx::AttributeProto::GRAPH);
  auto* inner = branch.mutable_g()->add_node();
  inner->set_op_type("Relu");
  inner->add_input("y");
  inner->add_output("fresh");
  onnx::AttributeProto deeper;
  deeper.set_name("body");
  deeper.set_type(onnx::AttributeProto::GRAPH);
  deeper.mutable_g()->add_initializer()->set_name("deep");
  *inner->add_attribute() = deeper;
  Node cond = mk("if", "If", {"c"}, {"o"});
  cond.attrs.push_back(branch);
  g.nodes.push_back(cond);
  CHECK(g.uniqueName("fresh") == "fresh_1");
  CHECK(g.uniqueName("deep") == "deep_1");
}

TEST_CASE("node attributes", "[graph]") {
  Node n = mk("c", "Conv", {"x", "w"}, {"y"});
  n.setAttr("group", int64_t{2});
  n.setAttr("pads", std::vector<int64_t>{1, 1, 1, 1});
  n.setAttr("alpha", 0.5f);
  n.setAttr("auto_pad", std::string("NOTSET"));
  CHECK(n.attrInt("group", 1) == 2);
  CHECK(n.attrInt("missing", 7) == 7);
  CHECK(n.attrInts("pads") == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(n.attrFloat("alpha", 0) == 0.5f);
  CHECK(n.attrString("auto_pad") == "NOTSET");
  CHECK_THROWS_WITH(n.attrInt("pads", 0), Catch::Contains("'pads'") && Catch::Contains("Conv 'c'"));
  n.setAttr("group", int64_t{3});
  CHECK(n.attrInt("group", 1) == 3);
  CHECK(n.attrs.size() == 4);
  n.removeAttr("group");
  CHECK_FALSE(n.hasAttr("group"));
}

TEST_CASE("subgraph reads are implicit inputs", "[graph]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[2] x) => (float[2] y)
{
  t = Neg(x)
  y = If (c) <then_branch = g1 () => (float[2] o1) { o1 = Identity(t) }, else_branch = g2 () => (float[2] o2) { o2 = Relu(x) }>
}
)");
  const Node& ifn = m.graph.nodes[1];
  auto imp = implicitInputs(ifn);
  CHECK(imp == std::vector<std::string>{"t", "x"});
  GraphIndex idx(m.graph);
  CHECK(idx.consumers("t") == std::vector<int>{1});
}
