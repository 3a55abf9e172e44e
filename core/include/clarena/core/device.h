// Element types and devices (the base's DType and Device), with the device queries of core.
#pragma once

#include "clarena/base/device.h"
#include "clarena/core/runtime.h"
