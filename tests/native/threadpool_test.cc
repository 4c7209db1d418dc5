// Stress test of the thread pool (built with ThreadSanitizer by tests/test_native.py):
// back-to-back jobs, several submitting threads at once (the losers run inline),
// nested parallel_for, and set_num_threads while jobs run. Every job must run
// each item exactly once. Prints "N passed, M failed".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "runtime/threadpool.h"

using lowbit::ThreadPool;

int main() {
  ThreadPool& pool = ThreadPool::global();
  pool.set_num_threads(3);
  std::atomic<int> failures{0};
  std::atomic<int> passes{0};
  auto one_job = [&](int64_t n, bool nested) {
    std::vector<std::atomic<int>> hits(n);
    for (auto& h : hits) h.store(0);
    std::function<void(int64_t)> fn = [&](int64_t i) {
      hits[i].fetch_add(1);
      if (nested) {
        std::atomic<int> inner{0};
        std::function<void(int64_t)> f2 = [&](int64_t) { inner.fetch_add(1); };
        pool.parallel_for(5, f2);
        if (inner.load() != 5) failures.fetch_add(1);
      }
    };
    pool.parallel_for(n, fn);
    for (auto& h : hits)
      if (h.load() != 1) { failures.fetch_add(1); return; }
    passes.fetch_add(1);
  };
  // A slow thread's share goes to the others: the first item the caller runs sleeps, and
  // everything else, the rest of the caller's share too, must be run by the workers meanwhile.
  {
    pool.set_num_threads(3);
    const int64_t n = 30;
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<int> by_caller{0}, runs{0};
    std::function<void(int64_t)> fn = [&](int64_t) {
      if (std::this_thread::get_id() == caller && by_caller.fetch_add(1) == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      runs.fetch_add(1);
    };
    pool.parallel_for(n, fn);
    if (runs.load() != n || by_caller.load() > 1) {
      std::printf("stealing: %d runs, %d of them by the sleeping caller (want at most 1)\n", runs.load(), by_caller.load());
      failures.fetch_add(1);
    } else {
      passes.fetch_add(1);
    }
  }
  // While every thread keeps up, each runs its own share: items of 5 ms, shares of 10, so a
  // worker's wake-up is small next to its share (one counter for all would interleave them).
  {
    pool.set_num_threads(3);
    const int64_t n = 30;
    std::vector<std::thread::id> who(n);
    std::function<void(int64_t)> fn = [&](int64_t i) {
      who[size_t(i)] = std::this_thread::get_id();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    };
    pool.parallel_for(n, fn);
    bool ok = who[0] == std::this_thread::get_id();
    std::vector<std::thread::id> owner;
    for (int s = 0; s < 3; ++s) {
      const std::thread::id o = who[size_t(10 * s)];
      int same = 0;
      for (int i = 0; i < 10; ++i) same += who[size_t(10 * s + i)] == o;
      for (const auto& p : owner) ok = ok && p != o;
      owner.push_back(o);
      ok = ok && same >= 8;
      if (same < 8) std::printf("shares: share %d ran %d of 10 items on one thread (want >= 8)\n", s, same);
    }
    if (ok) passes.fetch_add(1);
    else failures.fetch_add(1);
  }
  // back-to-back jobs of varied sizes from one thread
  for (int r = 0; r < 2000; ++r) one_job(1 + r % 37, r % 50 == 0);
  // several submitters at once, with resizes in between
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int r = 0; r < 500; ++r) one_job(1 + (r * 7 + t) % 29, false);
    });
  std::thread resizer([&] {
    for (int r = 0; r < 20; ++r) {
      pool.set_num_threads(1 + r % 3);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  for (auto& t : ts) t.join();
  resizer.join();
  std::printf("%d passed, %d failed\n", passes.load(), failures.load());
  return failures.load() ? 1 : 0;
}
