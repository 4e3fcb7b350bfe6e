#include <spdlog/spdlog.h>

#include "commands.h"
#include "lwc/model_fixups.h"
#include "lwc/model_io.h"

namespace lwc::app {

Model loadInputModel(const std::string& path) {
  Model m = loadModel(path);
  for (const auto& s : normalizeModel(m)) spdlog::warn("{}: {}", path, s);
  return m;
}

}  // namespace lwc::app
