// The executor: a graph planned once at load, run with one call per inference.
// Intermediate buffers come from one arena whose layout is planned from value
// lifetimes (and cached per input-shape signature, since batch and sequence
// dims may change between runs). Constants are used in place (they point into
// the mmap of the .qbin file).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace lowbit {

using Shape = std::vector<int64_t>;

enum class DType : int32_t { kF32 = 0, kI64 = 1, kI32 = 2, kI8 = 3, kU8 = 4 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_name(const std::string& s);  // throws std::invalid_argument

// A user-facing error about shapes or inputs (mapped to ValueError).
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A plan needs more memory than lowbit may use (mapped to lowbit's MemoryLimitError,
// a ValueError): raised while planning, before anything is allocated.
struct MemoryLimitError : ShapeError {
  using ShapeError::ShapeError;
};

// The most bytes one run may allocate (arena + outputs): LOWBIT_MAX_MEMORY if set,
// else the smallest of physical memory, the cgroup memory limit and RLIMIT_AS.
int64_t memory_limit_bytes();
void set_memory_limit_bytes(int64_t n);  // n <= 0: back to the default

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);  // throws ShapeError on overflow or negative dims

struct Attrs {
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
  std::map<std::string, std::vector<int64_t>> int_lists;
  std::map<std::string, std::string> strings;
  int64_t get_int(const std::string& k, int64_t def) const;
  double get_float(const std::string& k, double def) const;
  const std::vector<int64_t>* get_ints(const std::string& k) const;
  std::string get_string(const std::string& k, const std::string& def) const;
};

struct ValueSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;                   // constants: exact; others: declared, -1 = dynamic
  std::string encoding = "f32";  // constants only: the layout of the bytes
  const void* data = nullptr;    // constants only
  int64_t nbytes = 0;            // constants only
  bool is_const = false;
};

struct NodeSpec {
  std::string name;
  std::string op;
  std::vector<int> inputs;   // value ids; -1 = optional input absent
  std::vector<int> outputs;  // value ids
  Attrs attrs;
};

struct TensorRef {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::kF32;
  template <class T> T* as() const { return static_cast<T*>(data); }
  int64_t numel() const { return shape_numel(shape); }
};

struct RunArgs {
  std::vector<TensorRef> in;   // absent optional inputs have data == nullptr
  std::vector<TensorRef> out;
  void* scratch = nullptr;
  // The scratch already holds what the op derives from input 0 (Op::shared_scratch_key): an
  // earlier node with the same key and the same input filled it in this run.
  bool scratch_ready = false;
};

class Op {
 public:
  virtual ~Op() = default;
  // Output shapes (and dtypes) from input shapes. Throws ShapeError naming what
  // was expected and what came.
  virtual void infer(const std::vector<const Shape*>& in, std::vector<Shape>& out) const = 0;
  // Ops whose output shape depends on the *values* of small inputs (Reshape's
  // target, Expand's shape, Range's limits...) override this one; `vals[i]` is
  // the input's data when it is known while planning (a constant, or a value
  // computed from shapes and constants at plan time), else nullptr.
  virtual void infer_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals,
                            std::vector<Shape>& out) const {
    infer(in, out);
  }
  virtual size_t scratch_bytes(const std::vector<const Shape*>& in) const { return 0; }
  // The same, for ops whose scratch depends on small input values known while
  // planning (`vals[i]` as in infer_values); the engine calls this one.
  virtual size_t scratch_bytes_values(const std::vector<const Shape*>& in, const std::vector<const void*>& vals) const {
    return scratch_bytes(in);
  }
  // Nodes that read the same input 0 and return the same non-empty key (with the same scratch
  // size) fill their scratch from that input alone, identically (Dense with quantized weights:
  // the quantized activations). The engine then gives them one scratch region for the span of
  // the group; the first of them in node order fills it and the others run with scratch_ready.
  virtual std::string shared_scratch_key() const { return {}; }
  virtual void run(const RunArgs& a) const = 0;
  virtual std::string kernel() const { return "builtin"; }
  // Output dtypes; ops with non-float32 outputs record what they need from the
  // input dtypes in their constructor (the engine resolves dtypes in node order).
  virtual DType out_dtype(size_t i) const { return DType::kF32; }
  // How many outputs infer() and run() write; a node listing more (or none) is
  // rejected at load, so no op indexes past the outputs it was given.
  virtual size_t max_outputs() const { return 1; }
  // Which input dtypes the op reads; the engine rejects anything else at load.
  virtual bool input_dtype_ok(size_t i, DType t) const { return t == DType::kF32; }
  // True when the outputs depend only on the input *shapes* (Shape): such a node
  // always runs at plan time.
  virtual bool shape_only() const { return false; }
};

class Engine;
using OpFactory = std::unique_ptr<Op> (*)(const NodeSpec& node, const std::vector<ValueSpec>& values);

// Op registry (filled by register_* functions of each ops/ file).
void register_op(const std::string& name, OpFactory f);
bool op_known(const std::string& name);
std::vector<std::string> known_ops();

struct Plan {
  std::vector<Shape> shapes;      // per value
  // Values computed while planning (shape arithmetic: Shape, Gather, Concat... on
  // int64, from input shapes and constants), null otherwise; their producing
  // nodes are skipped at run time. This is constant folding with the symbolic
  // batch/sequence dims bound, done once per input-shape signature.
  std::vector<std::shared_ptr<std::vector<uint8_t>>> known;
  std::vector<char> skip;         // per node
  std::vector<int64_t> offsets;   // arena offset per value, -1 when not in the arena
  std::vector<int64_t> scratch_offsets;  // per node
  std::vector<char> scratch_ready;       // per node: its scratch is shared, filled by an earlier node
  int64_t arena_bytes = 0;
};

class Engine {
 public:
  Engine(std::vector<ValueSpec> values, std::vector<NodeSpec> nodes, std::vector<int> inputs,
         std::vector<int> outputs);

  // Infers all shapes for these input shapes and lays out the arena (cached).
  std::shared_ptr<const Plan> plan_for(const std::vector<Shape>& input_shapes);

  // Runs the graph: inputs/outputs are caller-owned buffers of the plan's shapes.
  // With `node_seconds` (one entry per node), each node's wall time is added to
  // its entry (nodes evaluated at plan time add nothing); without it, no clock is read.
  void execute(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
               std::vector<double>* node_seconds = nullptr);

  const std::vector<ValueSpec>& values() const { return values_; }
  const std::vector<NodeSpec>& nodes() const { return nodes_; }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  std::string node_kernel(size_t i) const { return ops_[i]->kernel(); }
  DType value_dtype(int v) const { return values_[v].dtype; }

 private:
  std::shared_ptr<Plan> make_plan(const std::vector<Shape>& input_shapes) const;
  std::vector<ValueSpec> values_;
  std::vector<NodeSpec> nodes_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<int> inputs_, outputs_;
  std::vector<int> last_use_;  // node index of the last consumer per value
  std::vector<int> producer_;  // node index producing each value, -1 otherwise

  std::mutex mu_;
  std::map<std::vector<Shape>, std::shared_ptr<const Plan>> plans_;  // small cache
  std::mutex arena_mu_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> free_arenas_;

 public:
  // Arena pool: one per concurrent run.
  std::unique_ptr<std::vector<uint8_t>> take_arena();
  void give_arena(std::unique_ptr<std::vector<uint8_t>> a);
};

// Called once at module init.
void register_all_ops();

}  // namespace lowbit
