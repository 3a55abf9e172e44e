#include "clarena/core/autograd.h"

#include <string>
#include <unordered_map>

#include "clarena/core/ops.h"

namespace clarena::autograd {
namespace {
thread_local bool grad_mode = true;
thread_local Stats counters;

void add_saved_bytes(int64_t delta) {
  counters.saved_bytes += delta;
  if (counters.saved_bytes > counters.peak_saved_bytes)
    counters.peak_saved_bytes = counters.saved_bytes;
}
}  // namespace

bool grad_mode_enabled() {
  return grad_mode;
}
void set_grad_mode(bool enabled) {
  grad_mode = enabled;
}
const Stats& stats() {
  return counters;
}
void reset_stats() {
  counters.nodes_recorded = 0;
  counters.peak_saved_bytes = counters.saved_bytes;
}

Node::Node(const char* name, std::vector<Edge> inputs) : name_(name), inputs_(std::move(inputs)) {
  ++counters.nodes_recorded;
}

Node::~Node() {
  release();
  // Tear long chains down iteratively: letting the last handle to an input node die here
  // would destroy the graph recursively, one stack frame per node, and overflow on deep nets.
  std::vector<std::shared_ptr<Node>> orphans;
  auto take_sole_owned = [&orphans](std::vector<Edge>& edges) {
    for (Edge& edge : edges)
      if (edge.node && edge.node.use_count() == 1) orphans.push_back(std::move(edge.node));
  };
  take_sole_owned(inputs_);
  while (!orphans.empty()) {
    std::shared_ptr<Node> node = std::move(orphans.back());
    orphans.pop_back();
    take_sole_owned(node->inputs_);  // `node` now dies without any input left to free
  }
}

void Node::save(std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (t.defined()) {
      saved_bytes_ += t.nbytes();
      add_saved_bytes(static_cast<int64_t>(t.nbytes()));
      saved_.push_back(t.detach());
    } else {
      saved_.emplace_back();
    }
  }
}

void Node::release() {
  saved_.clear();
  backward_ = nullptr;
  add_saved_bytes(-static_cast<int64_t>(saved_bytes_));
  saved_bytes_ = 0;
  released_ = true;
}

std::vector<Tensor> Node::apply(const Tensor& grad_output) {
  if (released_ || !backward_)
    throw AutogradError(std::string("backward through node '") + name_ +
                        "' whose saved tensors were already freed: a graph can be back-propagated "
                        "once unless backward(grad, /*retain_graph=*/true) is asked for");
  return backward_(*this, grad_output);
}

namespace {
template <typename Tensors>
bool any_requires(const Tensors& inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

template <typename Tensors>
std::shared_ptr<Node> node_for(const char* name, const Tensors& inputs) {
  std::vector<Edge> edges;
  edges.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge edge;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn())
        edge.node = t.grad_fn();
      else
        edge.leaf = t.impl_ptr();
    }
    edges.push_back(std::move(edge));
  }
  return std::make_shared<Node>(name, std::move(edges));
}
}  // namespace

bool any_needs_grad(std::initializer_list<Tensor> inputs) {
  return any_requires(inputs);
}
bool any_needs_grad(const std::vector<Tensor>& inputs) {
  return any_requires(inputs);
}
std::shared_ptr<Node> make_node(const char* name, std::initializer_list<Tensor> inputs) {
  return node_for(name, inputs);
}
std::shared_ptr<Node> make_node(const char* name, const std::vector<Tensor>& inputs) {
  return node_for(name, inputs);
}

Tensor attach(Tensor output, std::shared_ptr<Node> node) {
  auto& impl = *output.impl_ptr();
  impl.requires_grad = true;
  impl.grad_fn = std::move(node);
  return output;
}

namespace {

void accumulate(Tensor& slot, const Tensor& grad) {
  slot = slot.defined() ? add(slot, grad) : grad;  // out of place: grads may alias each other
}

void accumulate_into_leaf(TensorImpl& leaf, const Tensor& grad) {
  if (grad.shape() != leaf.shape)
    throw AutogradError("gradient of shape " + shape_str(grad.shape()) + " for a leaf of shape " +
                        shape_str(leaf.shape));
  Tensor slot(leaf.grad);
  accumulate(slot, grad);
  leaf.grad = slot.impl_ptr();
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_output, bool retain_graph) {
  if (!root.requires_grad())
    throw AutogradError("backward on a tensor that does not require grad (" + root.str() +
                        "): nothing in its history needs a gradient");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    if (root.numel() != 1)
      throw AutogradError("backward without an explicit gradient needs a scalar, got " +
                          root.str());
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  } else if (seed.shape() != root.shape()) {
    throw ShapeError("backward: gradient shape " + shape_str(seed.shape()) +
                     " does not match output shape " + shape_str(root.shape()));
  }
  NoGradGuard no_grad;
  if (root.is_leaf()) {
    accumulate_into_leaf(*root.impl_ptr(), seed);
    return;
  }

  // Count, for every node reachable from the root, how many edges lead into it.
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack{root.grad_fn().get()};
  dependencies[stack.back()] = 0;
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& edge : node->inputs()) {
      if (!edge.node) continue;
      auto [it, first_visit] = dependencies.try_emplace(edge.node.get(), 0);
      ++it->second;
      if (first_visit) stack.push_back(edge.node.get());
    }
  }

  // Kahn's order: a node runs once every consumer has delivered its gradient.
  std::unordered_map<Node*, Tensor> pending{{root.grad_fn().get(), seed}};
  std::vector<Node*> ready{root.grad_fn().get()};
  while (!ready.empty()) {
    Node* node = ready.back();
    ready.pop_back();
    Tensor grad = std::move(pending[node]);
    pending.erase(node);
    // A node whose consumers delivered no gradient still runs its bookkeeping, so that
    // the nodes below it are released and reached.
    std::vector<Tensor> input_grads;
    if (grad.defined()) input_grads = node->apply(grad);
    if (!retain_graph) node->release();
    input_grads.resize(node->inputs().size());
    for (size_t i = 0; i < node->inputs().size(); ++i) {
      const Edge& edge = node->inputs()[i];
      if (edge.leaf && input_grads[i].defined()) accumulate_into_leaf(*edge.leaf, input_grads[i]);
      if (!edge.node) continue;
      if (input_grads[i].defined()) accumulate(pending[edge.node.get()], input_grads[i]);
      if (--dependencies[edge.node.get()] == 0) ready.push_back(edge.node.get());
    }
  }
}

}  // namespace clarena::autograd
