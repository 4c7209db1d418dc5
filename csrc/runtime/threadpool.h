// A small fixed thread pool of our own (no OpenMP, so nothing clashes with the
// runtimes of torch or onnxruntime loaded in the same process). The calling thread
// takes part in the work. Kernels make each item's result independent of who runs it,
// so any thread count gives bit-identical output.
//
// Items are dealt out in contiguous shares, one per thread (the caller's first, then
// each worker's in order), each with its own atomic cursor: a thread runs its own share
// first, then takes what is left of the others'. So the same rows of consecutive ops
// land on the same core while every thread keeps up (an op's output is still in the L2
// of the core that reads it next: two cores each with their own L2), and a thread that is
// descheduled or slowed leaves its items to the others instead of stalling the job.
//
// Latency matters more than fairness here: a graph run issues one parallel_for
// per op, tens of microseconds apart. Workers therefore spin briefly after a job
// before sleeping, and the caller never waits for a sleeping worker to wake: it
// waits only for the items, then for the workers that actually joined the job.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

class ThreadPool {
 public:
  static ThreadPool& global();

  // n >= 1 threads in total (including the caller). Safe while other threads run
  // jobs: it waits for the current job to finish.
  void set_num_threads(int n);
  int num_threads() const { return num_threads_.load(std::memory_order_relaxed); }

  // Runs fn(i) for every i in [0, n). Blocks until all are done. If the pool is
  // busy with another caller's job (or called from inside a job), runs inline.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

  // How many items to cut a job of up to `max_items` units into: kItemsPerThread per
  // thread (1 when single-threaded). A thread that is descheduled or slowed (another
  // process on its core, a neighbouring runtime's spinning threads) leaves the rest of
  // its share to the others instead of stalling the job until it runs again.
  static constexpr int64_t kItemsPerThread = 4;
  int64_t work_items(int64_t max_items) const {
    const int64_t t = num_threads();
    if (t <= 1 || max_items <= 1) return 1;
    return max_items < t * kItemsPerThread ? max_items : t * kItemsPerThread;
  }

  ~ThreadPool();

 private:
  ThreadPool();
  void start_workers(int n_workers);
  void stop_workers();
  void worker_loop(int slot);
  void run_items(int slot);

  std::atomic<int> num_threads_{1};
  std::mutex job_mutex_;  // one job at a time; held by the submitting thread
  std::mutex mu_;         // guards sleeping on cv_work_
  std::condition_variable cv_work_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> generation_{0};  // bumped once per job
  std::atomic<bool> job_open_{false};    // workers may join the current job
  std::atomic<int> active_{0};           // workers inside a job right now
  const std::function<void(int64_t)>* fn_ = nullptr;
  // Share s of the current job: items [cursor, end) still to claim; one cache line each.
  struct alignas(64) Share {
    std::atomic<int64_t> cursor{0};
    int64_t end = 0;
  };
  std::unique_ptr<Share[]> shares_;  // num_threads() of them (replaced with the workers)
  int n_shares_ = 0;
  std::atomic<int64_t> done_{0};
};

// Splits [0, total) into `parts` contiguous chunks aligned to `align`; returns the
// chunk boundaries (size parts + 1). Deterministic in its arguments.
std::vector<int64_t> split_range(int64_t total, int64_t parts, int64_t align);

}  // namespace lowbit
