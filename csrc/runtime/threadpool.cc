#include "runtime/threadpool.h"

#include <algorithm>
#include <cstdlib>

namespace lowbit {
namespace {
thread_local bool t_in_job = false;  // nested parallel_for runs inline
}

ThreadPool& ThreadPool::global() {
  static ThreadPool* pool = new ThreadPool();  // never destroyed: workers may outlive static teardown order
  return *pool;
}

ThreadPool::ThreadPool() {
  int n = int(std::thread::hardware_concurrency());
  if (n < 1) n = 1;
  if (const char* env = std::getenv("LOWBIT_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == 0 && v >= 1 && v <= 1024) n = int(v);
  }
  num_threads_ = n;
  start_workers(n - 1);
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::start_workers(int n_workers) {
  stop_ = false;
  for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::set_num_threads(int n) {
  if (n < 1) n = 1;
  std::lock_guard<std::mutex> job(job_mutex_);  // wait for any running job
  if (n == num_threads_.load()) return;
  stop_workers();
  num_threads_ = n;
  start_workers(n - 1);
}

void ThreadPool::run_items() {
  const int64_t n = n_items_;
  for (;;) {
    int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n) break;
    (*fn_)(i);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_loop(int /*id*/) {
  t_in_job = true;
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_items();
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_workers_ == 0) cv_done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> job(job_mutex_, std::defer_lock);
  if (n == 1 || t_in_job || workers_.empty() || !job.try_lock()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    n_items_ = n;
    next_.store(0);
    done_.store(0);
    active_workers_ = int(workers_.size());
    ++generation_;
  }
  cv_work_.notify_all();
  t_in_job = true;
  run_items();
  t_in_job = false;
  // Wait until every worker has left this job (so fn_ may be reused safely).
  std::unique_lock<std::mutex> lk(mu_);
  cv_done_.wait(lk, [&] { return active_workers_ == 0; });
  fn_ = nullptr;
}

std::vector<int64_t> split_range(int64_t total, int64_t parts, int64_t align) {
  if (parts < 1) parts = 1;
  if (align < 1) align = 1;
  int64_t units = (total + align - 1) / align;
  parts = std::max<int64_t>(1, std::min(parts, units));
  std::vector<int64_t> b(parts + 1);
  for (int64_t i = 0; i <= parts; ++i) b[i] = std::min(total, (units * i / parts) * align);
  b[parts] = total;
  return b;
}

}  // namespace lowbit
