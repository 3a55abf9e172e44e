// The autograd graph: nodes recorded by ops, the backward engine, grad mode and counters.
//
// An op records a Node only when grad mode is on and at least one input requires grad
// (PyTorch's compute_requires_grad). That single rule is how a frozen backbone costs nothing:
// its forward records no node and saves no activation, and backward never reaches it.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "clarena/core/tensor.h"

namespace clarena::autograd {

/// Where a node sends the gradient of one of its inputs: the node that produced that input,
/// or the leaf it accumulates into. Both empty when the input needs no gradient.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  bool active() const { return node || leaf; }
};

class Node {
 public:
  /// Receives the gradient of the node's output and returns one gradient per input
  /// (undefined for inputs that need none). Runs under NoGradGuard.
  using BackwardFn = std::function<std::vector<Tensor>(Node&, const Tensor& grad_output)>;

  Node(const char* name, std::vector<Edge> inputs);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const char* name() const { return name_; }
  const std::vector<Edge>& inputs() const { return inputs_; }
  bool needs_grad(size_t input) const { return inputs_[input].active(); }

  /// Keeps tensors for the backward (stored detached, so no cycle through the graph).
  /// Undefined tensors are kept as placeholders and cost nothing.
  void save(std::initializer_list<Tensor> tensors);
  const Tensor& saved(size_t i) const { return saved_[i]; }

  void set_backward(BackwardFn fn) { backward_ = std::move(fn); }
  std::vector<Tensor> apply(const Tensor& grad_output);
  /// Drops the saved tensors; a released node refuses to run again.
  void release();
  bool released() const { return released_; }

 private:
  const char* name_;
  std::vector<Edge> inputs_;
  std::vector<Tensor> saved_;
  size_t saved_bytes_ = 0;
  BackwardFn backward_;
  bool released_ = false;
};

/// Grad mode, thread-local; on by default.
bool grad_mode_enabled();
void set_grad_mode(bool enabled);

/// RAII switch that turns grad mode off for its scope (and restores the previous state).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_mode_enabled()) { set_grad_mode(false); }
  ~NoGradGuard() { set_grad_mode(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// True when grad mode is on and the tensor requires grad: its op must record a node.
inline bool needs_grad(const Tensor& t) {
  return t.defined() && t.requires_grad() && grad_mode_enabled();
}
bool any_needs_grad(std::initializer_list<Tensor> inputs);
bool any_needs_grad(const std::vector<Tensor>& inputs);

/// Creates the node of an op whose inputs are given (undefined inputs allowed, e.g. a missing
/// bias). Call only when any_needs_grad(inputs).
std::shared_ptr<Node> make_node(const char* name, std::initializer_list<Tensor> inputs);
std::shared_ptr<Node> make_node(const char* name, const std::vector<Tensor>& inputs);
/// Makes `output` the result of `node`: it now requires grad and has history.
Tensor attach(Tensor output, std::shared_ptr<Node> node);

/// Runs the backward pass from `root` (iterative, topological; no recursion).
void backward(const Tensor& root, const Tensor& grad_output, bool retain_graph);

/// Counters the tests and benchmarks read: cheap enough to stay on (thread-local).
struct Stats {
  int64_t nodes_recorded = 0;    // nodes created since the last reset
  int64_t saved_bytes = 0;       // bytes currently held by saved tensors
  int64_t peak_saved_bytes = 0;  // maximum of saved_bytes since the last reset
};
const Stats& stats();
void reset_stats();  // zeroes the counts; saved_bytes keeps the bytes still held

}  // namespace clarena::autograd
