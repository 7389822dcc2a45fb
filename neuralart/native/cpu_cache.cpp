// neuralart's CPU block cache: torch's CPU allocator, keeping freed feature maps for
// the next request of their size (neuralart/cpucache.py explains why).
//
// Every iteration of an optimisation allocates and frees the same feature maps, most of
// them above glibc's mmap threshold: glibc maps each one afresh and unmaps it on free,
// so every pass pays page faults on hundreds of megabytes. Here a block of at least
// min_size bytes (whole pages, mapped from the kernel) goes into the cache when freed,
// and a request is served by the smallest cached block of at least its size and at most
// `fit` times it. The blocks in use and those cached together stay within (1 + slack)
// times the most in use at once since the last release(): before mapping a new block
// the largest cached ones are unmapped, and a freed block that would break the budget
// is unmapped at once. Smaller requests go to the allocator this one replaces.
// release() unmaps every cached block (called between levels and after a run).
#include <sys/mman.h>
#include <torch/extension.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

// Data pointers are "simple" (the pointer is its own context), as oneDNN's raw_allocate
// and raw_deallocate require; the cache finds a block's size by its pointer.
class BlockCache final : public c10::Allocator {
 public:
  BlockCache(c10::Allocator* small, size_t min_size, double slack, double fit)
      : small_(small),
        small_deleter_(small->raw_deleter()),
        min_size_(min_size),
        slack_(slack),
        fit_(fit) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < min_size_ || small_deleter_ == nullptr) {
      return small_->allocate(n);
    }
    const size_t size = (n + kPage - 1) & ~(kPage - 1);
    void* ptr = take(size);
    if (ptr == nullptr) {
      evict_for(size);
      ptr = map(size);
      if (ptr == nullptr) {
        release();  // memory is short: give the cached blocks back and try once more
        ptr = map(size);
        TORCH_CHECK(ptr != nullptr, "out of memory: could not allocate ", size,
                    " bytes on the CPU");
      }
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[ptr] = size;
      grow(size);
    }
    return {ptr, ptr, &BlockCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  // Without a raw deleter of the allocator it replaces, every request goes to that one
  // (see allocate), and raw allocation is as unsupported as it was there.
  c10::DeleterFnPtr raw_deleter() const override {
    return small_deleter_ == nullptr ? nullptr : &BlockCache::give_back;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  void release() {
    std::vector<void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& entry : free_) {
        blocks.insert(blocks.end(), entry.second.begin(), entry.second.end());
      }
      free_.clear();
      cached_ = 0;
      peak_live_ = live_;  // the next sizes set their own peak
    }
    for (void* ptr : blocks) {
      unmap(ptr);
    }
  }

  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_), hits_, misses_, static_cast<int64_t>(live_),
            static_cast<int64_t>(peak_live_), evicted_};
  }

  static void give_back(void* ptr);

  bool owns(void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    return sizes_.count(ptr) != 0;
  }

  c10::DeleterFnPtr small_deleter() const { return small_deleter_; }

 private:
  // The smallest cached block of at least ``size`` bytes and at most ``fit`` times that.
  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = free_.lower_bound(size);
    while (found != free_.end() && found->second.empty()) {
      found = free_.erase(found);
    }
    if (found == free_.end() || static_cast<double>(found->first) > fit_ * static_cast<double>(size)) {
      ++misses_;
      return nullptr;
    }
    const size_t block = found->first;
    void* ptr = found->second.back();
    found->second.pop_back();
    cached_ -= block;
    ++hits_;
    grow(block);
    return ptr;
  }

  void grow(size_t size) {  // under the lock
    live_ += size;
    if (live_ > peak_live_) {
      peak_live_ = live_;
    }
  }

  // The cache may hold the blocks in use and cached up to (1 + slack) times the most
  // ever in use at once since the last release: the footprint stays within that of
  // freeing everything at once, plus the slack.
  size_t budget() const {
    return static_cast<size_t>(static_cast<double>(peak_live_) * (1.0 + slack_));
  }

  // Before a new block of ``size``: free cached blocks, largest first, until the blocks
  // in use, those cached and the new one fit the budget.
  void evict_for(size_t size) {
    std::vector<void*> victims;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const size_t wanted = std::max(peak_live_, live_ + size);
      const size_t limit = static_cast<size_t>(static_cast<double>(wanted) * (1.0 + slack_));
      while (live_ + size + cached_ > limit && !free_.empty()) {
        auto largest = std::prev(free_.end());
        while (!largest->second.empty() && live_ + size + cached_ > limit) {
          victims.push_back(largest->second.back());
          largest->second.pop_back();
          cached_ -= largest->first;
          ++evicted_;
        }
        if (largest->second.empty()) {
          free_.erase(largest);
        }
      }
    }
    for (void* ptr : victims) {
      unmap(ptr);
    }
  }

  void keep(void* ptr) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto known = sizes_.find(ptr);
      if (known == sizes_.end()) {
        ptr = nullptr;  // not one of this cache's blocks
      } else {
        const size_t size = known->second;
        live_ -= size;
        if (live_ + cached_ + size <= budget()) {
          free_[size].push_back(ptr);
          cached_ += size;
          return;
        }
      }
    }
    if (ptr != nullptr) {
      unmap(ptr);
    }
  }

  // Blocks are whole pages mapped from the kernel and unmapped when they leave the
  // cache, so that what is not cached is given back at once, as glibc does for its
  // large blocks (glibc's heap would keep the middle-sized ones, fragmenting).
  static void* map(size_t size) {
    void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return ptr == MAP_FAILED ? nullptr : ptr;
  }

  void unmap(void* ptr) {
    size_t size = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto known = sizes_.find(ptr);
      size = known->second;
      sizes_.erase(known);
    }
    munmap(ptr, size);
  }

  c10::Allocator* small_;
  c10::DeleterFnPtr small_deleter_;
  const size_t min_size_;
  const double slack_;
  const double fit_;
  size_t cached_ = 0;     // bytes in cached blocks
  size_t live_ = 0;       // bytes in blocks in use
  size_t peak_live_ = 0;  // the most in use at once since the last release
  int64_t hits_ = 0;
  int64_t misses_ = 0;
  int64_t evicted_ = 0;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;  // cached blocks by size
  std::unordered_map<void*, size_t> sizes_;  // every block of this cache, in use or cached
};

BlockCache* g_cache = nullptr;  // never deleted: blocks may be freed at any time until exit

void BlockCache::give_back(void* ptr) {
  if (!g_cache->owns(ptr)) {
    // A small block handed out by the allocator this one replaced, freed through
    // raw_deallocate with this allocator's raw deleter: it goes back to its own.
    g_cache->small_deleter()(ptr);
    return;
  }
  g_cache->keep(ptr);
}

bool install(int64_t min_size, double slack, double fit) {
  if (g_cache != nullptr) {
    return false;
  }
  g_cache = new BlockCache(c10::GetCPUAllocator(), static_cast<size_t>(min_size), slack, fit);
  c10::SetCPUAllocator(g_cache, /*priority=*/100);
  return c10::GetCPUAllocator() == g_cache;
}

bool installed() { return g_cache != nullptr && c10::GetCPUAllocator() == g_cache; }

void release() {
  if (g_cache != nullptr) {
    g_cache->release();
  }
}

std::vector<int64_t> stats() {
  return g_cache != nullptr ? g_cache->stats() : std::vector<int64_t>{0, 0, 0, 0, 0, 0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "make the block cache torch's CPU allocator");
  m.def("installed", &installed, "whether the block cache is torch's CPU allocator");
  m.def("release", &release, "free every cached block");
  m.def("stats", &stats, "[bytes cached, hits, misses, bytes in use, most in use, evicted]");
}
