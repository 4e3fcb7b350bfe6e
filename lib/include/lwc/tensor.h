// A dense, typed, reference-counted n-d array: the value type of initializers and of the engine.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "lwc/dtype.h"
#include "lwc/status.h"

namespace lwc {

using Shape = std::vector<int64_t>;

/// Number of elements of a shape (1 for a scalar).
int64_t numelOf(const Shape& s);
std::string shapeStr(const Shape& s);

/// Dense row-major tensor. Copies share the buffer (like a shared_ptr); use clone() for a deep copy.
/// Buffers are 64-byte aligned so SIMD libraries can use them directly.
/// Recycles tensor buffers of recently freed sizes, so steady-state inference neither calls the
/// system allocator nor page-faults on fresh memory. Install one for the current thread with
/// BufferPool::Scope; tensors allocated meanwhile return their buffers to it when freed (or to the
/// system if the pool is gone by then).
class BufferPool {
 public:
  BufferPool();
  ~BufferPool();
  class Scope {
   public:
    explicit Scope(BufferPool& p);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    BufferPool* prev_;
  };
  struct State;
  const std::shared_ptr<State>& state() const { return state_; }

 private:
  std::shared_ptr<State> state_;
};

class Tensor {
 public:
  Tensor() = default;
  /// Allocates a zero-filled tensor.
  Tensor(DType dtype, Shape shape);
  /// Allocates without initialising the contents: for outputs a kernel overwrites completely.
  static Tensor uninitialized(DType dtype, Shape shape);
  /// Throws lwc::Error, as the constructors do, for a negative dimension or a tensor over 64 GiB
  /// or over half of the machine's memory: a kernel that prepares work for an output (a oneDNN
  /// primitive) calls it first.
  static void checkAllocatable(DType dtype, const Shape& shape);

  template <typename T>
  static Tensor fromVector(Shape shape, const std::vector<T>& values) {
    Tensor t(dtypeOf<T>(), std::move(shape));
    LWC_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "fromVector size mismatch");
    if constexpr (std::is_same_v<T, bool>) {
      for (size_t i = 0; i < values.size(); ++i) t.data<bool>()[i] = values[i];
    } else if (!values.empty()) {  // an empty vector's data() may be null, which memcpy must not get
      std::memcpy(t.raw(), values.data(), values.size() * sizeof(T));
    }
    return t;
  }
  template <typename T>
  static Tensor scalar(T v) { return fromVector<T>({}, {v}); }

  /// True when this tensor's buffer is shared with no other Tensor. Datasets reuse a batch's
  /// buffer once this holds (data::recycledTensor), so every Tensor owns a share of its buffer:
  /// copies and views do; a constructor wrapping memory it does not own would break that.
  bool uniqueBuffer() const { return data_.use_count() == 1; }

  bool empty() const { return dtype_ == DType::Undefined; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtypeSize(dtype_); }

  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }

  template <typename T>
  T* data() {
    LWC_CHECK(dtypeOf<T>() == dtype_, "tensor is ", dtypeName(dtype_), ", accessed as ", dtypeName(dtypeOf<T>()));
    return static_cast<T*>(raw());
  }
  template <typename T>
  const T* data() const {
    LWC_CHECK(dtypeOf<T>() == dtype_, "tensor is ", dtypeName(dtype_), ", accessed as ", dtypeName(dtypeOf<T>()));
    return static_cast<const T*>(raw());
  }

  /// Same buffer, new shape with the same element count.
  Tensor reshaped(Shape shape) const;
  /// The `shape` elements from element `offset` on, in the same buffer (no copy): a contiguous
  /// block such as one index of the first axis. The buffer lives as long as any view of it.
  Tensor view(int64_t offset, Shape shape) const;
  /// Deep copy.
  Tensor clone() const;
  /// True when dtype, shape and bytes are identical.
  bool bitEqual(const Tensor& other) const;
  /// For a bool tensor filled from bytes (a file, raw data): any non-zero byte becomes 1 (True), as
  /// NumPy and ONNX read them; reading a C++ bool that holds another byte is undefined behaviour.
  /// Other dtypes are left as they are.
  void normalizeBools();
  /// Element i converted to double (any dtype); for statistics and tests, not hot loops.
  double at(int64_t i) const;
  /// Converts to another dtype (float <-> int casts truncate like static_cast, as ONNX Cast does).
  Tensor cast(DType to) const;

 private:
  DType dtype_ = DType::Undefined;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<std::byte> data_;
};

}  // namespace lwc
