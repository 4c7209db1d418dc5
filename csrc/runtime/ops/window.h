// Sliding-window geometry shared by Conv and the pools (2-D, NHWC): kernel,
// strides, dilations, explicit pads or auto_pad, ceil_mode.
#pragma once
#include <string>

#include "runtime/engine.h"

namespace lowbit {

struct Window2D {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pads[4] = {0, 0, 0, 0};  // top, left, bottom, right
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false;

  // Reads kernel_shape (unless given), strides, dilations, pads, auto_pad, ceil_mode.
  static Window2D from(const Attrs& a, const std::string& what, int64_t kh = -1, int64_t kw = -1) {
    Window2D w;
    auto two = [&](const char* k, int64_t* a0, int64_t* a1) {
      const auto* v = a.get_ints(k);
      if (!v) return;
      if (v->size() != 2) throw std::invalid_argument(what + ": attribute '" + k + "' must have 2 entries (2-D only)");
      *a0 = (*v)[0];
      *a1 = (*v)[1];
    };
    if (kh < 0) two("kernel_shape", &w.kh, &w.kw);
    else { w.kh = kh; w.kw = kw; }
    two("strides", &w.sh, &w.sw);
    two("dilations", &w.dh, &w.dw);
    if (const auto* p = a.get_ints("pads")) {
      if (p->size() != 4) throw std::invalid_argument(what + ": 'pads' must have 4 entries");
      for (int i = 0; i < 4; ++i) w.pads[i] = (*p)[i];
    }
    w.auto_pad = a.get_string("auto_pad", "NOTSET");
    w.ceil_mode = a.get_int("ceil_mode", 0) != 0;
    if (w.kh < 1 || w.kw < 1 || w.sh < 1 || w.sw < 1 || w.dh < 1 || w.dw < 1 || w.kh > 4096 || w.kw > 4096 ||
        w.sh > 4096 || w.sw > 4096 || w.dh > 4096 || w.dw > 4096)
      throw std::invalid_argument(what + ": kernel, strides and dilations must be in [1, 4096]");
    for (int i = 0; i < 4; ++i)
      if (w.pads[i] < 0 || w.pads[i] > 4096) throw std::invalid_argument(what + ": pads must be in [0, 4096]");
    if (w.auto_pad != "NOTSET" && w.auto_pad != "VALID" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER")
      throw std::invalid_argument(what + ": unknown auto_pad '" + w.auto_pad + "'");
    return w;
  }

  struct Geo { int64_t oh, ow, pt, pl; };
  Geo geometry(int64_t H, int64_t W) const {
    Geo g;
    auto one = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1, int64_t* out, int64_t* pbeg) {
      const int64_t ek = (k - 1) * d + 1;
      if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
        *out = (in + s - 1) / s;
        int64_t total = std::max<int64_t>(0, (*out - 1) * s + ek - in);
        *pbeg = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
        return;
      }
      if (auto_pad == "VALID") p0 = p1 = 0;
      *pbeg = p0;
      const int64_t span = in + p0 + p1 - ek;
      if (span < 0) throw ShapeError("window of " + std::to_string(ek) + " does not fit input size " + std::to_string(in) + " plus padding");
      *out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
      // ceil_mode: a last window that starts in the right padding is dropped
      if (ceil_mode && (*out - 1) * s >= in + p0) --*out;
    };
    one(H, kh, sh, dh, pads[0], pads[2], &g.oh, &g.pt);
    one(W, kw, sw, dw, pads[1], pads[3], &g.ow, &g.pl);
    return g;
  }
};

}  // namespace lowbit
