// The umbrella header: the engine (tensors, autograd, ops) and the layers on top of it.
#pragma once

#include "clarena/core/autograd.h"
#include "clarena/core/device.h"
#include "clarena/core/errors.h"
#include "clarena/core/ops.h"
#include "clarena/core/random.h"
#include "clarena/core/tensor.h"
#include "clarena/core/threads.h"
#include "clarena/nn/backbones.h"
#include "clarena/nn/conv.h"
#include "clarena/nn/layers.h"
#include "clarena/nn/module.h"
#include "clarena/nn/optim.h"
#include "clarena/nn/serialize.h"
