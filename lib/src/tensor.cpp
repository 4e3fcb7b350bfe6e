#include "lwc/tensor.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <new>
#include <unordered_map>
#include <sstream>

// Under AddressSanitizer a pooled buffer is poisoned while it waits in the pool, and so is the part
// of a reused buffer beyond the request (a buffer may be up to twice the request): ASan then reports
// a read past a tensor's end or after its release, as it does for buffers from the system.
#if defined(__SANITIZE_ADDRESS__)
#define LWC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LWC_ASAN 1
#endif
#endif
#ifdef LWC_ASAN
#include <sanitizer/asan_interface.h>
#define LWC_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define LWC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define LWC_POISON(p, n) ((void)(p), (void)(n))
#define LWC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace lwc {

int64_t numelOf(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shapeStr(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << ']';
  return os.str();
}

namespace {
constexpr size_t kAlign = 64;

size_t roundedSize(size_t bytes) { return bytes == 0 ? kAlign : (bytes + kAlign - 1) / kAlign * kAlign; }

std::byte* systemAlloc(size_t n) { return static_cast<std::byte*>(::operator new(n, std::align_val_t{kAlign})); }
void systemFree(std::byte* p) { ::operator delete(p, std::align_val_t{kAlign}); }

thread_local BufferPool* t_pool = nullptr;
}  // namespace

struct BufferPool::State {
  std::mutex mu;
  /// Free buffers, sorted by capacity. A request takes the smallest free buffer that fits and wastes
  /// at most half of it, so buffers freed by early layers serve later layers of other sizes: the pool
  /// holds about the peak of live activations rather than one buffer per distinct tensor size. A
  /// sorted vector, not a multimap: taking and returning a buffer then allocates nothing once the
  /// vector has grown to the session's number of live buffers (a multimap allocated a node per
  /// return, about a tenth of the allocator calls of a batch-1 run).
  std::vector<std::pair<size_t, std::byte*>> free;
  size_t free_bytes = 0;
  static constexpr size_t kMaxFreeBytes = size_t(1) << 30;
  ~State() {
    for (auto& [n, p] : free) {
      LWC_UNPOISON(p, n);
      systemFree(p);
    }
  }
};

BufferPool::BufferPool() : state_(std::make_shared<State>()) {}
BufferPool::~BufferPool() = default;
BufferPool::Scope::Scope(BufferPool& p) : prev_(t_pool) { t_pool = &p; }
BufferPool::Scope::~Scope() { t_pool = prev_; }

namespace {
/// Allocator for the reference-count blocks of pooled buffers (std::shared_ptr with a deleter
/// allocates one per buffer): freed blocks are kept in a per-thread list, at most kKeepBlocks of
/// them, and reused. Blocks may be freed on another thread than the one that made them; every list
/// holds blocks of the one size, so where a block goes does not matter. The list's head and count are
/// trivially destructible thread-locals, valid until the thread is gone; a drain object empties the
/// list when the thread ends and closes it, so blocks freed after that (a static tensor at exit) go
/// straight back to the system.
struct FreeBlock {
  FreeBlock* next;
};
thread_local FreeBlock* t_blocks = nullptr;
thread_local size_t t_block_count = 0;
thread_local bool t_blocks_closed = false;
constexpr size_t kKeepBlocks = 4096;

struct BlockDrain {
  ~BlockDrain() {
    while (FreeBlock* b = t_blocks) {
      t_blocks = b->next;
      ::operator delete(b);
    }
    t_block_count = 0;
    t_blocks_closed = true;
  }
};

template <typename T>
struct BlockAllocator {
  using value_type = T;
  static constexpr size_t kBytes = sizeof(T) > sizeof(FreeBlock) ? sizeof(T) : sizeof(FreeBlock);
  BlockAllocator() = default;
  template <typename U>
  BlockAllocator(const BlockAllocator<U>&) {}

  T* allocate(size_t n) {
    if (n == 1 && t_blocks) {
      FreeBlock* b = t_blocks;
      t_blocks = b->next;
      --t_block_count;
      return reinterpret_cast<T*>(b);
    }
    return static_cast<T*>(::operator new(n == 1 ? kBytes : n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) {
    if (n == 1 && !t_blocks_closed && t_block_count < kKeepBlocks) {
      thread_local BlockDrain drain;  // constructed once per thread that keeps blocks
      (void)drain;
      auto* b = reinterpret_cast<FreeBlock*>(p);
      b->next = t_blocks;
      t_blocks = b;
      ++t_block_count;
      return;
    }
    ::operator delete(p);
  }
  template <typename U>
  bool operator==(const BlockAllocator<U>&) const { return true; }
};

/// Returns a pooled buffer to its pool when the last tensor sharing it goes (or to the system if
/// the pool is gone by then, or holds kMaxFreeBytes already).
struct PoolReturn {
  std::weak_ptr<BufferPool::State> pool;
  size_t cap;
  void operator()(std::byte* q) const {
    if (auto s = pool.lock()) {
      std::lock_guard<std::mutex> lock(s->mu);
      if (s->free_bytes + cap <= BufferPool::State::kMaxFreeBytes) {
        auto& f = s->free;
        LWC_POISON(q, cap);
        f.insert(std::upper_bound(f.begin(), f.end(), cap, [](size_t c, const auto& e) { return c < e.first; }),
                 {cap, q});
        s->free_bytes += cap;
        return;
      }
    }
    LWC_UNPOISON(q, cap);
    systemFree(q);
  }
};

std::shared_ptr<std::byte> allocateRaw(size_t bytes) {
  const size_t n = roundedSize(bytes);
  if (!t_pool) return std::shared_ptr<std::byte>(systemAlloc(n), systemFree);
  const std::shared_ptr<BufferPool::State>& st = t_pool->state();
  std::byte* p = nullptr;
  size_t cap = n;
  {
    std::lock_guard<std::mutex> lock(st->mu);
    auto& f = st->free;
    auto it = std::lower_bound(f.begin(), f.end(), n, [](const auto& e, size_t c) { return e.first < c; });
    if (it != f.end() && it->first / 2 <= n) {
      cap = it->first;
      p = it->second;
      f.erase(it);
      st->free_bytes -= cap;
    }
  }
  if (!p) p = systemAlloc(n);
  LWC_UNPOISON(p, n);
  LWC_POISON(p + n, cap - n);
  return std::shared_ptr<std::byte>(p, PoolReturn{st, cap}, BlockAllocator<std::byte>{});
}
}  // namespace

void Tensor::checkAllocatable(DType dtype, const Shape& shape) {
  LWC_CHECK(dtype != DType::Undefined, "tensor of undefined dtype");
  double elements = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("tensor dimension ", d, " is negative in shape ", shapeStr(shape));
    elements *= static_cast<double>(d);
  }
  // Refuse absurd sizes before allocating (a corrupt file must not take the machine down): over
  // 64 GiB, or over half of this machine's memory, where the kernel's OOM killer would otherwise
  // end the process without a word once the pages are touched.
  static const double limit = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    const double half_ram = pages > 0 && page > 0 ? 0.5 * double(pages) * double(page) : 1e300;
    return std::min(64.0 * (1ull << 30), half_ram);
  }();
  const double bytes = elements * static_cast<double>(dtypeSize(dtype));
  if (bytes > limit)
    fail("tensor of shape ", shapeStr(shape), " would need ", bytes / (1 << 30), " GiB, more than ",
         limit >= 64.0 * (1ull << 30) ? "the 64 GiB lwc allows one tensor" : "half of this machine's memory");
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  checkAllocatable(dtype, shape_);
  numel_ = numelOf(shape_);
  data_ = allocateRaw(nbytes());
  std::memset(data_.get(), 0, nbytes());
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  Tensor t;
  checkAllocatable(dtype, shape);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = numelOf(t.shape_);
  t.data_ = allocateRaw(t.nbytes());
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  LWC_CHECK(numelOf(shape) == numel_, "reshape ", shapeStr(shape_), " -> ", shapeStr(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::view(int64_t offset, Shape shape) const {
  const int64_t n = numelOf(shape);
  LWC_CHECK(offset >= 0 && n >= 0 && offset + n <= numel_, "view of ", n, " elements at ", offset, " in ", shapeStr(shape_));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.numel_ = n;
  // Shares ownership of the whole buffer, points into it.
  t.data_ = std::shared_ptr<std::byte>(data_, data_.get() + offset * static_cast<int64_t>(dtypeSize(dtype_)));
  return t;
}

Tensor Tensor::clone() const {
  if (empty()) return {};
  Tensor t(dtype_, shape_);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::normalizeBools() {
  if (dtype_ != DType::Bool) return;
  auto* b = static_cast<uint8_t*>(raw());
  for (int64_t i = 0; i < numel_; ++i) b[i] = b[i] != 0;
}

bool Tensor::bitEqual(const Tensor& o) const {
  return dtype_ == o.dtype_ && shape_ == o.shape_ && (nbytes() == 0 || std::memcmp(raw(), o.raw(), nbytes()) == 0);
}

namespace {
template <typename F>
auto visit(DType t, F&& f) {
  return visitDType(t, std::forward<F>(f), [t] { throw InternalError("unhandled dtype " + std::string(dtypeName(t))); });
}
}  // namespace

double Tensor::at(int64_t i) const {
  LWC_CHECK(i >= 0 && i < numel_, "index out of range");
  if (dtype_ == DType::Float16) return halfToFloat(static_cast<const uint16_t*>(raw())[i]);
  return visit(dtype_, [&](auto tag) {
    using T = decltype(tag);
    return static_cast<double>(static_cast<const T*>(raw())[i]);
  });
}

Tensor Tensor::cast(DType to) const {
  if (to == dtype_) return clone();
  Tensor out(to, shape_);
  const int64_t n = numel_;
  if (dtype_ == DType::Float16) {
    Tensor f(DType::Float32, shape_);
    const auto* src = static_cast<const uint16_t*>(raw());
    for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = halfToFloat(src[i]);
    return f.cast(to);
  }
  if (to == DType::Float16) {
    const Tensor f = dtype_ == DType::Float32 ? *this : cast(DType::Float32);  // shares the buffer, no copy
    auto* dst = static_cast<uint16_t*>(out.raw());
    for (int64_t i = 0; i < n; ++i) dst[i] = floatToHalf(f.data<float>()[i]);
    return out;
  }
  visit(dtype_, [&](auto stag) {
    using S = decltype(stag);
    const S* src = static_cast<const S*>(raw());
    visit(to, [&](auto dtag) {
      using D = decltype(dtag);
      D* dst = static_cast<D*>(out.raw());
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<D, bool>) {
          dst[i] = src[i] != S{};
        } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
          // Out-of-range float -> int is undefined in C++; ONNX leaves it unspecified. Saturate, NaN -> 0.
          const double v = static_cast<double>(src[i]);
          if (std::isnan(v)) dst[i] = 0;
          else if (v <= static_cast<double>(std::numeric_limits<D>::lowest())) dst[i] = std::numeric_limits<D>::lowest();
          else if (v >= static_cast<double>(std::numeric_limits<D>::max())) dst[i] = std::numeric_limits<D>::max();
          else dst[i] = static_cast<D>(v);
        } else {
          dst[i] = static_cast<D>(src[i]);
        }
      }
      return 0;
    });
    return 0;
  });
  return out;
}

}  // namespace lwc
