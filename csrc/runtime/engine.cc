#include "runtime/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <tuple>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

namespace lowbit {

// Nodes whose inputs are all known while planning and whose outputs have at
// most this many elements are evaluated once per plan, not per run.
constexpr int64_t kPlanTimeMaxElems = 4096;

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kI64: return 8;
    case DType::kI32: return 4;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
  }
  return 1;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kI64: return "int64";
    case DType::kI32: return "int32";
    case DType::kI8: return "int8";
    case DType::kU8: return "uint8";
  }
  return "?";
}

DType dtype_from_name(const std::string& s) {
  if (s == "float32" || s == "f32") return DType::kF32;
  if (s == "int64" || s == "i64") return DType::kI64;
  if (s == "int32" || s == "i32") return DType::kI32;
  if (s == "int8" || s == "i8") return DType::kI8;
  if (s == "uint8" || s == "u8") return DType::kU8;
  throw std::invalid_argument("unknown dtype '" + s + "'");
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  if (s.size() == 1) o << ",";
  o << ")";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  // The product of the non-zero dims is bounded too: ops multiply sub-ranges of a
  // shape (rows, inner length), and [0, 2^40, 2^40] must not overflow those.
  int64_t n = 1, nonzero = 1;
  for (int64_t d : s) {
    if (d < 0) throw ShapeError("negative dimension in shape " + shape_str(s));
    if (d != 0 && nonzero > (int64_t(1) << 48) / d) throw ShapeError("shape " + shape_str(s) + " has too many elements");
    if (d != 0) nonzero *= d;
    n *= d;
  }
  return n;
}

namespace {
int64_t system_memory_bytes() {
  int64_t m = int64_t(1) << 50;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) m = int64_t(pages) * page;
  // A container's limit is lower than the machine's memory (cgroup v2, then v1).
  for (const char* f : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    if (FILE* fp = std::fopen(f, "r")) {
      unsigned long long v = 0;
      if (std::fscanf(fp, "%llu", &v) == 1 && v > 0 && v < (unsigned long long)m) m = int64_t(v);
      std::fclose(fp);
    }
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (unsigned long long)rl.rlim_cur < (unsigned long long)m)
    m = int64_t(rl.rlim_cur);
  return m;
}

int64_t default_memory_limit() {
  if (const char* env = std::getenv("LOWBIT_MAX_MEMORY")) {
    char* end = nullptr;
    long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == 0 && v > 0) return int64_t(v);
  }
  return system_memory_bytes();
}

std::atomic<int64_t> g_memory_limit{-1};
}  // namespace

int64_t memory_limit_bytes() {
  int64_t v = g_memory_limit.load(std::memory_order_relaxed);
  if (v <= 0) {
    v = default_memory_limit();
    g_memory_limit.store(v, std::memory_order_relaxed);
  }
  return v;
}

void set_memory_limit_bytes(int64_t n) { g_memory_limit.store(n > 0 ? n : default_memory_limit()); }

// An attribute present with another type than the op reads is an error, not
// the default: a file with activation=[1] must not silently run without it.
static void attr_type_error(const Attrs& a, const std::string& k, const char* want) {
  const char* got = a.ints.count(k) ? "an int" : a.floats.count(k) ? "a float" : a.int_lists.count(k) ? "an int list"
                    : a.strings.count(k) ? "a string" : nullptr;
  if (got) throw std::invalid_argument("attribute '" + k + "' must be " + want + ", got " + got);
}
int64_t Attrs::get_int(const std::string& k, int64_t def) const {
  auto it = ints.find(k);
  if (it == ints.end()) attr_type_error(*this, k, "an int");
  return it == ints.end() ? def : it->second;
}
double Attrs::get_float(const std::string& k, double def) const {
  auto it = floats.find(k);
  if (it != floats.end()) return it->second;
  auto jt = ints.find(k);
  if (jt == ints.end()) attr_type_error(*this, k, "a number");
  return jt == ints.end() ? def : double(jt->second);
}
const std::vector<int64_t>* Attrs::get_ints(const std::string& k) const {
  auto it = int_lists.find(k);
  if (it == int_lists.end()) attr_type_error(*this, k, "an int list");
  return it == int_lists.end() ? nullptr : &it->second;
}
std::string Attrs::get_string(const std::string& k, const std::string& def) const {
  auto it = strings.find(k);
  if (it == strings.end()) attr_type_error(*this, k, "a string");
  return it == strings.end() ? def : it->second;
}

namespace {
std::map<std::string, OpFactory>& registry() {
  static std::map<std::string, OpFactory> r;
  return r;
}
}  // namespace

void register_op(const std::string& name, OpFactory f) { registry()[name] = f; }
bool op_known(const std::string& name) { return registry().count(name) != 0; }
std::vector<std::string> known_ops() {
  std::vector<std::string> out;
  for (auto& kv : registry()) out.push_back(kv.first);
  return out;
}

Engine::Engine(std::vector<ValueSpec> values, std::vector<NodeSpec> nodes, std::vector<int> inputs,
               std::vector<int> outputs)
    : values_(std::move(values)), nodes_(std::move(nodes)), inputs_(std::move(inputs)), outputs_(std::move(outputs)) {
  const int nv = int(values_.size());
  auto check_id = [&](int v, const std::string& where) {
    if (v < 0 || v >= nv) throw std::invalid_argument(where + ": value id " + std::to_string(v) + " out of range");
  };
  producer_.assign(nv, -1);
  last_use_.assign(nv, -1);
  std::vector<char> defined(nv, 0);
  std::vector<DType> declared(nv);
  for (int v = 0; v < nv; ++v) declared[v] = values_[v].dtype;
  for (int v : inputs_) {
    check_id(v, "graph input");
    if (values_[v].is_const) throw std::invalid_argument("graph input '" + values_[v].name + "' is a constant");
    defined[v] = 1;
  }
  for (int v = 0; v < nv; ++v)
    if (values_[v].is_const) {
      if (!values_[v].data && values_[v].nbytes) throw std::invalid_argument("constant without data");
      defined[v] = 1;
    }
  // Nodes must come in topological order: every input defined before use, every
  // output defined exactly once. This also rules out cycles.
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const NodeSpec& n = nodes_[i];
    const std::string where = "node '" + n.name + "' (" + n.op + ")";
    for (int v : n.inputs) {
      if (v == -1) continue;
      check_id(v, where);
      if (!defined[v])
        throw std::invalid_argument(where + " uses '" + values_[v].name + "' before it is produced (graph not in topological order or cyclic)");
      last_use_[v] = int(i);
    }
    if (n.outputs.empty()) throw std::invalid_argument(where + " has no outputs");
    for (int v : n.outputs) {
      check_id(v, where);
      if (defined[v]) throw std::invalid_argument(where + " redefines '" + values_[v].name + "'");
      if (values_[v].is_const) throw std::invalid_argument(where + " writes the constant '" + values_[v].name + "'");
      defined[v] = 1;
      producer_[v] = int(i);
    }
    // The factory sees the dtypes of its inputs (resolved in node order); the op
    // then says which dtypes it reads and which it writes, so no kernel can read
    // a buffer as a type it is not. Only weight inputs of Dense and Conv may hold
    // a packed (non-raw) layout.
    auto it = registry().find(n.op);
    if (it == registry().end()) throw std::invalid_argument(where + ": unknown op '" + n.op + "'");
    std::unique_ptr<Op> op = it->second(n, values_);
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      int v = n.inputs[k];
      if (v < 0) continue;
      const ValueSpec& vs = values_[v];
      if (!op->input_dtype_ok(k, vs.dtype))
        throw std::invalid_argument(where + ": input '" + vs.name + "' is " + dtype_name(vs.dtype) +
                                    (op->input_dtype_ok(k, DType::kF32) ? ", expected float32" : ", a dtype this op does not read here"));
      bool packed_ok = ((n.op == "Dense" || n.op == "Conv" || n.op == "QConv") && k == 1) ||
                       (n.op == "LowRank" && (k == 1 || k == 2));
      if (vs.is_const && vs.encoding != "raw" && !packed_ok)
        throw std::invalid_argument(where + ": input '" + vs.name + "' has encoding " + vs.encoding + ", expected raw");
    }
    if (n.outputs.empty() || n.outputs.size() > op->max_outputs())
      throw std::invalid_argument(where + " has " + std::to_string(n.outputs.size()) + " outputs, expected 1" +
                                  (op->max_outputs() > 1 ? " to " + std::to_string(op->max_outputs()) : ""));
    for (size_t k = 0; k < n.outputs.size(); ++k) values_[n.outputs[k]].dtype = op->out_dtype(k);
    ops_.push_back(std::move(op));
  }
  for (int v : outputs_) {
    check_id(v, "graph output");
    if (!defined[v]) throw std::invalid_argument("graph output '" + values_[v].name + "' is never produced");
    if (declared[v] != values_[v].dtype)
      throw std::invalid_argument("graph output '" + values_[v].name + "' is declared " + dtype_name(declared[v]) +
                                  ", expected " + dtype_name(values_[v].dtype) + " (what the graph computes)");
  }
}

std::shared_ptr<const Plan> Engine::plan_for(const std::vector<Shape>& input_shapes) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = plans_.find(input_shapes);
    if (it != plans_.end()) return it->second;
  }
  std::shared_ptr<const Plan> p = make_plan(input_shapes);
  std::lock_guard<std::mutex> lk(mu_);
  if (plans_.size() >= 16) plans_.erase(plans_.begin());  // bounded cache
  plans_[input_shapes] = p;
  return p;
}

std::shared_ptr<Plan> Engine::make_plan(const std::vector<Shape>& input_shapes) const {
  auto plan = std::make_shared<Plan>();
  const int nv = int(values_.size());
  plan->shapes.assign(nv, Shape{});
  plan->offsets.assign(nv, -1);
  plan->scratch_offsets.assign(nodes_.size(), -1);
  plan->scratch_ready.assign(nodes_.size(), 0);
  plan->known.assign(nv, nullptr);
  plan->skip.assign(nodes_.size(), 0);
  if (input_shapes.size() != inputs_.size())
    throw ShapeError("expected " + std::to_string(inputs_.size()) + " inputs, got " + std::to_string(input_shapes.size()));
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const ValueSpec& v = values_[inputs_[i]];
    const Shape& s = input_shapes[i];
    bool ok = s.size() == v.shape.size();
    for (size_t d = 0; ok && d < s.size(); ++d) ok = (v.shape[d] < 0 || v.shape[d] == s[d]) && s[d] >= 0;
    if (!ok) {
      std::string decl = "(";
      for (size_t d = 0; d < v.shape.size(); ++d) decl += (d ? ", " : "") + (v.shape[d] < 0 ? std::string("?") : std::to_string(v.shape[d]));
      decl += v.shape.size() == 1 ? ",)" : ")";
      throw ShapeError("input '" + v.name + "': expected shape " + decl + ", got " + shape_str(s));
    }
    shape_numel(s);
    plan->shapes[inputs_[i]] = s;
  }
  for (int v = 0; v < nv; ++v)
    if (values_[v].is_const) plan->shapes[v] = values_[v].shape;

  // Shape inference in node order.
  std::vector<size_t> scratch(nodes_.size(), 0);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const NodeSpec& n = nodes_[i];
    std::vector<const Shape*> in;
    for (int v : n.inputs) in.push_back(v < 0 ? nullptr : &plan->shapes[v]);
    std::vector<const void*> vals;
    bool all_known = true;
    for (int v : n.inputs) {
      const void* p = v < 0 ? nullptr : values_[v].is_const ? values_[v].data : plan->known[v] ? plan->known[v]->data() : nullptr;
      if (v >= 0 && values_[v].is_const && values_[v].encoding != "raw") p = nullptr;
      if (v >= 0 && !p) all_known = false;
      vals.push_back(p);
    }
    std::vector<Shape> out(n.outputs.size());
    try {
      ops_[i]->infer_values(in, vals, out);
      int64_t out_elems = 0;
      for (auto& s : out) out_elems += shape_numel(s);
      // Plan-time evaluation: shape arithmetic and other small all-known nodes.
      if (ops_[i]->shape_only() || (all_known && out_elems <= kPlanTimeMaxElems)) {
        RunArgs a;
        std::vector<std::vector<uint8_t>> tmp_scratch(1);
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          TensorRef t;
          if (n.inputs[k] >= 0) { t.data = const_cast<void*>(vals[k]); t.shape = *in[k]; t.dtype = values_[n.inputs[k]].dtype; }
          a.in.push_back(std::move(t));
        }
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          int v = n.outputs[k];
          auto buf = std::make_shared<std::vector<uint8_t>>(size_t(shape_numel(out[k])) * dtype_size(values_[v].dtype) + 8);
          plan->known[v] = buf;
          a.out.push_back({buf->data(), out[k], values_[v].dtype});
        }
        size_t sb = ops_[i]->scratch_bytes_values(in, vals);
        tmp_scratch[0].resize(sb + 64);
        a.scratch = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(tmp_scratch[0].data()) + 63) & ~uintptr_t(63));
        ops_[i]->run(a);
        plan->skip[i] = 1;
      }
    } catch (const ShapeError& e) {
      std::string msg = "node '" + n.name + "' (" + n.op + "): " + e.what() + "; input shapes";
      for (const Shape* s : in) msg += " " + (s ? shape_str(*s) : std::string("-"));
      throw ShapeError(msg);
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) plan->shapes[n.outputs[k]] = out[k];
    if (!plan->skip[i]) scratch[i] = ops_[i]->scratch_bytes_values(in, vals);
  }

  // Arena layout: greedy by size (largest first), lowest offset that does not
  // collide with any placed buffer whose lifetime overlaps.
  struct Buf { int64_t size, first, last; int value; int node; int64_t off; };
  std::vector<Buf> bufs;
  std::vector<char> is_output(nv, 0);
  for (int v : outputs_) is_output[v] = 1;
  auto align64 = [](int64_t x) { return (x + 63) & ~int64_t(63); };
  for (int v = 0; v < nv; ++v) {
    if (producer_[v] < 0 || is_output[v] || plan->known[v]) continue;
    int64_t bytes = shape_numel(plan->shapes[v]) * int64_t(dtype_size(values_[v].dtype));
    int64_t last = std::max(last_use_[v], producer_[v]);
    bufs.push_back({align64(std::max<int64_t>(bytes, 1)), producer_[v], last, v, -1, 0});
  }
  // Shared scratch (Op::shared_scratch_key): nodes reading the same input 0 with the same key and
  // scratch size get one region, live from the first of them to the last; the first fills it.
  std::vector<int> scratch_leader(nodes_.size(), -1);
  {
    std::map<std::tuple<int, std::string, size_t>, int> first;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (!scratch[i] || nodes_[i].inputs.empty() || nodes_[i].inputs[0] < 0) continue;
      std::string key = ops_[i]->shared_scratch_key();
      if (key.empty()) continue;
      auto it = first.emplace(std::make_tuple(nodes_[i].inputs[0], std::move(key), scratch[i]), int(i)).first;
      scratch_leader[i] = it->second;
    }
  }
  std::vector<int64_t> group_last(nodes_.size(), -1);
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (scratch_leader[i] >= 0) group_last[size_t(scratch_leader[i])] = int64_t(i);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (!scratch[i]) continue;
    if (scratch_leader[i] >= 0 && scratch_leader[i] != int(i)) {
      plan->scratch_ready[i] = 1;  // placed with its group's first node
      continue;
    }
    const int64_t last = group_last[i] >= 0 ? group_last[i] : int64_t(i);
    bufs.push_back({align64(int64_t(scratch[i])), int64_t(i), last, -1, int(i), 0});
  }
  std::vector<size_t> order(bufs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bufs[a].size > bufs[b].size; });
  // Checked while placing, before anything is allocated: a file that declares
  // shapes needing more memory than the machine has fails here with a clear error
  // (and offsets stay far from int64 overflow).
  const int64_t limit = memory_limit_bytes();
  auto too_big = [&](int64_t need, const char* what) {
    std::string shapes;
    for (const Shape& s : input_shapes) shapes += (shapes.empty() ? "" : ", ") + shape_str(s);
    return MemoryLimitError("input shapes " + shapes + " need more than " + std::to_string(need) + " bytes (" + what +
                            "), above the memory limit of " + std::to_string(limit) +
                            " bytes (this machine's memory; LOWBIT_MAX_MEMORY overrides it)");
  };
  int64_t out_bytes = 0;
  {
    std::vector<char> counted(nv, 0);
    for (int v : outputs_) {
      if (counted[v]) continue;
      counted[v] = 1;
      out_bytes += shape_numel(plan->shapes[v]) * int64_t(dtype_size(values_[v].dtype));
      if (out_bytes > limit) throw too_big(out_bytes, "outputs");
    }
  }
  for (const Buf& b : bufs)
    if (b.size > limit) throw too_big(b.size, "one intermediate buffer");
  // Placed buffers are indexed by the node steps they are live at, so finding
  // those that overlap a lifetime costs the overlaps, not a scan of every placed
  // buffer (that scan planned a 40,000-node chain in 1.7 s, quadratically). A
  // pathological file (thousands of long lifetimes) could still make the index
  // or the search huge: past a work budget the plan falls back to no reuse at
  // all, O(n), and the memory limit above still applies.
  constexpr int64_t kMaxLiveEntries = int64_t(1) << 23, kMaxWork = int64_t(1) << 27;
  int64_t live_entries = 0;
  for (const Buf& b : bufs) live_entries += b.last - b.first + 1;
  bool reuse = live_entries <= kMaxLiveEntries;
  int64_t total = 0;
  if (reuse) {
    std::vector<std::vector<int>> live_at(nodes_.size());
    std::vector<size_t> stamp(bufs.size(), SIZE_MAX);
    std::vector<std::pair<int64_t, int64_t>> busy;
    int64_t work = 0;
    for (size_t idx : order) {
      Buf& b = bufs[idx];
      busy.clear();
      for (int64_t t = b.first; t <= b.last; ++t) {
        work += int64_t(live_at[t].size()) + 1;
        for (int p : live_at[t])
          if (stamp[p] != idx) {
            stamp[p] = idx;
            busy.push_back({bufs[p].off, bufs[p].off + bufs[p].size});
          }
      }
      if (work > kMaxWork) {
        reuse = false;
        break;
      }
      std::sort(busy.begin(), busy.end());
      int64_t off = 0;
      for (auto& r : busy) {
        if (off + b.size <= r.first) break;
        off = std::max(off, r.second);
      }
      b.off = off;
      total = std::max(total, off + b.size);
      if (total + out_bytes > limit) throw too_big(total + out_bytes, "intermediates and outputs");
      for (int64_t t = b.first; t <= b.last; ++t) live_at[t].push_back(int(idx));
    }
  }
  if (!reuse) {
    total = 0;
    for (Buf& b : bufs) {
      b.off = total;
      total += b.size;
      if (total + out_bytes > limit) throw too_big(total + out_bytes, "intermediates and outputs");
    }
  }
  for (const Buf& b : bufs) {
    if (b.value >= 0) plan->offsets[b.value] = b.off;
    else plan->scratch_offsets[b.node] = b.off;
  }
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (plan->scratch_ready[i]) plan->scratch_offsets[i] = plan->scratch_offsets[size_t(scratch_leader[i])];
  plan->arena_bytes = total;
  return plan;
}

std::unique_ptr<std::vector<uint8_t>> Engine::take_arena() {
  std::lock_guard<std::mutex> lk(arena_mu_);
  if (free_arenas_.empty()) return std::make_unique<std::vector<uint8_t>>();
  auto a = std::move(free_arenas_.back());
  free_arenas_.pop_back();
  return a;
}

void Engine::give_arena(std::unique_ptr<std::vector<uint8_t>> a) {
  std::lock_guard<std::mutex> lk(arena_mu_);
  if (free_arenas_.size() < 8) free_arenas_.push_back(std::move(a));
}

void Engine::execute(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                     std::vector<double>* node_seconds) {
  if (node_seconds && node_seconds->size() != nodes_.size()) node_seconds->assign(nodes_.size(), 0.0);
  const int nv = int(values_.size());
  auto arena = take_arena();
  if (arena->size() < size_t(plan.arena_bytes) + 64) arena->resize(size_t(plan.arena_bytes) + 64);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(arena->data()) + 63) & ~uintptr_t(63));

  std::vector<void*> ptr(nv, nullptr);
  for (int v = 0; v < nv; ++v) {
    if (values_[v].is_const) ptr[v] = const_cast<void*>(values_[v].data);
    else if (plan.known[v]) ptr[v] = plan.known[v]->data();
    else if (plan.offsets[v] >= 0) ptr[v] = base + plan.offsets[v];
  }
  for (size_t i = 0; i < inputs_.size(); ++i) ptr[inputs_[i]] = const_cast<void*>(inputs[i]);
  // Graph outputs produced by a node are written straight into the caller's
  // buffers; the first listing of a value gets the buffer, repeats are copied.
  std::vector<char> claimed(nv, 0);
  for (size_t i = 0; i < outputs_.size(); ++i) {
    int v = outputs_[i];
    if (producer_[v] >= 0 && !claimed[v] && !plan.known[v]) {
      ptr[v] = outputs[i];
      claimed[v] = 1;
    }
  }
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (plan.skip[i]) continue;
    const NodeSpec& n = nodes_[i];
    RunArgs a;
    a.in.reserve(n.inputs.size());
    for (int v : n.inputs) {
      TensorRef t;
      if (v >= 0) { t.data = ptr[v]; t.shape = plan.shapes[v]; t.dtype = values_[v].dtype; }
      a.in.push_back(std::move(t));
    }
    for (int v : n.outputs) a.out.push_back({ptr[v], plan.shapes[v], values_[v].dtype});
    a.scratch = plan.scratch_offsets[i] >= 0 ? base + plan.scratch_offsets[i] : nullptr;
    a.scratch_ready = plan.scratch_ready[i] != 0;
    if (node_seconds) {
      const auto t0 = std::chrono::steady_clock::now();
      ops_[i]->run(a);
      (*node_seconds)[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
      ops_[i]->run(a);
    }
  }
  for (size_t i = 0; i < outputs_.size(); ++i) {
    int v = outputs_[i];
    if (ptr[v] == outputs[i]) continue;
    size_t bytes = size_t(shape_numel(plan.shapes[v])) * dtype_size(values_[v].dtype);
    if (bytes) std::memcpy(outputs[i], ptr[v], bytes);
  }
  give_arena(std::move(arena));
}

void register_dense_ops();
void register_lowrank_ops();
void register_matmul_ops();
void register_elementwise_ops();
void register_normalization_ops();
void register_shape_ops();
void register_conv_ops();
void register_pool_ops();
void register_tensor_ops();
void register_attention_ops();
void register_qconv_ops();

void register_all_ops() {
  static bool done = false;
  if (done) return;
  done = true;
  register_dense_ops();
  register_lowrank_ops();
  register_matmul_ops();
  register_elementwise_ops();
  register_normalization_ops();
  register_shape_ops();
  register_conv_ops();
  register_pool_ops();
  register_tensor_ops();
  register_attention_ops();
  register_qconv_ops();
}

}  // namespace lowbit
