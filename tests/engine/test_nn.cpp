#include <catch2/catch.hpp>
#include "support/engine_util.h"
