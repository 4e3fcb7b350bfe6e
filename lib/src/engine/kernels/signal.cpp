// Signal processing (opset 17's audio front-end ops): DFT (opsets 17-19), STFT (17-22), the Hann,
// Hamming and Blackman windows (17-22) and MelWeightMatrix (17-22), so a speech model exported with
// its spectrogram runs.
//
// DFT and STFT run each transform as a mixed-radix FFT in double (any length; a large prime factor
// costs a direct stage of that size; a real input of even length as a complex FFT of half the
// length), transforms split over the threads. Real ([..., 1]) or complex
// ([..., 2]) input; `onesided` keeps floor(N/2) + 1 bins of a real input's spectrum; the inverse
// divides by N. A onesided inverse (IRFFT, given meaning at opset 20) is refused by name.
#include <cmath>
#include <complex>
#include <numbers>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

// Lengths from a model's inputs (a transform's, a window's, a mel matrix's size) beyond which lwc
// refuses rather than tries to allocate.
constexpr int64_t kMaxLength = int64_t(1) << 31;

// One integer from a scalar (or one-element) int32/int64 input.
int64_t intScalar(const KernelContext& ctx, size_t i, const char* what) {
  const Tensor& t = ctx.in(i);
  if (t.numel() != 1) ctx.error(what, " has shape ", shapeStr(t.shape()), "; expected a scalar");
  if (t.dtype() != DType::Int64 && t.dtype() != DType::Int32) ctx.error(what, " is ", dtypeName(t.dtype()), "; expected int32 or int64");
  return readInts(t, ctx)[0];  // exact (through a double, INT64_MAX would not convert back)
}

double floatScalar(const KernelContext& ctx, size_t i, const char* what) {
  const Tensor& t = ctx.in(i);
  if (t.numel() != 1) ctx.error(what, " has shape ", shapeStr(t.shape()), "; expected a scalar");
  return t.at(0);
}

DType outputDatatype(const KernelContext& ctx) {
  const int64_t code = ctx.node.attrInt("output_datatype", 1);
  const DType dt = fromOnnxType(static_cast<int>(code));
  if (dt == DType::Undefined || dt == DType::Bool) ctx.error("output_datatype ", code, " is not a numeric type lwc computes");
  return dt;
}

using Complex = std::complex<double>;

// a * b written out: std::complex's operator* calls __muldc3 for its NaN rules.
inline Complex cmul(Complex a, Complex b) {
  return Complex(a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real());
}

// A mixed-radix FFT of one length (decimation in time, recursive; factors smallest prime first, each
// stage a butterfly over its factor p: O(N (p1 + p2 + ...)), e.g. 400 = 2^4 5^2 costs 18 N against
// the direct sum's N^2; a prime length is one direct stage). Twiddles e^{-2 pi i j / N} (conjugated
// for the inverse) come from one table, each an exact fraction of a turn.
class Fft {
 public:
  using C = Complex;
  Fft(int64_t n, bool inverse) : n_(n), tw_(static_cast<size_t>(n)) {
    for (int64_t j = 0; j < n; ++j) {
      const double a = 2 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(n);
      tw_[static_cast<size_t>(j)] = C(std::cos(a), inverse ? std::sin(a) : -std::sin(a));
    }
    int64_t rest = n;
    for (int64_t p = 2; p * p <= rest; ++p)
      while (rest % p == 0) {
        factors_.push_back(p);
        rest /= p;
      }
    if (rest > 1) factors_.push_back(rest);
  }
  /// out[k] = sum_j in[j * stride] w^(j k), k in [0, N).
  void run(const C* in, int64_t stride, C* out) const {
    if (n_ == 1) out[0] = in[0];
    else stage(in, stride, out, n_, 0);
  }

 private:
  void stage(const C* in, int64_t stride, C* out, int64_t len, size_t fi) const {
    const int64_t p = factors_[fi], m = len / p, step = n_ / len;
    if (m == 1) {  // the last factor: a direct transform of p strided samples
      if (p == 2) {
        out[0] = in[0] + in[stride];
        out[1] = in[0] - in[stride];
        return;
      }
      for (int64_t u = 0; u < p; ++u) {
        C sum = in[0];
        for (int64_t q = 1, e = u; q < p; ++q, e = e + u >= p ? e + u - p : e + u)
          sum += cmul(in[q * stride], tw_[static_cast<size_t>(e * step)]);
        out[u] = sum;
      }
      return;
    }
    for (int64_t q = 0; q < p; ++q) stage(in + q * stride, stride * p, out + q * m, m, fi + 1);
    // out[q m + k] holds the length-m transform of the q-th subsequence; combine them in place.
    if (p == 2) {
      for (int64_t k = 0; k < m; ++k) {
        const C a = out[k], b = cmul(out[m + k], tw_[static_cast<size_t>(k * step)]);
        out[k] = a + b;
        out[m + k] = a - b;
      }
      return;
    }
    C local[8];
    std::vector<C> heap;
    C* x = p <= 8 ? local : (heap.resize(static_cast<size_t>(p)), heap.data());
    for (int64_t k = 0; k < m; ++k) {
      for (int64_t q = 0; q < p; ++q) x[q] = out[q * m + k];
      for (int64_t u = 0; u < p; ++u) {
        const int64_t f = k + u * m;  // output index; term q has twiddle w_len^(q f mod len)
        C sum = x[0];
        for (int64_t q = 1, e = f; q < p; ++q, e = e + f >= len ? e + f - len : e + f)
          sum += cmul(x[q], tw_[static_cast<size_t>(e * step)]);
        out[f] = sum;
      }
    }
  }
  int64_t n_;
  std::vector<C> tw_;
  std::vector<int64_t> factors_;
};

// One transform of N points, planned once per node. A real forward input of even N (a spectrogram's
// frames) takes one complex FFT of N / 2 points over its even and odd samples packed as complex
// numbers, split into the N / 2 + 1 bins of the real spectrum (the bins above are their
// conjugates): half the work. Anything else is one complex FFT of N points.
class Transform {
 public:
  Transform(int64_t n, bool inverse, bool real)
      : n_(n), packed_(real && !inverse && n % 2 == 0 && n >= 4), fft_(packed_ ? n / 2 : n, inverse) {
    if (packed_)
      for (int64_t k = 0; k <= n / 2; ++k) {
        const double a = 2 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(n);
        w_.emplace_back(std::cos(a), -std::sin(a));
      }
  }
  /// `len` complex samples strided by `in_stride` (zero-padded or cut to N) -> `bins` outputs times
  /// `scale`, strided by `out_stride`. `buf` is scratch.
  template <typename T>
  void run(const double* in, int64_t len, int64_t in_stride, int64_t bins, double scale, T* out, int64_t out_stride,
           std::vector<Complex>& buf) const {
    const int64_t m = packed_ ? n_ / 2 : n_, used = std::min(len, n_);
    buf.resize(static_cast<size_t>(2 * m));
    std::fill(buf.begin() + used / (packed_ ? 2 : 1), buf.begin() + m, Complex());  // padding past the samples
    if (packed_) {
      for (int64_t h = 0; h < used / 2; ++h)
        buf[static_cast<size_t>(h)] = Complex(in[4 * h * in_stride], in[(4 * h + 2) * in_stride]);
      if (used % 2) buf[static_cast<size_t>(used / 2)] = Complex(in[2 * (used - 1) * in_stride], 0.0);
    } else {
      for (int64_t j = 0; j < used; ++j) buf[static_cast<size_t>(j)] = Complex(in[2 * j * in_stride], in[2 * j * in_stride + 1]);
    }
    fft_.run(buf.data(), 1, buf.data() + m);
    const Complex* z = buf.data() + m;
    for (int64_t k = 0; k < bins; ++k) {
      Complex v;
      if (!packed_) {
        v = z[k];
      } else {
        // Even samples' spectrum E = (Z[k] + conj Z[m - k]) / 2, odd O = (Z[k] - conj Z[m - k]) / 2i,
        // X[k] = E + w^k O for k <= m; X[n - k] = conj X[k].
        const int64_t kk = k <= m ? k : n_ - k;
        const Complex zk = z[kk == m ? 0 : kk], zc = std::conj(z[kk == 0 ? 0 : m - kk]);
        const Complex e = (zk + zc) * 0.5, d = (zk - zc) * 0.5;
        v = e + cmul(w_[static_cast<size_t>(kk)], Complex(d.imag(), -d.real()));
        if (k > m) v = std::conj(v);
      }
      out[2 * k * out_stride] = static_cast<T>(v.real() * scale);
      out[2 * k * out_stride + 1] = static_cast<T>(v.imag() * scale);
    }
  }

 private:
  int64_t n_;
  bool packed_;
  Fft fft_;
  std::vector<Complex> w_;
};

// Output 0 in the input's float type, written by fill(T*) directly for float32 and float64 (float16
// through float32).
template <typename F>
void floatOutput(KernelContext& ctx, DType dtype, Shape shape, const F& fill) {
  Tensor y = Tensor::uninitialized(dtype == DType::Float64 ? DType::Float64 : DType::Float32, std::move(shape));
  if (y.dtype() == DType::Float64) fill(y.data<double>());
  else fill(y.data<float>());
  ctx.outputs[0] = dtype == DType::Float16 ? y.cast(DType::Float16) : std::move(y);
}

// A [..., 1 or 2] float tensor as interleaved complex doubles [..., 2].
std::vector<double> complexOf(const KernelContext& ctx, const Tensor& x, const char* what) {
  if (!isFloat(x.dtype())) ctx.error(what, " is ", dtypeName(x.dtype()), "; expected float16, float32 or float64");
  const int64_t last = x.rank() ? x.dim(x.rank() - 1) : 0;
  if (last != 1 && last != 2)
    ctx.error(what, " has shape ", shapeStr(x.shape()), "; its last dimension must be 1 (real) or 2 (complex)");
  const Tensor xd = x.cast(DType::Float64);
  const int64_t count = x.numel() / last;
  std::vector<double> c(static_cast<size_t>(2 * count), 0.0);
  for (int64_t i = 0; i < count; ++i) {
    c[static_cast<size_t>(2 * i)] = xd.data<double>()[i * last];
    if (last == 2) c[static_cast<size_t>(2 * i + 1)] = xd.data<double>()[i * last + 1];
  }
  return c;
}

void dftKernel(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.rank() < 3) ctx.error("input has shape ", shapeStr(x.shape()), "; expected [batch, signal dims..., 1 or 2]");
  const std::vector<double> c = complexOf(ctx, x, "input");
  const bool real = x.dim(x.rank() - 1) == 1;
  const int64_t r = static_cast<int64_t>(x.rank());
  const int64_t axis_attr = ctx.node.attrInt("axis", 1);
  const int64_t axis = axis_attr < 0 ? axis_attr + r : axis_attr;
  if (axis < 1 || axis > r - 2)
    ctx.error("axis ", axis_attr, " is not a signal dimension of the input of shape ", shapeStr(x.shape()), " (expected 1 to ", r - 2,
              " or -", r - 1, " to -2)");
  const bool inverse = ctx.node.attrInt("inverse", 0) != 0, onesided = ctx.node.attrInt("onesided", 0) != 0;
  if (onesided && inverse) ctx.unsupported("onesided with inverse (an inverse real FFT) is not computed by lwc");
  if (onesided && !real) ctx.error("onesided needs a real input ([..., 1]); this one is complex ([..., 2])");
  const int64_t len = x.dim(static_cast<size_t>(axis));
  const int64_t n = ctx.has(1) ? intScalar(ctx, 1, "dft_length") : len;
  if (n < 1 || n > kMaxLength) ctx.error("dft_length is ", n, "; expected 1 to 2^31");
  const int64_t bins = onesided ? n / 2 + 1 : n;
  // [outer, len, inner] complex values in, [outer, bins, inner] out.
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.dim(static_cast<size_t>(d));
  for (int64_t d = axis + 1; d < r - 1; ++d) inner *= x.dim(static_cast<size_t>(d));
  Shape ys = x.shape();
  ys[static_cast<size_t>(axis)] = bins;
  ys.back() = 2;
  const Transform plan(n, inverse, real);
  const double scale = inverse ? 1.0 / static_cast<double>(n) : 1.0;
  // Each transform on its own: the same bits on any number of threads.
  floatOutput(ctx, x.dtype(), ys, [&](auto* y) {
    parallelFor(outer * inner, outer * inner * n >= 4096, [&](int64_t t) {
      thread_local std::vector<Complex> buf;
      const int64_t o = t / inner, i = t % inner;
      plan.run(c.data() + 2 * (o * len * inner + i), len, inner, bins, scale, y + 2 * (o * bins * inner + i), inner, buf);
    });
  });
}

void stftKernel(KernelContext& ctx) {
  const Tensor& s = ctx.in(0);
  if (s.rank() != 3) ctx.error("signal has shape ", shapeStr(s.shape()), "; expected [batch, length, 1 or 2]");
  const std::vector<double> c = complexOf(ctx, s, "signal");
  const bool real = s.dim(2) == 1;
  const int64_t batch = s.dim(0), length = s.dim(1);
  const int64_t step = intScalar(ctx, 1, "frame_step");
  if (step < 1) ctx.error("frame_step is ", step, "; expected at least 1");
  std::vector<double> window;
  if (ctx.has(2)) {
    const Tensor& w = ctx.in(2);
    if (w.rank() != 1) ctx.error("window has shape ", shapeStr(w.shape()), "; expected [window_length]");
    const Tensor wd = w.cast(DType::Float64);
    window.assign(wd.data<double>(), wd.data<double>() + wd.numel());
  }
  int64_t frame = ctx.has(3) ? intScalar(ctx, 3, "frame_length") : static_cast<int64_t>(window.size());
  if (!ctx.has(2) && !ctx.has(3)) ctx.error("neither a window nor frame_length is given; one sets the frame length");
  if (ctx.has(2) && ctx.has(3) && frame != static_cast<int64_t>(window.size()))
    ctx.error("frame_length ", frame, " differs from the window's length ", window.size());
  if (frame < 1 || frame > length)
    ctx.error("the frame length is ", frame, "; expected 1 to the signal's length ", length);
  const bool onesided = ctx.node.attrInt("onesided", 1) != 0;
  if (onesided && !real) ctx.error("onesided (the default) needs a real signal ([batch, length, 1]); set onesided 0 for a complex one");
  const int64_t frames = (length - frame) / step + 1, bins = onesided ? frame / 2 + 1 : frame;
  const Transform plan(frame, false, real);
  floatOutput(ctx, s.dtype(), {batch, frames, bins, 2}, [&](auto* y) {
    parallelFor(batch * frames, batch * frames * frame >= 4096, [&](int64_t t) {
      thread_local std::vector<double> windowed;
      thread_local std::vector<Complex> buf;
      windowed.resize(static_cast<size_t>(2 * frame));
      const int64_t b = t / frames, f = t % frames;
      const double* src = c.data() + 2 * (b * length + f * step);
      for (int64_t j = 0; j < frame; ++j) {
        const double w = window.empty() ? 1.0 : window[static_cast<size_t>(j)];
        windowed[static_cast<size_t>(2 * j)] = src[2 * j] * w;
        windowed[static_cast<size_t>(2 * j + 1)] = src[2 * j + 1] * w;
      }
      plan.run(windowed.data(), frame, 1, bins, 1.0, y + 2 * t * bins, 1, buf);
    });
  });
}

// a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), N = size (periodic) or size - 1 (symmetric).
void windowKernel(KernelContext& ctx, double a0, double a1, double a2) {
  const int64_t size = intScalar(ctx, 0, "size");
  if (size < 0 || size > kMaxLength) ctx.error("size is ", size, "; expected a length of 0 to 2^31");
  const bool periodic = ctx.node.attrInt("periodic", 1) != 0;
  const double denom = static_cast<double>(periodic ? size : size - 1);
  std::vector<double> w(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    const double a = 2 * std::numbers::pi * static_cast<double>(i) / denom;
    w[static_cast<size_t>(i)] = a0 - a1 * std::cos(a) + a2 * std::cos(2 * a);
  }
  ctx.outputs[0] = Tensor::fromVector<double>({size}, w).cast(outputDatatype(ctx));
}

double hzToMel(double hz) { return 2595 * std::log10(1 + hz / 700); }
double melToHz(double mel) { return 700 * (std::pow(10, mel / 2595) - 1); }

// Triangular filters between num_mel_bins + 2 points evenly spaced on the mel scale, each point
// mapped to the spectrogram bin floor((dft_length + 1) * hz / sample_rate), as ONNX's reference
// defines it. An upper edge whose own bin lies past the floor(dft_length / 2) + 1 bins is an error,
// as in ONNX Runtime.
void melWeightMatrixKernel(KernelContext& ctx) {
  const int64_t mels = intScalar(ctx, 0, "num_mel_bins"), dft = intScalar(ctx, 1, "dft_length"),
                rate = intScalar(ctx, 2, "sample_rate");
  const double lo = floatScalar(ctx, 3, "lower_edge_hertz"), hi = floatScalar(ctx, 4, "upper_edge_hertz");
  if (mels < 1 || dft < 1 || rate < 1)
    ctx.error("num_mel_bins ", mels, ", dft_length ", dft, " and sample_rate ", rate, " must each be at least 1");
  if (!(lo >= 0 && lo < hi)) ctx.error("the edges ", lo, " to ", hi, " Hz must satisfy 0 <= lower_edge_hertz < upper_edge_hertz");
  if (dft > kMaxLength || mels > kMaxLength / (dft / 2 + 1))
    ctx.error("num_mel_bins ", mels, " and dft_length ", dft, " make a matrix beyond what lwc computes (2^31 values)");
  const int64_t rows = dft / 2 + 1;
  const double lo_mel = hzToMel(lo), step = (hzToMel(hi) - lo_mel) / static_cast<double>(mels + 2);
  std::vector<int64_t> bin(static_cast<size_t>(mels + 2));
  for (int64_t i = 0; i < mels + 2; ++i)
    bin[static_cast<size_t>(i)] = static_cast<int64_t>(
        std::floor(static_cast<double>(dft + 1) * melToHz(lo_mel + step * static_cast<double>(i)) / static_cast<double>(rate)));
  const double top = std::floor(static_cast<double>(dft + 1) * hi / static_cast<double>(rate));
  if (top >= static_cast<double>(rows))
    ctx.error("upper_edge_hertz ", hi, " falls in bin ", top, ", past the ", rows,
              " bins of a dft_length ", dft, " spectrum at sample_rate ", rate, "; lower upper_edge_hertz");
  std::vector<double> m(static_cast<size_t>(rows * mels), 0.0);
  const auto set = [&](int64_t row, int64_t col, double v) { m[static_cast<size_t>(row * mels + col)] = v; };
  for (int64_t i = 0; i < mels; ++i) {
    const int64_t left = bin[static_cast<size_t>(i)], centre = bin[static_cast<size_t>(i + 1)], right = bin[static_cast<size_t>(i + 2)];
    if (centre == left) set(centre, i, 1);
    else
      for (int64_t j = left; j <= centre; ++j) set(j, i, static_cast<double>(j - left) / static_cast<double>(centre - left));
    for (int64_t j = centre; j < right; ++j) set(j, i, static_cast<double>(right - j) / static_cast<double>(right - centre));
  }
  ctx.outputs[0] = Tensor::fromVector<double>({rows, mels}, m).cast(outputDatatype(ctx));
}

}  // namespace

void registerSignalKernels(KernelRegistry& r) {
  // Opset 20's DFT (axis as an input) has no kernel: the load-time rewrite to opset 17 refuses it.
  r.addFn("DFT", 17, 19, dftKernel);
  r.addFn("STFT", 17, 22, stftKernel);
  r.addFn("HannWindow", 17, 22, [](KernelContext& ctx) { windowKernel(ctx, 0.5, 0.5, 0); });
  r.addFn("HammingWindow", 17, 22, [](KernelContext& ctx) { windowKernel(ctx, 25.0 / 46, 21.0 / 46, 0); });
  r.addFn("BlackmanWindow", 17, 22, [](KernelContext& ctx) { windowKernel(ctx, 0.42, 0.5, 0.08); });
  r.addFn("MelWeightMatrix", 17, 22, melWeightMatrixKernel);
}

}  // namespace lwc::engine
