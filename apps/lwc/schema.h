// The JSON Schema of lwc pipeline files, generated from the passes and gates (lwc passes --schema).
#pragma once

#include <nlohmann/json.hpp>

namespace lwc::app {
nlohmann::ordered_json pipelineSchema();
}
