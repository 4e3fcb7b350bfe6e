// lwc passes: every pass with its options, types, defaults and help, generated from the passes
// themselves, plus the gates a pipeline may set.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "schema.h"
#include "lwc/pipeline.h"
#include "passes/registry.h"

namespace lwc::app {

namespace {
nlohmann::json optionJson(const OptionSpec& o) {
  nlohmann::json j{{"name", o.name}, {"type", std::string(optionTypeName(o.type))}, {"default", o.default_value},
                   {"help", o.help}};
  if (!o.choices.empty()) j["choices"] = o.choices;
  if (o.min > -1e300) j["min"] = o.min;
  if (o.max < 1e300) j["max"] = o.max;
  if (o.max_exclusive) j["max_exclusive"] = true;
  return j;
}
}  // namespace

void addPassesCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto json = std::make_shared<bool>(false), schema = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("passes", "List the passes with their options, and the pipeline gates");
  auto* j = cmd->add_flag("--json", *json, "Machine-readable output (schema lwc.passes)");
  cmd->add_flag("--schema", *schema, "Print the JSON Schema of pipeline files (configs/pipeline.schema.json)")->excludes(j);
  cmd->callback([&action, json, schema] {
    action = [json, schema] {
      if (*schema) {
        std::cout << pipelineSchema().dump(2) << "\n";
        return 0;
      }
      const auto passes = passes::builtinPasses().all();
      if (*json) {
        nlohmann::json a = nlohmann::json::array(), g = nlohmann::json::array();
        for (const auto& p : passes) {
          nlohmann::json opts = nlohmann::json::array();
          for (const auto& o : p->optionSpecs()) opts.push_back(optionJson(o));
          a.push_back({{"name", p->name()}, {"help", p->help()}, {"options", opts}});
        }
        for (const auto& gi : gateInfos())
          g.push_back({{"name", gi.name}, {"help", gi.help}, {"needs_eval", gi.needs_eval}, {"needs_labels", gi.needs_labels}});
        std::cout << nlohmann::json{{"schema", "lwc.passes"}, {"schema_version", 1}, {"passes", a}, {"gates", g}}.dump(2)
                  << "\n";
        return 0;
      }
      for (const auto& p : passes) {
        std::printf("%s\n    %s\n", p->name().c_str(), p->help().c_str());
        for (const auto& o : p->optionSpecs()) {
          std::string dflt = o.default_value.is_null() ? "unset" : o.default_value.dump();
          std::string extra;
          if (!o.choices.empty()) {
            for (const auto& c : o.choices) extra += (extra.empty() ? " [" : "|") + c;
            extra += "]";
          }
          std::printf("    %-16s %-11s default %-10s %s%s\n", o.name.c_str(), std::string(optionTypeName(o.type)).c_str(),
                      dflt.c_str(), o.help.c_str(), extra.c_str());
        }
      }
      std::printf("\ngates (pipeline \"gates\": {name: limit}; a failed gate exits with code 3)\n");
      for (const auto& gi : gateInfos()) std::printf("    %-20s %s\n", gi.name.c_str(), gi.help.c_str());
      return 0;
    };
  });
}

CLI::Range optionRange(const std::string& pass, const std::string& option) {
  const auto p = passes::builtinPasses().create(pass, pass);
  for (const auto& s : p->optionSpecs())
    if (s.name == option) {
      if (s.max_exclusive) throw InternalError("optionRange: " + pass + "." + option + " has an exclusive maximum");
      return s.type == OptionType::Int ? CLI::Range(static_cast<int64_t>(s.min), static_cast<int64_t>(s.max))
                                       : CLI::Range(s.min, s.max);
    }
  throw InternalError("optionRange: pass " + pass + " has no option " + option);
}

}  // namespace lwc::app
