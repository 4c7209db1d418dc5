#include "runtime/threadpool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace lowbit {
namespace {

thread_local bool t_in_job = false;  // nested parallel_for runs inline

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle worker spins before sleeping: long enough to bridge the gap
// between two ops of one graph run, short enough not to hog a core afterwards.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

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
  shares_.reset(new Share[size_t(n_workers) + 1]);
  n_shares_ = n_workers + 1;
  for (int i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
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

void ThreadPool::run_items(int slot) {
  // its own share first, then the others' in turn
  for (int k = 0; k < n_shares_; ++k) {
    Share& sh = shares_[size_t((slot + k) % n_shares_)];
    for (;;) {
      const int64_t i = sh.cursor.fetch_add(1, std::memory_order_relaxed);
      if (i >= sh.end) break;
      (*fn_)(i);
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }
}

void ThreadPool::worker_loop(int slot) {
  t_in_job = true;
  uint64_t seen = generation_.load();
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      auto t0 = std::chrono::steady_clock::now();
      int spins = 0;
      while ((g = generation_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_relaxed)) {
        cpu_relax();
        if ((++spins & 255) == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_work_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
          t0 = std::chrono::steady_clock::now();
        }
      }
    }
    if (stop_.load()) return;
    seen = g;
    // Join the job only if it is still the one we woke for and still open; the
    // caller waits for active_ to drain before it reuses fn_ and the counters.
    active_.fetch_add(1);
    if (job_open_.load() && generation_.load() == g) run_items(slot);
    active_.fetch_sub(1);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> job(job_mutex_, std::defer_lock);
  // workers_ is only read under job_mutex_: set_num_threads replaces it under that lock.
  if (n == 1 || t_in_job || !job.try_lock() || workers_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  fn_ = &fn;
  for (int s = 0; s < n_shares_; ++s) {
    shares_[size_t(s)].end = n * (s + 1) / n_shares_;
    shares_[size_t(s)].cursor.store(n * s / n_shares_, std::memory_order_relaxed);
  }
  done_.store(0);
  job_open_.store(true);
  {
    std::lock_guard<std::mutex> lk(mu_);  // pairs with the predicate check of sleeping workers
    generation_.fetch_add(1);
  }
  cv_work_.notify_all();
  t_in_job = true;
  run_items(0);
  t_in_job = false;
  // Every item claimed by a worker finishes; then no worker may still hold fn_.
  for (int spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
    if (spins > 4096) std::this_thread::yield(); else cpu_relax();
  }
  job_open_.store(false);
  for (int spins = 0; active_.load() != 0; ++spins) {
    if (spins > 4096) std::this_thread::yield(); else cpu_relax();
  }
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
