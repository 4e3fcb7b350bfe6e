#include <spdlog/spdlog.h>

#include "commands.h"
#include "lwc/model_fixups.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"

namespace lwc::app {

Model loadInputModel(const std::string& path) {
  Model m = loadModel(path);
  for (const auto& s : normalizeModel(m)) spdlog::warn("{}: {}", path, s);
  return m;
}

Model loadPipelineInput(const std::string& path) {
  Model m = loadInputModel(path);
  for (const auto& s : completeOutputDeclarations(m)) spdlog::warn("{}: {}", path, s);
  checkModelForInput(m);
  return m;
}

}  // namespace lwc::app
