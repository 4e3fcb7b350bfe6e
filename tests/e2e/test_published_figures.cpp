// lwc info against published figures of torchvision models (random weights; counting only).
// The models are exported by scripts/gen_torchvision.py (CTest fixture "torchvision_models").
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_util.h"

using namespace lwc;
namespace fs = std::filesystem;

namespace {
struct Published {
  const char* name;
  double params;  ///< published parameter count
  double macs;    ///< published multiply-accumulates at 224x224, batch 1
};

nlohmann::json infoJson(const fs::path& model) {
  auto r = test::runLwc("info --json '" + model.string() + "'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}
}  // namespace

TEST_CASE("lwc info agrees with published parameter and MAC counts", "[figures]") {
  const fs::path dir = test::generatedModelsDir() / "torchvision";
  // Published: torchvision docs / the papers (MobileNetV2: 3.4 M params, 300 M MACs; ResNet-50:
  // 25.6 M, 4.09 G; SqueezeNet 1.1: 1.24 M, 349 M; ShuffleNet V2 1x: 2.3 M, 146 M "FLOPs" counted
  // as multiply-adds, Ma et al. 2018. Its channel shuffle computes Reshape targets with
  // Div and Cast, which ONNX's shape inference does not propagate: lwc evaluates them).
  const Published models[] = {{"mobilenet_v2", 3.50e6, 300e6},
                              {"resnet50", 25.6e6, 4.09e9},
                              {"squeezenet1_1", 1.24e6, 349e6},
                              {"shufflenet_v2_x1_0", 2.28e6, 146e6}};
  std::ifstream pf(dir / "torchvision_params.json");
  REQUIRE(pf.good());
  const auto torch_counts = nlohmann::json::parse(pf);
  for (const auto& p : models) {
    INFO(p.name);
    const fs::path model = dir / (std::string(p.name) + ".onnx");
    REQUIRE(fs::exists(model));
    const auto j = infoJson(model);
    const double params = j["params"].get<double>();
    const double macs = j["macs"].get<double>();
    CHECK(j["macs_complete"].get<bool>());
    CHECK(std::abs(params / p.params - 1.0) <= 0.01);
    CHECK(std::abs(macs / p.macs - 1.0) <= 0.01);
    // Exactly what PyTorch counts as parameters; BN running stats reported apart.
    CHECK(j["params"].get<int64_t>() == torch_counts[p.name]["params"].get<int64_t>());
    CHECK(j["bn_running_stats"].get<int64_t>() == torch_counts[p.name]["bn_running_stats"].get<int64_t>());
    // FLOPs convention
    CHECK(j["flops"].get<int64_t>() == 2 * j["macs"].get<int64_t>());
  }
}
