// The typed errors (defined in the base, which the kernels share).
#pragma once

#include "clarena/base/errors.h"
