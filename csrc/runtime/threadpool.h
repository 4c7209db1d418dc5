// A small fixed thread pool of our own (no OpenMP, so nothing clashes with the
// runtimes of torch or onnxruntime loaded in the same process). The calling thread
// takes part in the work. Work items are claimed from an atomic counter; kernels
// make each item's result independent of who runs it, so any thread count gives
// bit-identical output.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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

  ~ThreadPool();

 private:
  ThreadPool();
  void start_workers(int n_workers);
  void stop_workers();
  void worker_loop(int id);
  void run_items();

  std::atomic<int> num_threads_{1};
  std::mutex job_mutex_;  // one job at a time; held by the submitting thread
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_items_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> done_{0};
  int active_workers_ = 0;  // workers still inside the current job
};

// Splits [0, total) into `parts` contiguous chunks aligned to `align`; returns the
// chunk boundaries (size parts + 1). Deterministic in its arguments.
std::vector<int64_t> split_range(int64_t total, int64_t parts, int64_t align);

}  // namespace lowbit
