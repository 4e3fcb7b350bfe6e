// The passes lwc ships, registered explicitly.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

/// Adds every built-in pass to `r`.
void registerBuiltinPasses(PassRegistry& r);

/// A registry holding the built-in passes (built once).
const PassRegistry& builtinPasses();

}  // namespace lwc::passes
