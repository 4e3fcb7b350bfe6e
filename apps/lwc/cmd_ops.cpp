// lwc ops: the ops the engine runs, with the model opset range each implementation covers.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lwc/engine.h"
#include "lwc/opset_lowering.h"

namespace lwc::app {

void addOpsCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("ops", "List the ops the lwc engine supports, with opset ranges");
  cmd->add_flag("--json", *json, "Machine-readable output");
  cmd->callback([&action, json] {
    action = [json] {
      auto ops = engine::supportedOps();
      // A kernel that runs the newest opset the ONNX library knows also runs models of the newer
      // opsets lwc reads by lowering them to it (README, "Newer opsets"): the range a user can load.
      for (auto& o : ops)
        if (o.domain.empty() && o.until >= knownOpset()) o.until = kMaxReadableOpset;
      if (*json) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& o : ops)
          a.push_back({{"domain", o.domain.empty() ? "ai.onnx" : o.domain},
                       {"op_type", o.op_type},
                       {"since", o.since},
                       {"until", o.until},
                       {"implementations", o.impls}});
        std::cout << nlohmann::json{{"schema", "lwc.ops"}, {"schema_version", 1}, {"ops", a}}.dump(2) << "\n";
        return 0;
      }
      std::printf("%-12s %-32s %-9s %s\n", "domain", "op", "opsets", "implementations");
      for (const auto& o : ops) {
        const std::string range = std::to_string(o.since) + "-" + std::to_string(o.until);
        std::printf("%-12s %-32s %-9s %s\n", o.domain.empty() ? "ai.onnx" : o.domain.c_str(), o.op_type.c_str(),
                    range.c_str(), o.impls.c_str());
      }
      std::printf("%zu ops\n", ops.size());
      std::printf("Models of opsets %lld to %lld are read by rewriting them to opset %lld (also Mish, Gelu, Swish,\n"
                  "GroupNormalization, RMSNormalization and Attention into the ops that compute them); a node\n"
                  "that has no such form is named at load.\n",
                  static_cast<long long>(knownOpset() + 1), static_cast<long long>(kMaxReadableOpset),
                  static_cast<long long>(knownOpset()));
      return 0;
    };
  });
}

}  // namespace lwc::app
