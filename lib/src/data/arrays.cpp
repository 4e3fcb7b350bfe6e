// Array sources: .npy files, .npz archives and IDX (MNIST) files. All stream their records batch by
// batch from a ByteStream; uint8 records are images and go through the preprocessing pipeline,
// records of the model's own dtype are used as stored.
#include <algorithm>
#include <optional>
#include <cmath>
#include <cstring>
#include <regex>
#include <sstream>

#include "internal.h"
#include "lwc/model_io.h"

namespace lwc::data {

namespace {

DType npyDtype(const std::string& d, const std::string& where) {
  if (d.size() < 3 || (d[0] != '<' && d[0] != '|' && d[0] != '='))
    fail(where, ": unsupported .npy dtype '", d, "' (big-endian or unknown); save it little-endian");
  static const std::pair<const char*, DType> kTypes[] = {
      {"f4", DType::Float32}, {"f2", DType::Float16}, {"f8", DType::Float64}, {"i1", DType::Int8},
      {"u1", DType::UInt8},   {"i2", DType::Int16},   {"u2", DType::UInt16},  {"i4", DType::Int32},
      {"i8", DType::Int64},   {"u4", DType::UInt32},  {"u8", DType::UInt64},  {"b1", DType::Bool}};
  for (const auto& [n, t] : kTypes)
    if (d.compare(1, std::string::npos, n) == 0) return t;
  fail(where, ": unsupported .npy dtype '", d, "'");
}

bool channelLike(int64_t d) { return d == 1 || d == 3 || d == 4; }

/// Where the labels come from, already read and checked against the sample count.
struct Labels {
  std::vector<int64_t> values;
  std::string from;  ///< for describe(); empty when there are none
};

Labels takeLabelFile(const fs::path& lp, int64_t n, const std::string& data_name, const char* what, int64_t num_classes) {
  LabelFile lf = readLabelFile(lp, num_classes);
  if (!lf.files.empty())
    fail(show(lp), ": CSV labels name files, but ", data_name, " is an array; give one label per line in sample order");
  if (static_cast<int64_t>(lf.labels.size()) != n)
    fail(show(lp), " has ", lf.labels.size(), " ", lf.unit, " but ", data_name, " holds ", n, " ", what);
  return {std::move(lf.labels), lp.filename().string()};
}

/// Records of one array, streamed.
struct ArraySpec {
  std::unique_ptr<ByteStream> stream;
  uint64_t header_bytes = 0;
  DType dtype = DType::Undefined;
  Shape shape;          ///< full array shape, [N, ...]
  std::string where;    ///< full name for errors ("x.npz member 'images'")
  std::string short_name;  ///< for sampleName(): "images.npy"
  std::string kind;     ///< "NumPy", "NumPy .npz", "IDX"
  std::string path;     ///< the path the user gave
};

class ArrayDataset final : public Dataset {
 public:
  ArrayDataset(ArraySpec spec, Labels labels, const DataOptions& o, const Preprocess& pp)
      : a_(std::move(spec)), labels_(std::move(labels)) {
    if (a_.shape.empty()) fail(a_.where, ": a scalar is not a dataset; expected an array [N, ...]");
    total_ = a_.shape[0];
    if (total_ == 0) fail(a_.where, " holds no samples");
    n_ = o.limit > 0 ? std::min(o.limit, total_) : total_;
    record_shape_.assign(a_.shape.begin() + 1, a_.shape.end());
    const DType want = o.dtype == DType::Undefined ? DType::Float32 : o.dtype;
    images_ = a_.dtype == DType::UInt8 && want != DType::UInt8;
    if (images_) {
      if (record_shape_.size() == 2) {
        h_ = record_shape_[0], w_ = record_shape_[1], c_ = 1;
      } else if (record_shape_.size() == 3) {
        const bool c_first = channelLike(record_shape_[0]), c_last = channelLike(record_shape_[2]);
        bool hwc = c_last && !c_first;
        if (c_first && c_last) {
          // Ambiguous (e.g. [N,3,4,3]): follow the preprocessing's or the model's layout, unless
          // only one reading has the model's height and width (a [N,4,5,3] array of 4x5 RGB images
          // for a [N,3,4,5] model was read as four channels of 5x3 and resized without a word).
          const auto& ss = o.sample_shape;
          std::optional<bool> model_hwc;
          if (pp.layout) model_hwc = *pp.layout == Preprocess::Layout::NHWC;
          else if (ss.size() == 3 && channelLike(ss[0]) != channelLike(ss[2])) model_hwc = channelLike(ss[2]);
          hwc = model_hwc.value_or(false);
          if (model_hwc && ss.size() == 3) {
            const int64_t mh = *model_hwc ? ss[0] : ss[1], mw = *model_hwc ? ss[1] : ss[2];
            auto fits = [&](int64_t h, int64_t w) { return (mh < 0 || h == mh) && (mw < 0 || w == mw); };
            const bool as_hwc = fits(record_shape_[0], record_shape_[1]), as_chw = fits(record_shape_[1], record_shape_[2]);
            if (as_hwc != as_chw) hwc = as_hwc;
          }
        } else if (!c_first && !c_last) {
          fail(a_.where, ": uint8 array ", shapeStr(a_.shape), " is not images [N,H,W], [N,C,H,W] or [N,H,W,C] with 1, 3 or 4 channels");
        }
        chw_ = !hwc;
        c_ = hwc ? record_shape_[2] : record_shape_[0];
        h_ = hwc ? record_shape_[0] : record_shape_[1];
        w_ = hwc ? record_shape_[1] : record_shape_[2];
      } else {
        fail(a_.where, ": uint8 array ", shapeStr(a_.shape), " is not images [N,H,W], [N,C,H,W] or [N,H,W,C]");
      }
      out_ = imageBatchType(o.dtype, a_.where);
      pipeline_.emplace(pp, o.sample_shape);
    } else {
      if (pp.origin != Preprocess{}.origin) ignored_preprocess_ = pp.origin;
      if (a_.dtype != want)
        fail(a_.where, ": holds ", dtypeName(a_.dtype), " ", shapeStr(a_.shape), "; only uint8 arrays are treated as images, "
             "anything else is fed to the model as stored and must be ", dtypeName(want), " (e.g. .astype(np.",
             dtypeName(want), "))");
      if (!o.sample_shape.empty() && !shapeMatches(record_shape_, o.sample_shape))
        fail(a_.where, ": ", dtypeName(a_.dtype), " array ", shapeStr(a_.shape), " does not match the model input ",
             modelShapeStr(o.sample_shape), "; it must be [N, ...] with the model's per-sample shape");
    }
    record_bytes_ = static_cast<uint64_t>(numelOf(record_shape_)) * dtypeSize(a_.dtype);
    if (record_bytes_ == 0) fail(a_.where, ": samples of shape ", shapeStr(record_shape_), " hold no values");
    if (record_bytes_ > (uint64_t(1) << 30)) fail(a_.where, ": samples of ", record_bytes_, " bytes each are implausibly large");
    if (!labels_.values.empty()) labels_.values.resize(static_cast<size_t>(n_));
    if (images_) {  // preprocess the first image now, so a mismatch shows before any work is done
      next(1);
      reset();
    }
  }

  int64_t size() const override { return n_; }
  bool hasLabels() const override { return !labels_.values.empty(); }
  std::string describe() const override {
    std::ostringstream s;
    s << a_.kind << " '" << a_.path << "' (";
    if (n_ < total_) s << "first " << n_ << " of ";
    s << total_ << (images_ ? " uint8 images " : " samples ");
    if (images_)
      s << (chw_ ? std::to_string(c_) + "x" : "") << h_ << "x" << w_ << (!chw_ && record_shape_.size() == 3 ? "x" + std::to_string(c_) : "");
    else
      s << dtypeName(a_.dtype) << " " << shapeStr(record_shape_);
    s << (labels_.from.empty() ? ", no labels" : ", labels from " + labels_.from) << ")";
    return s.str();
  }

  std::optional<Batch> next(int64_t n) override {
    LWC_CHECK(n > 0, "batch size must be positive");
    const int64_t k = std::min(n, n_ - pos_);
    if (k <= 0) return std::nullopt;
    Batch b;
    b.first_index = pos_;
    const uint64_t bytes = record_bytes_ * static_cast<uint64_t>(k);
    if (images_) {
      buf_.resize(bytes);
      readRecords(buf_.data(), bytes, k);
      BatchBuilder bb(k, out_, &recycle_);
      for (int64_t i = 0; i < k; ++i) {
        const uint8_t* p = buf_.data() + record_bytes_ * static_cast<uint64_t>(i);
        const PixelView v = chw_ ? PixelView::chw(p, c_, h_, w_) : PixelView::hwc(p, h_, w_, c_);
        const std::string where = a_.where + "[" + std::to_string(pos_ + i) + "]";
        bb.add(pipeline_->run(v, scratch_, where), scratch_, where);
      }
      b.inputs = bb.finish();
    } else {
      Shape full{k};
      full.insert(full.end(), record_shape_.begin(), record_shape_.end());
      b.inputs = recycledTensor(recycle_, a_.dtype, full);
      readRecords(static_cast<uint8_t*>(b.inputs.raw()), bytes, k);
      b.inputs.normalizeBools();
      checkFinite(b.inputs);
    }
    if (hasLabels()) b.labels.assign(labels_.values.begin() + pos_, labels_.values.begin() + pos_ + k);
    pos_ += k;
    return b;
  }

  void reset() override {
    a_.stream->rewind();
    if (!a_.stream->skip(a_.header_bytes)) fail(a_.where, ": cannot seek past the header");
    pos_ = 0;
  }

  std::string sampleName(int64_t i) const override { return a_.short_name + "[" + std::to_string(i) + "]"; }
  std::optional<Preprocess> preprocessing() const override {
    if (!pipeline_) return std::nullopt;
    return pipeline_->preprocess();
  }
  std::string ignoredPreprocessing() const override { return ignored_preprocess_; }

 private:
  // Float samples are fed as stored: NaN or infinity there would flow through every layer (lsq
  // recovery fitted to NaN activations reported a near-zero error and wrote a model).
  void checkFinite(const Tensor& t) const {
    if (!isFloat(t.dtype())) return;
    const int64_t per = std::max<int64_t>(numelOf(record_shape_), 1);
    auto bad = [&](int64_t i) {
      fail(a_.where, ": sample ", pos_ + i / per, " holds NaN or infinity; the model's inputs must be finite numbers");
    };
    if (t.dtype() == DType::Float32) {
      const float* v = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(v[i])) bad(i);
    } else {
      for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t.at(i))) bad(i);
    }
  }

  void readRecords(uint8_t* dst, uint64_t bytes, int64_t k) {
    const size_t got = a_.stream->read(dst, bytes);
    if (got != bytes)
      fail(a_.where, ": the data ends inside sample ", pos_ + static_cast<int64_t>(got / record_bytes_), " of the ", total_,
           " its header declares (truncated file?)");
  }

  ArraySpec a_;
  Labels labels_;
  int64_t total_ = 0, n_ = 0, pos_ = 0;
  Shape record_shape_;
  uint64_t record_bytes_ = 0;
  bool images_ = false, chw_ = false;
  Tensor recycle_;  ///< the last batch's tensor, reused once the caller has let go of it
  int64_t h_ = 0, w_ = 0, c_ = 1;
  std::optional<ImagePipeline> pipeline_;
  DType out_ = DType::Float32;  ///< of image batches: float16 for a half-precision model input
  std::vector<uint8_t> buf_;
  std::vector<float> scratch_;
  std::string ignored_preprocess_;
};

/// Reads a whole small array from a stream positioned after its header.
Tensor readWhole(ByteStream& s, const NpyHeader& h, const std::string& where) {
  Tensor t(h.dtype, h.shape);
  s.readExact(t.raw(), t.nbytes(), where, "array data");
  t.normalizeBools();
  return t;
}

}  // namespace

NpyHeader readNpyHeader(ByteStream& s, const std::string& where) {
  unsigned char pre[12];
  if (s.read(pre, 10) != 10 || std::memcmp(pre, "\x93NUMPY", 6) != 0) fail(where, ": not a .npy file (bad magic)");
  NpyHeader h;
  uint64_t len = 0;
  if (pre[6] == 1) {
    len = pre[8] | uint64_t(pre[9]) << 8;
    h.header_bytes = 10;
  } else if (pre[6] == 2 || pre[6] == 3) {
    s.readExact(pre + 10, 2, where, ".npy header");
    len = pre[8] | uint64_t(pre[9]) << 8 | uint64_t(pre[10]) << 16 | uint64_t(pre[11]) << 24;
    h.header_bytes = 12;
  } else {
    fail(where, ": unsupported .npy format version ", int(pre[6]));
  }
  if (len > (1u << 20)) fail(where, ": .npy header of ", len, " bytes is implausibly large (corrupt file?)");
  std::string header(len, '\0');
  s.readExact(header.data(), len, where, ".npy header");
  h.header_bytes += len;
  std::smatch m;
  static const std::regex descr_re(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex order_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  if (!std::regex_search(header, m, descr_re)) fail(where, ": .npy header has no 'descr'");
  h.dtype = npyDtype(m[1], where);
  if (!std::regex_search(header, m, order_re)) fail(where, ": .npy header has no 'fortran_order'");
  if (m[1] == "True") fail(where, ": Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  if (!std::regex_search(header, m, shape_re)) fail(where, ": .npy header has no 'shape'");
  std::stringstream ss(m[1].str());
  std::string item;
  double count = 1;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    int64_t d = -1;
    try {
      d = std::stoll(item);
    } catch (const std::exception&) {
      fail(where, ": bad .npy shape '", m[1].str(), "'");
    }
    if (d < 0) fail(where, ": negative dimension in .npy shape");
    h.shape.push_back(d);
    count *= static_cast<double>(d);
  }
  if (count * static_cast<double>(dtypeSize(h.dtype)) > 9.0e18) fail(where, ": .npy shape ", shapeStr(h.shape), " is implausibly large");
  return h;
}

std::unique_ptr<Dataset> openNpy(const fs::path& p, const DataOptions& o, const Preprocess& pp) {
  ArraySpec a;
  a.where = show(p);
  a.path = show(p);
  a.short_name = p.filename().string();
  a.kind = "NumPy";
  a.stream = openFileStream(p);
  const NpyHeader h = readNpyHeader(*a.stream, a.where);
  const uint64_t fsize = File(p).size();
  if (h.header_bytes + h.dataBytes() > fsize)
    fail(a.where, ": header declares ", dtypeName(h.dtype), " ", shapeStr(h.shape), " (", h.dataBytes(),
         " bytes) but the file holds only ", fsize - h.header_bytes, " data bytes (truncated?)");
  a.header_bytes = h.header_bytes;
  a.dtype = h.dtype;
  a.shape = h.shape;
  Labels labels;
  const int64_t n = h.shape.empty() ? 0 : h.shape[0];
  if (!o.labels.empty()) {
    labels = takeLabelFile(o.labels, n, a.where, "samples", o.num_classes);
  } else {
    std::optional<fs::path> lp;
    const std::string fname = p.filename().string();
    if (const size_t at = fname.find("images"); at != std::string::npos) {
      std::string ln = fname;
      ln.replace(at, 6, "labels");
      if (fs::is_regular_file(p.parent_path() / ln)) lp = p.parent_path() / ln;
    }
    if (!lp) lp = findLabelsIn(folderOf(p));
    if (lp && fs::equivalent(*lp, p)) lp.reset();
    if (lp) labels = takeLabelFile(*lp, n, a.where, "samples", o.num_classes);
  }
  return std::make_unique<ArrayDataset>(std::move(a), std::move(labels), o, pp);
}

std::unique_ptr<Dataset> openNpz(const fs::path& p, const DataOptions& o, const Preprocess& pp) {
  const std::string where = show(p);
  ZipArchive zip(p);
  std::vector<std::pair<std::string, const ZipEntry*>> arrays;
  for (const auto& e : zip.entries()) {
    if (e.name.size() > 4 && e.name.compare(e.name.size() - 4, 4, ".npy") == 0)
      arrays.emplace_back(e.name.substr(0, e.name.size() - 4), &e);
  }
  const auto find = [&](std::initializer_list<const char*> names) -> const std::pair<std::string, const ZipEntry*>* {
    for (const char* n : names)
      for (const auto& a : arrays)
        if (a.first == n) return &a;
    return nullptr;
  };
  const auto* lab = find({"y", "labels", "label"});
  const auto* img = find({"x", "images", "data"});
  if (!img) {
    std::vector<const std::pair<std::string, const ZipEntry*>*> rest;
    for (const auto& a : arrays)
      if (&a != lab) rest.push_back(&a);
    if (rest.size() != 1) {
      std::string keys;
      for (const auto& a : arrays) keys += (keys.empty() ? "" : ", ") + a.first;
      fail(where, ": cannot tell which array holds the images (arrays: ", keys.empty() ? "none" : keys,
           "); name it \"x\", \"images\" or \"data\" and the labels \"y\", \"labels\" or \"label\"");
    }
    img = rest.front();
  }
  ArraySpec a;
  a.where = where + " array '" + img->first + "'";
  a.path = where;
  a.short_name = p.filename().string() + ":" + img->first;
  a.kind = "NumPy .npz";
  a.stream = zip.open(*img->second);
  const NpyHeader h = readNpyHeader(*a.stream, a.where);
  if (h.header_bytes + h.dataBytes() != img->second->uncompressed)
    fail(a.where, ": header declares ", dtypeName(h.dtype), " ", shapeStr(h.shape), " (", h.dataBytes(), " bytes) but the member holds ",
         img->second->uncompressed - std::min(img->second->uncompressed, h.header_bytes), " data bytes (corrupt archive?)");
  a.header_bytes = h.header_bytes;
  a.dtype = h.dtype;
  a.shape = h.shape;
  const int64_t n = h.shape.empty() ? 0 : h.shape[0];
  Labels labels;
  if (!o.labels.empty()) {
    labels = takeLabelFile(o.labels, n, a.where, "samples", o.num_classes);
  } else if (lab) {
    const std::string lw = where + " array '" + lab->first + "'";
    auto ls = zip.open(*lab->second);
    const NpyHeader lh = readNpyHeader(*ls, lw);
    if (!isInteger(lh.dtype)) fail(lw, ": labels must be integers, not ", dtypeName(lh.dtype));
    if (!(lh.shape.size() == 1 || (lh.shape.size() == 2 && lh.shape[1] == 1)))
      fail(lw, ": labels must be a 1-D array [N], not ", shapeStr(lh.shape));
    if (lh.shape[0] != n) fail(lw, " has ", lh.shape[0], " labels but ", a.where, " holds ", n, " samples");
    if (lh.header_bytes + lh.dataBytes() != lab->second->uncompressed) fail(lw, ": header and member size disagree (corrupt archive?)");
    const Tensor t = readWhole(*ls, lh, lw);
    labels.values = labelValues(t, lw);
    checkLabelRange(labels.values, o.num_classes, lw);
    labels.from = p.filename().string() + ":" + lab->first;
  }
  return std::make_unique<ArrayDataset>(std::move(a), std::move(labels), o, pp);
}

std::unique_ptr<Dataset> openIdx(const fs::path& p, const DataOptions& o, const Preprocess& pp) {
  const std::string where = show(p);
  ArraySpec a;
  a.where = where;
  a.path = where;
  a.short_name = p.filename().string();
  a.kind = "IDX";
  a.stream = openGzipStream(p);
  unsigned char m[4];
  a.stream->readExact(m, 4, where, "IDX header");
  if (m[0] != 0 || m[1] != 0) fail(where, ": not an IDX file (bad magic)");
  if (m[2] == 8 && m[3] == 1)
    fail(where, ": this is an IDX labels file; give the images file (…-images-idx3-ubyte) as the data and this one as the labels");
  if (m[2] != 8) fail(where, ": IDX element type 0x", std::hex, int(m[2]), " is not supported; only unsigned bytes (0x08) are");
  if (m[3] != 3) fail(where, ": IDX images must have 3 dimensions [N,H,W], this file has ", int(m[3]));
  for (int i = 0; i < 3; ++i) {
    unsigned char d[4];
    a.stream->readExact(d, 4, where, "IDX header");
    a.shape.push_back(int64_t(d[0]) << 24 | int64_t(d[1]) << 16 | int64_t(d[2]) << 8 | d[3]);
  }
  a.header_bytes = 16;
  a.dtype = DType::UInt8;
  const int64_t n = a.shape[0], h = a.shape[1], w = a.shape[2];
  if (h == 0 || w == 0 || h > (1 << 16) || w > (1 << 16)) fail(where, ": IDX header declares implausible images of ", h, "x", w);
  const uint64_t expected = 16 + uint64_t(n) * uint64_t(h) * uint64_t(w);
  const bool gz = isGzip(p);
  // Cheap check first (file size, or the gzip trailer's length mod 2^32); count the bytes for real
  // only when it disagrees, so the message gives the true number.
  if (declaredSize(p) != (gz ? expected & 0xffffffffu : expected)) {
    bool truncated = false;
    const uint64_t actual = gz ? uncompressedSize(p, &truncated) : File(p).size();
    if (actual != expected)
      fail(where, ": header says ", n, " images of ", h, "x", w, " but the file holds ", actual < 16 ? 0 : actual - 16,
           " bytes of data", truncated ? " (the gzip stream is truncated)" : "", " instead of ", expected - 16,
           "; the file is truncated or its header is wrong");
  }
  Labels labels;
  if (!o.labels.empty()) {
    labels = takeLabelFile(o.labels, n, where, "images", o.num_classes);
  } else {
    if (const auto twin = idxLabelsTwin(p); twin && fs::is_regular_file(*twin))
      labels = takeLabelFile(*twin, n, where, "images", o.num_classes);
  }
  return std::make_unique<ArrayDataset>(std::move(a), std::move(labels), o, pp);
}

}  // namespace lwc::data
