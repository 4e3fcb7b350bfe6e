// oneDNN fast paths: to be filled in (engine issue).
#include "engine/kernels/common.h"

namespace lwc::engine {

void registerDnnlKernels(KernelRegistry& r) {}

}  // namespace lwc::engine
