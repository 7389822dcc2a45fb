// neuralart's CPU block cache: torch's CPU allocator, keeping freed feature maps' pages
// for the next requests (neuralart/cpucache.py explains why).
//
// Every iteration of an optimisation allocates and frees the same feature maps, most of
// them above glibc's mmap threshold: glibc maps each one afresh and unmaps it on free,
// so every pass pays page faults on hundreds of megabytes. Here requests of at least
// min_size bytes are carved, in whole pages, out of one large reservation of address
// space, managed as a heap: the lowest free range that is large enough serves a request
// (first fit), a freed range merges with its free neighbours, and the pages of free
// ranges stay mapped and written, so that a request served from them costs no fault.
// What stays resident (the pages in use and those of free ranges) is kept within
// (1 + slack) times the most in use at once since the last release(): when a request
// needs pages that are not resident and the total would go beyond that, the free pages
// at the highest addresses are given back to the kernel (MADV_DONTNEED) first. Smaller
// requests, and any that the reservation cannot hold, go to the allocator this one
// replaces. release() gives back every free page (called between levels and after a
// run).
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <torch/extension.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

size_t whole_pages(size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

// Ranges are [start, end) byte offsets from the reservation's base, in whole pages,
// kept in maps from start to end, disjoint and merged where they touch.
using Ranges = std::map<size_t, size_t>;

// Add [start, end) to ``ranges``, merging it with the ranges it touches.
void add_range(Ranges& ranges, size_t start, size_t end) {
  auto next = ranges.lower_bound(start);
  if (next != ranges.begin()) {
    auto before = std::prev(next);
    if (before->second >= start) {
      start = before->first;
      end = std::max(end, before->second);
      next = ranges.erase(before);
    }
  }
  while (next != ranges.end() && next->first <= end) {
    end = std::max(end, next->second);
    next = ranges.erase(next);
  }
  ranges[start] = end;
}

// Remove [start, end) from ``ranges``; the number of bytes removed.
size_t cut_range(Ranges& ranges, size_t start, size_t end) {
  size_t removed = 0;
  auto it = ranges.upper_bound(start);
  if (it != ranges.begin()) {
    it = std::prev(it);
  }
  while (it != ranges.end() && it->first < end) {
    const size_t lo = std::max(it->first, start);
    const size_t hi = std::min(it->second, end);
    if (lo >= hi) {
      ++it;
      continue;
    }
    removed += hi - lo;
    const size_t first = it->first;
    const size_t last = it->second;
    it = ranges.erase(it);
    if (first < lo) {
      ranges[first] = lo;
    }
    if (hi < last) {
      it = ranges.emplace(hi, last).first;
      ++it;
    }
  }
  return removed;
}

// Data pointers are "simple" (the pointer is its own context), as oneDNN's raw_allocate
// and raw_deallocate require; the heap finds a block's size by its offset.
class PageHeap final : public c10::Allocator {
 public:
  PageHeap(c10::Allocator* small, char* base, size_t reserved, size_t min_size, double slack)
      : small_(small),
        small_deleter_(small->raw_deleter()),
        base_(base),
        reserved_(reserved),
        min_size_(min_size),
        slack_(slack) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < min_size_ || small_deleter_ == nullptr) {
      return small_->allocate(n);
    }
    void* ptr = take(whole_pages(n));
    if (ptr == nullptr) {  // beyond the reservation: the allocator this one replaced
      return small_->allocate(n);
    }
    return {ptr, ptr, &PageHeap::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  // Without a raw deleter of the allocator it replaces, every request goes to that one
  // (see allocate), and raw allocation is as unsupported as it was there.
  c10::DeleterFnPtr raw_deleter() const override {
    return small_deleter_ == nullptr ? nullptr : &PageHeap::give_back;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  bool owns(void* ptr) const {
    const char* p = static_cast<const char*>(ptr);
    return p >= base_ && p < base_ + reserved_;
  }

  c10::DeleterFnPtr small_deleter() const { return small_deleter_; }

  static void give_back(void* ptr);

  // Free pages back to the kernel, the heap's free top back to the reservation; the
  // most in use starts again from what is in use now.
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& range : free_) {
      const size_t written = resident_in(range.first, range.second);
      if (written > 0) {
        madvise(base_ + range.first, range.second - range.first, MADV_DONTNEED);
        add_range(unwritten_, range.first, range.second);
        resident_ -= written;
      }
    }
    if (!free_.empty() && std::prev(free_.end())->second == top_) {
      const auto last = std::prev(free_.end());
      const size_t start = last->first;
      free_.erase(last);
      cut_range(unwritten_, start, top_);
      mprotect(base_ + start, top_ - start, PROT_NONE);
      top_ = start;
    }
    peak_live_ = live_;
  }

  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(resident_ - live_), hits_, misses_,
            static_cast<int64_t>(live_), static_cast<int64_t>(peak_live_),
            static_cast<int64_t>(released_), static_cast<int64_t>(top_)};
  }

  void keep(void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t start = static_cast<size_t>(static_cast<char*>(ptr) - base_);
    const auto known = sizes_.find(start);
    if (known == sizes_.end()) {
      return;  // not a block of this heap (cannot happen: owns() checked the address)
    }
    const size_t size = known->second;
    sizes_.erase(known);
    live_ -= size;
    add_range(free_, start, start + size);  // its pages stay resident, counted as before
  }

 private:
  // A block of ``size`` bytes (whole pages): the lowest free range that holds it, or the
  // top of the heap; nullptr when the reservation cannot hold it.
  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t start = top_;
    bool found = false;
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second - it->first >= size) {
        start = it->first;
        const size_t end = it->second;
        free_.erase(it);
        if (end > start + size) {
          free_[start + size] = end;
        }
        found = true;
        break;
      }
    }
    if (!found) {
      // A free range at the top grows into fresh pages; otherwise the block starts there.
      if (!free_.empty() && std::prev(free_.end())->second == top_) {
        start = std::prev(free_.end())->first;
      }
      const size_t end = start + size;
      if (end > reserved_) {
        return nullptr;
      }
      if (mprotect(base_ + top_, end - top_, PROT_READ | PROT_WRITE) != 0) {
        return nullptr;
      }
      if (start < top_) {
        free_.erase(start);
      }
      add_range(unwritten_, top_, end);
      top_ = end;
    }
    const size_t fresh = cut_range(unwritten_, start, start + size);
    resident_ += fresh;
    if (fresh > 0) {
      ++misses_;
    } else {
      ++hits_;
    }
    sizes_[start] = size;
    live_ += size;
    peak_live_ = std::max(peak_live_, live_);
    const auto budget = static_cast<size_t>(static_cast<double>(peak_live_) * (1.0 + slack_));
    if (resident_ > budget) {
      shed(whole_pages(resident_ - budget));
    }
    return base_ + start;
  }

  // Bytes of [start, end) that are resident (not in unwritten_).
  size_t resident_in(size_t start, size_t end) const {
    size_t unwritten = 0;
    auto it = unwritten_.upper_bound(start);
    if (it != unwritten_.begin()) {
      it = std::prev(it);
    }
    for (; it != unwritten_.end() && it->first < end; ++it) {
      const size_t lo = std::max(it->first, start);
      const size_t hi = std::min(it->second, end);
      if (lo < hi) {
        unwritten += hi - lo;
      }
    }
    return (end - start) - unwritten;
  }

  // Give ``need`` bytes of resident free pages back to the kernel, highest first.
  void shed(size_t need) {
    for (auto range = free_.rbegin(); range != free_.rend() && need > 0; ++range) {
      size_t hi = range->second;
      const size_t lo_limit = range->first;
      while (hi > lo_limit && need > 0) {
        // The resident piece ending at hi: down to the next unwritten range below hi.
        auto below = unwritten_.lower_bound(hi);
        if (below != unwritten_.begin()) {
          const auto prev = std::prev(below);
          if (prev->second >= hi) {  // hi is inside (or at the end of) an unwritten range
            hi = std::max(prev->first, lo_limit);
            continue;
          }
        }
        size_t lo = lo_limit;
        if (below != unwritten_.begin()) {
          lo = std::max(lo, std::prev(below)->second);
        }
        const size_t take = std::min(hi - lo, need);
        madvise(base_ + hi - take, take, MADV_DONTNEED);
        add_range(unwritten_, hi - take, hi);
        resident_ -= take;
        released_ += take;
        need -= take;
        hi -= take;
      }
    }
  }

  c10::Allocator* small_;
  c10::DeleterFnPtr small_deleter_;
  char* const base_;
  const size_t reserved_;
  const size_t min_size_;
  const double slack_;
  size_t top_ = 0;        // the heap's end: pages above it are not accessible
  size_t live_ = 0;       // bytes in blocks in use
  size_t peak_live_ = 0;  // the most in use at once since the last release
  size_t resident_ = 0;   // bytes of the heap's written pages, in use or free
  size_t released_ = 0;   // bytes given back to the kernel to keep the budget
  int64_t hits_ = 0;      // requests served without an unwritten page
  int64_t misses_ = 0;    // requests that needed unwritten pages
  std::mutex mutex_;
  Ranges free_;       // free ranges of the heap, merged
  Ranges unwritten_;  // pages below the top that are not resident (fresh or given back)
  std::unordered_map<size_t, size_t> sizes_;  // blocks in use: start -> size
};

PageHeap* g_heap = nullptr;  // never deleted: blocks may be freed at any time until exit

void PageHeap::give_back(void* ptr) {
  if (!g_heap->owns(ptr)) {
    // A block handed out by the allocator this one replaced, freed through
    // raw_deallocate with this allocator's raw deleter: it goes back to its own.
    g_heap->small_deleter()(ptr);
    return;
  }
  g_heap->keep(ptr);
}

// Reserve address space (no memory: the pages are inaccessible until the heap grows into
// them): twice the machine's memory, at most half of what the process may map (ulimit
// -v), or less where even that cannot be had.
char* reserve(size_t* size) {
  const long pages = sysconf(_SC_PHYS_PAGES);
  size_t want = pages > 0 ? 2 * static_cast<size_t>(pages) * kPage : (size_t{64} << 30);
  struct rlimit limit;
  if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    want = std::min(want, static_cast<size_t>(limit.rlim_cur) / 2);
  }
  while (want >= (size_t{1} << 30)) {
    void* ptr = mmap(nullptr, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ptr != MAP_FAILED) {
      *size = want;
      return static_cast<char*>(ptr);
    }
    want /= 2;
  }
  return nullptr;
}

bool install(int64_t min_size, double slack) {
  if (g_heap != nullptr) {
    return false;
  }
  size_t reserved = 0;
  char* base = reserve(&reserved);
  if (base == nullptr) {
    throw std::runtime_error("could not reserve address space for the heap");
  }
  g_heap = new PageHeap(c10::GetCPUAllocator(), base, reserved, static_cast<size_t>(min_size),
                        slack);
  c10::SetCPUAllocator(g_heap, /*priority=*/100);
  return c10::GetCPUAllocator() == g_heap;
}

bool installed() { return g_heap != nullptr && c10::GetCPUAllocator() == g_heap; }

void release() {
  if (g_heap != nullptr) {
    g_heap->release();
  }
}

std::vector<int64_t> stats() {
  return g_heap != nullptr ? g_heap->stats() : std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0};
}

}  // namespace

// neuralart/native/row_match.cpp, built into the same extension.
at::Tensor match_rows(const at::Tensor& values, const at::Tensor& levels);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "make the page heap torch's CPU allocator");
  m.def("installed", &installed, "whether the page heap is torch's CPU allocator");
  m.def("release", &release, "give every free page back to the kernel");
  m.def("stats", &stats,
        "[bytes free and resident, hits, misses, bytes in use, most in use, bytes released, "
        "heap size]");
  m.def("match_rows", &match_rows,
        "each row's values replaced rank by rank with the levels' row (stable ranks)");
}
