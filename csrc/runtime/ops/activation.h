// Pointwise activations with parameters, shared by the standalone ops
// (elementwise.cc) and the epilogue of fused convolutions (conv.cc), so that a
// fused graph and an unfused one compute the same bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/engine.h"

namespace lowbit {

enum class ActKind : int32_t { kNone, kRelu, kClip, kLeakyRelu, kHardSigmoid, kHardSwish, kSigmoid, kTanh };

struct ActParams {
  ActKind kind = ActKind::kNone;
  float a = 0.f, b = 0.f;  // Clip: min, max; LeakyRelu: alpha; HardSigmoid: alpha, beta
};

// `op` is the ONNX op name; attributes: Clip min/max, LeakyRelu alpha,
// HardSigmoid alpha/beta (with `prefix` for Conv's act_alpha / act_beta).
inline ActParams act_params_from(const std::string& op, const Attrs& at, const std::string& prefix = "") {
  ActParams p;
  if (op.empty() || op == "None") p.kind = ActKind::kNone;
  else if (op == "Relu") p.kind = ActKind::kRelu;
  else if (op == "Clip") {
    p.kind = ActKind::kClip;
    p.a = float(at.get_float(prefix.empty() ? "min" : prefix + "alpha", -INFINITY));
    p.b = float(at.get_float(prefix.empty() ? "max" : prefix + "beta", INFINITY));
    if (std::isnan(p.a) || std::isnan(p.b)) throw std::invalid_argument("Clip bounds must not be NaN");
  } else if (op == "LeakyRelu") {
    p.kind = ActKind::kLeakyRelu;
    p.a = float(at.get_float(prefix.empty() ? "alpha" : prefix + "alpha", 0.01));
  } else if (op == "HardSigmoid") {
    p.kind = ActKind::kHardSigmoid;
    p.a = float(at.get_float(prefix.empty() ? "alpha" : prefix + "alpha", 0.2));
    p.b = float(at.get_float(prefix.empty() ? "beta" : prefix + "beta", 0.5));
  } else if (op == "HardSwish") p.kind = ActKind::kHardSwish;
  else if (op == "Sigmoid") p.kind = ActKind::kSigmoid;
  else if (op == "Tanh") p.kind = ActKind::kTanh;
  else throw std::invalid_argument("unknown activation '" + op + "'");
  return p;
}

inline float act_one(const ActParams& p, float x) {
  switch (p.kind) {
    case ActKind::kNone: return x;
    case ActKind::kRelu: return x > 0.f ? x : (x == x ? 0.f : x);
    case ActKind::kClip: return x < p.a ? p.a : (x > p.b ? p.b : x);  // NaN passes through
    case ActKind::kLeakyRelu: return x >= 0.f ? x : p.a * x;
    case ActKind::kHardSigmoid: return std::max(0.f, std::min(1.f, p.a * x + p.b));
    case ActKind::kHardSwish: return x * std::max(0.f, std::min(1.f, x * (1.f / 6.f) + 0.5f));
    case ActKind::kSigmoid: return 1.f / (1.f + std::exp(-x));
    case ActKind::kTanh: return std::tanh(x);
  }
  return x;
}

// y[i] = act(x[i]); x may equal y.
inline void apply_activation(const ActParams& p, const float* x, float* y, int64_t n) {
  switch (p.kind) {  // one switch per call, tight loops per kind
    case ActKind::kNone:
      if (x != y) std::copy(x, x + n, y);
      return;
    case ActKind::kRelu: for (int64_t i = 0; i < n; ++i) y[i] = act_one({ActKind::kRelu}, x[i]); return;
    case ActKind::kClip: { const float lo = p.a, hi = p.b; for (int64_t i = 0; i < n; ++i) { float v = x[i]; y[i] = v < lo ? lo : (v > hi ? hi : v); } return; }
    default: for (int64_t i = 0; i < n; ++i) y[i] = act_one(p, x[i]); return;
  }
}

}  // namespace lowbit
