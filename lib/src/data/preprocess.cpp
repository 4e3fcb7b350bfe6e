// The preprocessing JSON and the one routine that turns raw pixels from any source into model
// input, so that a PNG, an .npy array and an IDX record with the same pixels give the same floats.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "internal.h"
#include "lwc/json_text.h"

namespace lwc {

using nlohmann::json;

namespace {

std::string keyList() {
  std::string s;
  for (const auto& k : Preprocess::keys()) s += (s.empty() ? "" : ", ") + k;
  return s;
}

int64_t positiveInt(const json& v, const std::string& where, const char* key) {
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t(1) << 16))
    fail(where, ": \"", key, "\" must be a positive integer up to 65536 or [height, width] (got ", briefJson(v), ")");
  return v.get<int64_t>();
}

std::array<int64_t, 2> sizePair(const json& v, const std::string& where, const char* key) {
  if (!v.is_array() || v.size() != 2)
    fail(where, ": \"", key, "\" must be a positive integer up to 65536 or [height, width] (got ", briefJson(v), ")");
  return {positiveInt(v[0], where, key), positiveInt(v[1], where, key)};
}

std::vector<double> channelValues(const json& v, const std::string& where, const char* key, bool positive) {
  std::vector<double> out;
  const auto take = [&](const json& x) {
    if (!x.is_number() || !std::isfinite(x.get<double>()) || (positive && x.get<double>() <= 0))
      fail(where, ": \"", key, "\" must be ", positive ? "a positive number" : "a number",
           " or a list of one per channel (got ", briefJson(v), ")");
    out.push_back(x.get<double>());
  };
  if (v.is_array()) {
    if (v.size() != 1 && v.size() != 3)
      fail(where, ": \"", key, "\" must have 1 value or 3 (one per channel), not ", v.size());
    for (const auto& x : v) take(x);
  } else {
    take(v);
  }
  return out;
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

const std::vector<std::string>& Preprocess::keys() {
  static const std::vector<std::string> k = {"resize", "crop", "scale", "mean", "std", "color", "layout"};
  return k;
}

Preprocess Preprocess::fromJson(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": preprocessing must be a JSON object with keys ", keyList());
  Preprocess p;
  p.origin = where;
  for (const auto& [key, v] : j.items()) {
    if (key == "resize") {
      if (v.is_array())
        p.resize_hw = sizePair(v, where, "resize");
      else
        p.resize_short = positiveInt(v, where, "resize");
    } else if (key == "crop") {
      if (v.is_array()) {
        p.crop = sizePair(v, where, "crop");
      } else {
        const int64_t c = positiveInt(v, where, "crop");
        p.crop = {c, c};
      }
    } else if (key == "scale") {
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() == 0)
        fail(where, ": \"scale\" must be a non-zero number, e.g. 0.00392156862745098 for 1/255 (got ", briefJson(v), ")");
      p.scale = v.get<double>();
    } else if (key == "mean") {
      p.mean = channelValues(v, where, "mean", false);
    } else if (key == "std") {
      p.stddev = channelValues(v, where, "std", true);
    } else if (key == "color") {
      const std::string s = v.is_string() ? lower(v.get<std::string>()) : "";
      if (s == "gray" || s == "grey")
        p.color = Color::Gray;
      else if (s == "rgb")
        p.color = Color::Rgb;
      else if (s == "bgr")
        p.color = Color::Bgr;
      else
        fail(where, ": \"color\" must be \"gray\", \"rgb\" or \"bgr\" (got ", briefJson(v), ")");
    } else if (key == "layout") {
      const std::string s = v.is_string() ? lower(v.get<std::string>()) : "";
      if (s == "nchw")
        p.layout = Layout::NCHW;
      else if (s == "nhwc")
        p.layout = Layout::NHWC;
      else
        fail(where, ": \"layout\" must be \"NCHW\" or \"NHWC\" (got ", briefJson(v), ")");
    } else {
      fail(where, ": unknown preprocessing key \"", key, "\"", didYouMean(key, Preprocess::keys()), "; valid keys: ", keyList());
    }
  }
  return p;
}

Preprocess Preprocess::load(const std::filesystem::path& path) {
  const std::string text = data::readWholeFile(path, uint64_t(1) << 20);
  Preprocess pp = fromJson(parseJsonText(text, path.string()), path.string());
  pp.file = path;
  return pp;
}

json Preprocess::toJson() const {
  json j;
  if (resize_short)
    j["resize"] = resize_short;
  else if (resize_hw[0])
    j["resize"] = {resize_hw[0], resize_hw[1]};
  else
    j["resize"] = nullptr;
  j["crop"] = crop[0] ? json{crop[0], crop[1]} : json(nullptr);
  j["scale"] = scale;
  j["mean"] = mean.empty() ? std::vector<double>{0.0} : mean;
  j["std"] = stddev.empty() ? std::vector<double>{1.0} : stddev;
  j["color"] = !color ? json(nullptr) : json(*color == Color::Gray ? "gray" : *color == Color::Rgb ? "rgb" : "bgr");
  j["layout"] = !layout ? json(nullptr) : json(*layout == Layout::NCHW ? "NCHW" : "NHWC");
  return j;
}

namespace data {

namespace {

bool channelCount(int64_t c) { return c == 1 || c == 3; }
std::string dimStr(int64_t d) { return d < 0 ? "?" : std::to_string(d); }
const char* layoutName(Preprocess::Layout l) { return l == Preprocess::Layout::NCHW ? "NCHW" : "NHWC"; }

template <typename T>
constexpr float maxValue() {
  return sizeof(T) == 1 ? 255.0f : 65535.0f;
}

}  // namespace

bool shapeMatches(const Shape& actual, const std::vector<int64_t>& wanted) {
  if (actual.size() != wanted.size()) return false;
  for (size_t i = 0; i < actual.size(); ++i)
    if (wanted[i] >= 0 && wanted[i] != actual[i]) return false;
  return true;
}

std::string modelShapeStr(const std::vector<int64_t>& s) {
  std::string r = "[?";
  for (int64_t d : s) {
    r += ',';
    r += dimStr(d);
  }
  return r + "]";
}

ImagePipeline::ImagePipeline(const Preprocess& pp, const std::vector<int64_t>& ss) : pp_(pp), sample_shape_(ss) {
  if (pp.layout) {
    layout_ = *pp.layout;
  } else if (ss.size() == 3 && !channelCount(ss[0]) && channelCount(ss[2])) {
    layout_ = Preprocess::Layout::NHWC;
  }
  if (ss.size() == 3) {
    image_shape_ = true;
    const bool nchw = layout_ == Preprocess::Layout::NCHW;
    model_c_ = nchw ? ss[0] : ss[2];
    model_h_ = nchw ? ss[1] : ss[0];
    model_w_ = nchw ? ss[2] : ss[1];
    if (model_c_ >= 0 && !channelCount(model_c_)) {
      const bool other = channelCount(nchw ? ss[2] : ss[0]);
      fail(pp.origin, ": the model input ", modelShapeStr(ss), " read as ", layoutName(layout_), " has ", model_c_,
           " channels, but images give 1 (gray) or 3 (rgb)",
           other ? std::string("; set \"layout\": \"") + (nchw ? "NHWC" : "NCHW") + "\"" : std::string());
    }
  } else if (!ss.empty()) {
    for (int64_t d : ss)
      if (d < 0)
        fail("the model input ", modelShapeStr(ss), " is not an image input ([N,C,H,W] or [N,H,W,C]) and has symbolic dims; "
             "give the data as a float32 .npy of shape [N, ...] instead");
  }
  const int64_t want = pp.color ? (*pp.color == Preprocess::Color::Gray ? 1 : 3) : model_c_;
  if (pp.color && model_c_ >= 0 && want != model_c_)
    fail(pp.origin, ": \"color\": \"", *pp.color == Preprocess::Color::Gray ? "gray" : "rgb/bgr", "\" gives ", want,
         " channel(s) but the model input ", modelShapeStr(ss), " wants ", model_c_, "; set \"color\": \"",
         model_c_ == 1 ? "gray" : "rgb", "\" (or use preprocessing made for this model)");
  if (want > 0) {
    for (const auto* v : {&pp.mean, &pp.stddev})
      if (v->size() > 1 && static_cast<int64_t>(v->size()) != want)
        fail(pp.origin, ": \"", v == &pp.mean ? "mean" : "std", "\" has ", v->size(), " values but the model input has ",
             want, " channel(s)");
  }
}

const std::vector<float>& ImagePipeline::lutFor(int64_t channels, const std::string& where) {
  if (lut_channels_ == channels) return lut_;
  for (const auto* v : {&pp_.mean, &pp_.stddev})
    if (v->size() > 1 && static_cast<int64_t>(v->size()) != channels)
      fail(where, ": the image has ", channels, " channel(s) but \"", v == &pp_.mean ? "mean" : "std", "\" in ", pp_.origin,
           " has ", v->size(), " values");
  lut_.assign(static_cast<size_t>(channels) * 256, 0.0f);
  for (int64_t c = 0; c < channels; ++c) {
    const double m = pp_.mean.empty() ? 0.0 : pp_.mean[pp_.mean.size() == 1 ? 0 : c];
    const double s = pp_.stddev.empty() ? 1.0 : pp_.stddev[pp_.stddev.size() == 1 ? 0 : c];
    for (int v = 0; v < 256; ++v) lut_[c * 256 + v] = static_cast<float>((v * pp_.scale - m) / s);
  }
  lut_channels_ = channels;
  return lut_;
}

Shape ImagePipeline::run(const PixelView& in, std::vector<float>& out, const std::string& where) {
  if (in.h <= 0 || in.w <= 0) fail(where, ": image has no pixels");
  if (in.c < 1 || in.c > 4) fail(where, ": image has ", in.c, " channels; only 1 to 4 are supported");
  return in.p16 ? runT<uint16_t>(in, in.p16, out, where) : runT<uint8_t>(in, in.p8, out, where);
}

template <typename T>
Shape ImagePipeline::runT(const PixelView& in, const T* src, std::vector<float>& out, const std::string& where) {
  std::vector<T>& a = [this]() -> std::vector<T>& {
    if constexpr (sizeof(T) == 1) return s8a_; else return s16a_;
  }();
  std::vector<T>& b = [this]() -> std::vector<T>& {
    if constexpr (sizeof(T) == 1) return s8b_; else return s16b_;
  }();
  const int64_t src_c = in.c == 2 ? 1 : in.c == 4 ? 3 : in.c;  // alpha is dropped
  int64_t tc = src_c;
  if (pp_.color) {
    tc = *pp_.color == Preprocess::Color::Gray ? 1 : 3;
  } else if (model_c_ > 0 && src_c != model_c_) {
    fail(where, ": image has ", src_c, " channel", src_c == 1 ? "" : "s", " but the model input wants ", model_c_,
         "; set \"color\": \"", model_c_ == 1 ? "gray" : "rgb", "\" in the preprocessing JSON to convert");
  }
  const bool bgr = pp_.color && *pp_.color == Preprocess::Color::Bgr;

  // 1. Channels: to interleaved HWC with tc channels.
  int64_t h = in.h, w = in.w;
  a.resize(static_cast<size_t>(h * w * tc));
  {
    T* d = a.data();
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const T* p = src + y * in.sy + x * in.sx;
        if (src_c == tc) {
          if (tc == 1) {
            *d++ = p[0];
          } else {
            const T r = p[0], g = p[in.sc], bl = p[2 * in.sc];
            *d++ = bgr ? bl : r;
            *d++ = g;
            *d++ = bgr ? r : bl;
          }
        } else if (src_c == 1) {
          d[0] = d[1] = d[2] = p[0];
          d += 3;
        } else {
          // ITU-R 601-2 luma with Pillow's fixed-point rounding (L = R*299/1000 + G*587/1000 + B*114/1000).
          *d++ = static_cast<T>((uint64_t(p[0]) * 19595 + uint64_t(p[in.sc]) * 38470 + uint64_t(p[2 * in.sc]) * 7471 + 0x8000) >> 16);
        }
      }
  }

  // 2. Resize: bilinear, half-pixel centres, no antialiasing, rounded back to whole levels.
  int64_t oh = 0, ow = 0;
  if (pp_.resize_short) {
    const int64_t s = pp_.resize_short, sh = std::min(h, w), lg = std::max(h, w);
    const auto nl = static_cast<int64_t>(static_cast<double>(s) * static_cast<double>(lg) / static_cast<double>(sh));
    oh = w <= h ? nl : s;
    ow = w <= h ? s : nl;
  } else if (pp_.resize_hw[0]) {
    oh = pp_.resize_hw[0];
    ow = pp_.resize_hw[1];
  }
  if (oh > 0 && (oh != h || ow != w)) {
    if (oh * ow > (int64_t(1) << 28)) fail(where, ": resizing to ", oh, "x", ow, " is too large");
    struct Tap {
      int64_t i0, i1;
      float l0, l1;
    };
    const auto taps = [](int64_t in_size, int64_t out_size) {
      std::vector<Tap> t(static_cast<size_t>(out_size));
      const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
      for (int64_t o = 0; o < out_size; ++o) {
        float s = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
        if (s < 0) s = 0;
        const auto i0 = static_cast<int64_t>(s);
        const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
        const float l1 = s - static_cast<float>(i0);
        t[o] = {i0, i1, 1.0f - l1, l1};
      }
      return t;
    };
    const auto ty = taps(h, oh), tx = taps(w, ow);
    b.resize(static_cast<size_t>(oh * ow * tc));
    T* d = b.data();
    const T* s = a.data();
    for (int64_t y = 0; y < oh; ++y) {
      const T* r0 = s + ty[y].i0 * w * tc;
      const T* r1 = s + ty[y].i1 * w * tc;
      for (int64_t x = 0; x < ow; ++x) {
        const Tap& t = tx[x];
        for (int64_t c = 0; c < tc; ++c) {
          const float top = t.l0 * r0[t.i0 * tc + c] + t.l1 * r0[t.i1 * tc + c];
          const float bot = t.l0 * r1[t.i0 * tc + c] + t.l1 * r1[t.i1 * tc + c];
          const float v = std::nearbyint(ty[y].l0 * top + ty[y].l1 * bot);
          *d++ = static_cast<T>(std::clamp(v, 0.0f, maxValue<T>()));
        }
      }
    }
    std::swap(a, b);
    h = oh;
    w = ow;
  }

  // 3. Centre crop (torchvision's offsets: round half to even).
  int64_t y0 = 0, x0 = 0, H = h, W = w;
  if (pp_.crop[0]) {
    const int64_t ch = pp_.crop[0], cw = pp_.crop[1];
    if (ch > h || cw > w)
      fail(where, ": ", h, "x", w, pp_.resize_short || pp_.resize_hw[0] ? " after resizing" : "", " is smaller than the crop ",
           ch, "x", cw, "; set \"resize\" to at least the crop size");
    y0 = static_cast<int64_t>(std::nearbyint((h - ch) / 2.0));
    x0 = static_cast<int64_t>(std::nearbyint((w - cw) / 2.0));
    H = ch;
    W = cw;
  }

  if (image_shape_ && ((model_h_ >= 0 && H != model_h_) || (model_w_ >= 0 && W != model_w_)))
    fail(where, ": ", H, "x", W, " after preprocessing but the model wants ", dimStr(model_h_), "x", dimStr(model_w_),
         "; add \"resize\"/\"crop\" to the preprocessing JSON");

  // 4. scale, mean, std and layout.
  out.resize(static_cast<size_t>(tc * H * W));
  const bool nchw = layout_ == Preprocess::Layout::NCHW;
  const T* s = a.data();
  if constexpr (sizeof(T) == 1) {
    const std::vector<float>& lut = lutFor(tc, where);
    for (int64_t y = 0; y < H; ++y) {
      const T* row = s + ((y + y0) * w + x0) * tc;
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < tc; ++c) {
          const float v = lut[c * 256 + row[x * tc + c]];
          out[nchw ? (c * H + y) * W + x : (y * W + x) * tc + c] = v;
        }
    }
  } else {
    lutFor(tc, where);  // validates mean/std against the channel count
    for (int64_t y = 0; y < H; ++y) {
      const T* row = s + ((y + y0) * w + x0) * tc;
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < tc; ++c) {
          const double m = pp_.mean.empty() ? 0.0 : pp_.mean[pp_.mean.size() == 1 ? 0 : c];
          const double sd = pp_.stddev.empty() ? 1.0 : pp_.stddev[pp_.stddev.size() == 1 ? 0 : c];
          // 16-bit samples map onto the same 0..255 range, so scale/mean/std apply unchanged.
          const double raw = row[x * tc + c] * (255.0 / 65535.0);
          out[nchw ? (c * H + y) * W + x : (y * W + x) * tc + c] = static_cast<float>((raw * pp_.scale - m) / sd);
        }
    }
  }
  Shape shape = nchw ? Shape{tc, H, W} : Shape{H, W, tc};
  if (!sample_shape_.empty() && !image_shape_) {
    if (numelOf(sample_shape_) != tc * H * W)
      fail(where, ": ", shapeStr(shape), " after preprocessing (", tc * H * W, " values) but the model input ",
           modelShapeStr(sample_shape_), " takes ", numelOf(sample_shape_), " values per sample; add \"resize\"/\"crop\"");
    shape = sample_shape_;
  }
  return shape;
}

void BatchBuilder::add(const Shape& shape, const std::vector<float>& values, const std::string& where) {
  LWC_CHECK(count_ < n_, "batch overfilled");
  if (count_ == 0) {
    first_ = shape;
    first_where_ = where;
    Shape full{n_};
    full.insert(full.end(), shape.begin(), shape.end());
    t_ = recycle_ ? recycledTensor(*recycle_, DType::Float32, full) : Tensor::uninitialized(DType::Float32, full);
  } else if (shape != first_) {
    fail(where, ": preprocessed to ", shapeStr(shape), " but ", first_where_, " in the same batch gives ", shapeStr(first_),
         "; add \"resize\" and \"crop\" to the preprocessing JSON so all images have one size");
  }
  LWC_CHECK(static_cast<int64_t>(values.size()) == numelOf(shape), "sample size mismatch");
  std::memcpy(t_.data<float>() + count_ * numelOf(shape), values.data(), values.size() * sizeof(float));
  ++count_;
}

Tensor BatchBuilder::finish() {
  LWC_CHECK(count_ == n_, "batch underfilled");
  if (out_ == DType::Float32) return t_;
  LWC_CHECK(out_ == DType::Float16, "image batches are float32 or float16");
  return t_.cast(DType::Float16);
}

Tensor recycledTensor(Tensor& recycle, DType dtype, const Shape& shape) {
  if (recycle.dtype() != dtype || recycle.shape() != shape || !recycle.uniqueBuffer())
    recycle = Tensor::uninitialized(dtype, shape);
  return recycle;
}

DType imageBatchType(DType model_input, const std::string& where) {
  if (model_input == DType::Undefined || model_input == DType::Float32) return DType::Float32;
  if (model_input == DType::Float16) return DType::Float16;
  fail(where, ": the model input is ", dtypeName(model_input), " but preprocessed images are float32 (or float16)");
}

}  // namespace data
}  // namespace lwc
