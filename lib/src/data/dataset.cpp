// openDataset: detects the kind of data at a path; image-folder and ONNX test-data sources.
#include "lwc/dataset.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <set>
#include <cstring>
#include <sstream>
#include <unordered_map>

#include "internal.h"
#include "lwc/model_io.h"

namespace lwc {

namespace data {

namespace {

std::string lowerExt(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool hidden(const fs::path& p) { return p.filename().string().starts_with("."); }

/// Sorted (byte order) names of the non-hidden subfolders of `dir`.
std::vector<std::string> listSubdirs(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && !hidden(e.path())) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

struct ImageEntry {
  std::string rel;  ///< path relative to the root, '/'-separated
  int64_t label = -1;
};

/// Image files decoded on demand; ImageFolder (labels from class folders) or a flat folder.
class ImageFilesDataset final : public Dataset {
 public:
  ImageFilesDataset(fs::path root, std::vector<ImageEntry> entries, std::vector<std::string> classes, std::string kind,
                    std::string labels_from, int64_t total, bool spaced, const DataOptions& o, const Preprocess& pp)
      : root_(std::move(root)), entries_(std::move(entries)), classes_(std::move(classes)), kind_(std::move(kind)),
        labels_from_(std::move(labels_from)), total_(total), spaced_(spaced), has_labels_(!entries_.empty() && entries_[0].label >= 0),
        pipeline_(pp, o.sample_shape), out_(imageBatchType(o.dtype, show(root_))) {
    next(1);  // decode and preprocess the first image now, so a mismatch shows before any work is done
    reset();
  }

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  bool hasLabels() const override { return has_labels_; }
  std::string describe() const override {
    std::ostringstream s;
    s << kind_ << " '" << show(root_) << "' (";
    if (size() == total_)
      s << total_ << " images";
    else if (spaced_)
      s << size() << " of " << total_ << " images, evenly spaced";
    else
      s << "first " << size() << " of " << total_ << " images";
    if (!classes_.empty()) s << ", " << classes_.size() << " classes";
    if (!labels_from_.empty()) s << ", labels from " << labels_from_;
    if (!has_labels_) s << ", no labels";
    s << ")";
    return s.str();
  }
  std::vector<std::string> classNames() const override { return classes_; }
  std::string sampleName(int64_t i) const override { return entries_.at(static_cast<size_t>(i)).rel; }
  std::optional<Preprocess> preprocessing() const override { return pipeline_.preprocess(); }

  std::optional<Batch> next(int64_t n) override {
    LWC_CHECK(n > 0, "batch size must be positive");
    const int64_t k = std::min(n, size() - pos_);
    if (k <= 0) return std::nullopt;
    Batch b;
    b.first_index = pos_;
    BatchBuilder bb(k, out_, &recycle_);
    for (int64_t i = 0; i < k; ++i) {
      const ImageEntry& e = entries_[static_cast<size_t>(pos_ + i)];
      const fs::path file = root_ / e.rel;
      const std::string where = show(file);
      const DecodedImage img = decodeImage(readWholeFile(file, uint64_t(1) << 28), where);
      bb.add(pipeline_.run(PixelView::of(img), scratch_, where), scratch_, where);
      if (has_labels_) b.labels.push_back(e.label);
    }
    b.inputs = bb.finish();
    pos_ += k;
    return b;
  }
  void reset() override { pos_ = 0; }

 private:
  fs::path root_;
  std::vector<ImageEntry> entries_;
  std::vector<std::string> classes_;
  std::string kind_, labels_from_;
  int64_t total_;
  bool spaced_;  ///< the limit took evenly spaced samples rather than the first ones
  bool has_labels_;
  ImagePipeline pipeline_;
  DType out_;  ///< float32, or float16 for a half-precision model input
  std::vector<float> scratch_;
  Tensor recycle_;  ///< the last batch's tensor, reused once the caller has let go of it
  int64_t pos_ = 0;
};

/// A limit on a class-sorted list would keep only the first classes; take evenly spaced samples.
void applyLimit(std::vector<ImageEntry>& entries, int64_t limit) {
  const auto total = static_cast<int64_t>(entries.size());
  if (limit <= 0 || limit >= total) return;
  std::vector<ImageEntry> kept;
  kept.reserve(static_cast<size_t>(limit));
  for (int64_t i = 0; i < limit; ++i) kept.push_back(entries[static_cast<size_t>(i * total / limit)]);
  entries = std::move(kept);
}

/// input_0.pb files, one batch each, served in slices of at most the requested batch size.
class OnnxTestDataset final : public Dataset {
 public:
  OnnxTestDataset(fs::path dir, std::vector<fs::path> files, const DataOptions& o) : dir_(std::move(dir)), files_(std::move(files)) {
    for (const auto& f : files_) {
      const Tensor t = load(f);
      const std::string where = show(f);
      if (t.rank() == 0) fail(where, ": a scalar tensor is not a batch; expected [N, ...]");
      const Shape rec(t.shape().begin() + 1, t.shape().end());
      if (!o.sample_shape.empty() && !shapeMatches(rec, o.sample_shape))
        fail(where, ": tensor ", shapeStr(t.shape()), " does not match the model input ", modelShapeStr(o.sample_shape));
      if (o.dtype != DType::Undefined && t.dtype() != o.dtype)
        fail(where, ": tensor is ", dtypeName(t.dtype()), " but the model input is ", dtypeName(o.dtype));
      rows_.push_back(t.dim(0));
      total_ += t.dim(0);
    }
    n_ = o.limit > 0 ? std::min(o.limit, total_) : total_;
  }

  int64_t size() const override { return n_; }
  bool hasLabels() const override { return false; }
  std::string describe() const override {
    std::ostringstream s;
    s << "ONNX test data '" << show(dir_) << "' (" << files_.size() << (files_.size() == 1 ? " set, " : " sets, ");
    if (n_ < total_) s << "first " << n_ << " of ";
    s << total_ << " samples, no labels)";
    return s.str();
  }
  std::string sampleName(int64_t i) const override {
    for (size_t f = 0; f < files_.size(); ++f) {
      if (i < rows_[f]) return fs::relative(files_[f], dir_).generic_string() + "[" + std::to_string(i) + "]";
      i -= rows_[f];
    }
    return "?";
  }

  std::optional<Batch> next(int64_t n) override {
    LWC_CHECK(n > 0, "batch size must be positive");
    if (pos_ >= n_) return std::nullopt;
    while (cur_.empty() || row_ >= cur_.dim(0)) {
      cur_ = load(files_.at(file_++));
      row_ = 0;
    }
    const int64_t k = std::min({n, cur_.dim(0) - row_, n_ - pos_});
    Batch b;
    b.first_index = pos_;
    if (row_ == 0 && k == cur_.dim(0)) {
      b.inputs = cur_;
    } else {
      Shape s = cur_.shape();
      s[0] = k;
      b.inputs = Tensor::uninitialized(cur_.dtype(), s);
      const size_t row_bytes = cur_.nbytes() / static_cast<size_t>(cur_.dim(0));
      std::memcpy(b.inputs.raw(), static_cast<const char*>(cur_.raw()) + row_bytes * row_, row_bytes * k);
    }
    row_ += k;
    pos_ += k;
    return b;
  }
  void reset() override {
    cur_ = Tensor();
    file_ = 0;
    row_ = 0;
    pos_ = 0;
  }

 private:
  Tensor load(const fs::path& f) const {
    const std::string bytes = readWholeFile(f, INT_MAX);  // protobuf parses at most INT_MAX bytes
    onnx::TensorProto p;
    if (!p.ParseFromString(bytes)) fail(show(f), ": not an ONNX TensorProto (corrupt .pb file?)");
    return tensorFromProto(p, f.parent_path(), show(f));
  }

  fs::path dir_;
  std::vector<fs::path> files_;
  std::vector<int64_t> rows_;
  int64_t total_ = 0, n_ = 0, pos_ = 0, row_ = 0;
  size_t file_ = 0;
  Tensor cur_;
};

}  // namespace

bool isImageFile(const fs::path& p) {
  const std::string e = lowerExt(p);
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

namespace {
// Image types torchvision's ImageFolder takes (its IMG_EXTENSIONS) that lwc does not decode: such
// a file is an error, not a sample left out without a word (a class of BMPs had no samples).
bool isOtherImageFile(const fs::path& p) {
  static const std::set<std::string> other{".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"};
  return other.count(lowerExt(p)) > 0;
}

// torchvision's order: sorted(os.walk(...)) takes a folder's own files (sorted) before those of
// its subfolders, folders in the byte order of their paths. Sorting whole relative paths put
// "sub/b.png" before "z.png", so sample indices and the images --limit picks differed.
bool walkOrder(const std::string& a, const std::string& b) {
  const size_t sa = a.rfind('/'), sb = b.rfind('/');
  const std::string_view da = sa == std::string::npos ? std::string_view() : std::string_view(a).substr(0, sa),
                         db = sb == std::string::npos ? std::string_view() : std::string_view(b).substr(0, sb);
  if (da != db) return da < db;
  return a < b;
}
}  // namespace

std::vector<std::string> listImages(const fs::path& dir, bool recursive) {
  std::vector<std::string> out;
  // An image name that is not a readable file (a link to a missing file) is an error, as an
  // unreadable image is: it used to be left out without a word.
  auto take = [&](const fs::directory_entry& e, const std::string& rel) {
    if (hidden(e.path())) return;
    if (isOtherImageFile(e.path()) && (e.is_regular_file() || e.is_symlink()))
      fail(show(e.path()), ": lwc reads PNG and JPEG images, not ", lowerExt(e.path()).substr(1),
           " (torchvision's ImageFolder would take it); convert it, e.g. with PIL: "
           "Image.open(f).save(f.with_suffix('.png'))");
    if (!isImageFile(e.path())) return;
    if (e.is_regular_file()) out.push_back(rel);
    else if (e.is_symlink() && !fs::exists(e.path())) fail(show(e.path()), ": a link to a missing file; remove it or restore its target");
  };
  if (!recursive) {
    for (const auto& e : fs::directory_iterator(dir)) take(e, e.path().filename().string());
  } else {
    // Images at any depth of a class folder, as torchvision's ImageFolder takes them (hidden
    // folders skipped), following links to folders as its os.walk(followlinks=True) does; a
    // nested folder's images used to be left out, and a linked folder's until 2026-12-06.
    // Unreadable subfolders are skipped (as os.walk does for torchvision); they held no data before.
    constexpr int kMaxDepth = 64;  // a link that points back up would loop forever
    for (auto it = fs::recursive_directory_iterator(
             dir, fs::directory_options::skip_permission_denied | fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      if (it->is_directory() && hidden(it->path())) {
        it.disable_recursion_pending();
        continue;
      }
      if (it.depth() > kMaxDepth)
        fail(show(dir), ": folders nested more than ", kMaxDepth, " deep (at '", show(it->path().parent_path()),
             "'); a link to a folder that contains it loops forever: remove the link");
      take(*it, it->path().lexically_relative(dir).generic_string());  // fs::relative would resolve links
    }
  }
  std::sort(out.begin(), out.end(), walkOrder);
  return out;
}

std::unique_ptr<Dataset> openImageFolder(const fs::path& root, const DataOptions& o, const Preprocess& pp) {
  if (!o.labels.empty())
    fail(show(o.labels), ": '", show(root), "' is an ImageFolder whose labels come from its class folders; "
         "give no labels file, or put the images in one folder next to the labels file");
  // A hidden folder with images is a class to torchvision's ImageFolder (.ipynb_checkpoints,
  // left by Jupyter, is the usual one), numbered before the others: lwc skips hidden folders, so
  // every label would be off by one against a model trained on that numbering.
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && hidden(e.path()) && !listImages(e.path(), /*recursive=*/true).empty())
      fail(show(e.path()), ": a hidden folder with images; torchvision's ImageFolder counts it as a class and numbers "
           "the others after it, lwc skips it. Move it out of '", show(root), "' so that both number the classes alike");
  std::vector<std::string> classes = listSubdirs(root);
  std::vector<ImageEntry> entries;
  for (size_t c = 0; c < classes.size(); ++c)
    for (const auto& f : listImages(root / classes[c], /*recursive=*/true)) entries.push_back({classes[c] + "/" + f, static_cast<int64_t>(c)});
  if (o.num_classes > 0 && static_cast<int64_t>(classes.size()) > o.num_classes)
    fail(show(root), ": ", classes.size(), " class folders but the model predicts ", o.num_classes,
         " classes; labels are the sorted folder indices 0..", classes.size() - 1);
  const auto total = static_cast<int64_t>(entries.size());
  applyLimit(entries, o.limit);
  return std::make_unique<ImageFilesDataset>(root, std::move(entries), std::move(classes), "ImageFolder", "", total, true, o, pp);
}

std::unique_ptr<Dataset> openFlatImageFolder(const fs::path& dir, const std::vector<std::string>& files, const DataOptions& o,
                                             const Preprocess& pp) {
  std::vector<ImageEntry> entries;
  for (const auto& f : files) entries.push_back({f, -1});
  std::optional<fs::path> lp = o.labels.empty() ? findLabelsIn(dir) : std::optional<fs::path>(o.labels);
  std::string from;
  if (lp) {
    const LabelFile lf = readLabelFile(*lp, o.num_classes);
    const std::string ln = show(*lp);
    if (lf.files.empty()) {
      if (lf.labels.size() != entries.size())
        fail(ln, " has ", lf.labels.size(), " ", lf.unit, " but the folder '", show(dir), "' has ", entries.size(), " images");
      for (size_t i = 0; i < entries.size(); ++i) entries[i].label = lf.labels[i];
    } else {
      std::unordered_map<std::string, size_t> index;
      for (size_t i = 0; i < entries.size(); ++i) index.emplace(entries[i].rel, i);
      for (size_t i = 0; i < lf.files.size(); ++i) {
        const std::string name = fs::path(lf.files[i]).lexically_normal().generic_string();
        const auto it = index.find(name);
        if (it == index.end()) fail(ln, ": names '", lf.files[i], "', which is not an image in '", show(dir), "'");
        if (entries[it->second].label >= 0) fail(ln, ": '", lf.files[i], "' is listed twice");
        entries[it->second].label = lf.labels[i];
      }
      for (const auto& e : entries)
        if (e.label < 0) fail(ln, " has no label for '", e.rel, "' (", lf.labels.size(), " labels for ", entries.size(), " images)");
    }
    from = lp->filename().string();
  }
  const auto total = static_cast<int64_t>(entries.size());
  if (o.limit > 0 && o.limit < total) entries.resize(static_cast<size_t>(o.limit));
  return std::make_unique<ImageFilesDataset>(dir, std::move(entries), std::vector<std::string>{}, "image folder", from, total, false, o, pp);
}

std::unique_ptr<Dataset> openOnnxTestData(const fs::path& dir, const std::vector<fs::path>& pb_files, const DataOptions& o) {
  if (!o.labels.empty()) fail(show(o.labels), ": ONNX test data carry no labels; a labels file cannot be matched to them");
  return std::make_unique<OnnxTestDataset>(dir, pb_files, o);
}

}  // namespace data

namespace {

std::unique_ptr<Dataset> open(const DataOptions& o) {
  namespace fs = std::filesystem;
  using namespace data;
  if (o.limit < 0) fail("the sample limit must be 0 (all) or positive, not ", o.limit);
  if (o.path.empty()) fail("no data path given");
  std::error_code ec;
  const auto st = fs::status(o.path, ec);
  if (!fs::exists(st)) fail(show(o.path), ": no such file or folder");
  const bool dir = fs::is_directory(st);
  const fs::path folder = dir ? o.path : folderOf(o.path);
  Preprocess pp;
  if (o.preprocess)
    pp = *o.preprocess;
  else if (fs::is_regular_file(folder / "preprocess.json"))
    pp = Preprocess::load(folder / "preprocess.json");

  if (!dir) {
    const std::string ext = lowerExt(o.path);
    if (ext == ".npy") return openNpy(o.path, o, pp);
    if (ext == ".npz") return openNpz(o.path, o, pp);
    if (ext == ".pb") return openOnnxTestData(folder, {o.path}, o);
    if (isImageFile(o.path)) fail(show(o.path), ": give the folder that holds the images, not one image");
    auto s = openGzipStream(o.path);
    unsigned char m[3] = {1, 1, 1};
    // IDX: 0, 0, then the element type (8 = unsigned byte; 9, 0x0B-0x0E the others, which openIdx
    // refuses by name rather than as an unrecognised file).
    if (s->read(m, 3) == 3 && m[0] == 0 && m[1] == 0 && (m[2] == 8 || m[2] == 9 || (m[2] >= 0x0B && m[2] <= 0x0E)))
      return openIdx(o.path, o, pp);
    fail(show(o.path), ": unrecognised data file; expected .npy, .npz, .pb, an IDX file (MNIST ...-images-idx3-ubyte[.gz]) "
         "or a folder of images");
  }

  // ONNX test data: input_0.pb here, or in test_data_set_* subfolders.
  if (fs::is_regular_file(o.path / "input_0.pb")) return openOnnxTestData(o.path, {o.path / "input_0.pb"}, o);
  const std::vector<std::string> subdirs = listSubdirs(o.path);
  std::vector<fs::path> pbs;
  for (const auto& d : subdirs)
    if (d.starts_with("test_data_set_")) {
      if (!fs::is_regular_file(o.path / d / "input_0.pb")) fail(show(o.path / d), ": holds no input_0.pb");
      pbs.push_back(o.path / d / "input_0.pb");
    }
  if (!pbs.empty()) return openOnnxTestData(o.path, pbs, o);

  const auto files = listImages(o.path);
  // A subfolder with images in it makes the folder an ImageFolder (its images at any depth are
  // the class's); images only deeper down (fmnist_sample/png/00/...) do not.
  std::string class_dir;
  for (const auto& d : subdirs)
    if (!listImages(o.path / d).empty()) {
      class_dir = d;
      break;
    }
  // Both is no layout: one stray image at the top (a preview.png) turned an ImageFolder of 500
  // labelled images into a flat folder of 1 unlabelled image, and calibration ran on that one.
  if (!files.empty() && !class_dir.empty())
    fail(show(o.path), ": holds images at its top (", files.size(), ", e.g. '", files.front(),
         "') and class folders of images (e.g. '", class_dir,
         "'); an ImageFolder keeps every image in a class folder: move the top-level images out (or the class folders, for a flat folder)");
  if (!files.empty()) return openFlatImageFolder(o.path, files, o, pp);
  if (!class_dir.empty()) return openImageFolder(o.path, o, pp);

  // Arrays: images.npy, else the only .npy that is not labels, else the only .npz.
  if (fs::is_regular_file(o.path / "images.npy")) return openNpy(o.path / "images.npy", o, pp);
  std::vector<fs::path> npys, npzs;
  for (const auto& e : fs::directory_iterator(o.path)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = lowerExt(e.path()), name = e.path().filename().string();
    if (ext == ".npy" && !name.starts_with("labels")) npys.push_back(e.path());
    if (ext == ".npz") npzs.push_back(e.path());
  }
  if (npys.size() == 1) return openNpy(npys[0], o, pp);
  if (npys.empty() && npzs.size() == 1) return openNpz(npzs[0], o, pp);
  if (npys.size() + npzs.size() > 1)
    fail("folder '", show(o.path), "' holds several .npy/.npz arrays and no images.npy; give the file to use");
  // Images only further down (root/train/cat/1.png): torchvision would make 'train' one class
  // holding every image, so the labels would all be 0 and accuracy silently wrong. Say where they
  // are and which folder is probably meant.
  for (const auto& d : subdirs) {
    const auto nested = listImages(o.path / d, /*recursive=*/true);
    if (nested.empty()) continue;
    const fs::path first = fs::path(d) / nested.front();
    fail("folder '", show(o.path), "' holds images only two or more folders down (e.g. '", first.generic_string(),
         "'); give the folder whose subfolders are the classes (e.g. '", show(o.path / first.parent_path().parent_path()),
         "'), or move each class's images into a class folder directly under '", show(o.path), "'");
  }
  // An MNIST-style folder (Debian's /usr/share/datasets/fashion-mnist): IDX files are read one at
  // a time, as the training and test images must not be mixed; name the ones it holds.
  std::vector<std::string> idx;
  for (const auto& e : fs::directory_iterator(o.path))
    if (e.is_regular_file() && e.path().filename().string().find("-images-idx3-ubyte") != std::string::npos)
      idx.push_back(e.path().filename().string());
  std::sort(idx.begin(), idx.end());
  if (!idx.empty()) {
    std::string names;
    for (const auto& n : idx) names += (names.empty() ? "'" : ", '") + n + "'";
    fail("folder '", show(o.path), "' holds IDX image files (", names, "); give one of them, e.g. '",
         show(o.path / idx.front()), "'; the labels file beside it is found");
  }
  fail("folder '", show(o.path), "' holds no images (.png, .jpg, .jpeg), no class folders of images, "
       "no .npy/.npz arrays and no ONNX test_data_set_* folders");
}

}  // namespace

// Batches of exactly the model's fixed batch size.
class FixedBatchDataset : public Dataset {
 public:
  FixedBatchDataset(std::unique_ptr<Dataset> inner, int64_t batch) : inner_(std::move(inner)), batch_(batch) {}
  int64_t size() const override { return inner_->size(); }
  bool hasLabels() const override { return inner_->hasLabels(); }
  std::string describe() const override { return inner_->describe(); }
  std::optional<Batch> next(int64_t) override {
    auto b = inner_->next(batch_);
    if (b && b->inputs.dim(0) != batch_)
      fail(describe(), ": a batch of ", b->inputs.dim(0), " samples where the model's fixed batch size is ", batch_,
           "; export the model with a symbolic batch dimension");
    return b;
  }
  void reset() override { inner_->reset(); }
  std::vector<std::string> classNames() const override { return inner_->classNames(); }
  std::string sampleName(int64_t i) const override { return inner_->sampleName(i); }
  std::optional<Preprocess> preprocessing() const override { return inner_->preprocessing(); }

 private:
  std::unique_ptr<Dataset> inner_;
  int64_t batch_;
};

std::vector<std::filesystem::path> filesReadBeside(const std::filesystem::path& data_file) {
  namespace fs = std::filesystem;
  const fs::path dir = folderOf(data_file);
  std::vector<fs::path> files{dir / "preprocess.json"};
  for (auto& f : data::labelsCandidates(dir)) files.push_back(std::move(f));
  if (auto twin = data::idxLabelsTwin(data_file)) files.push_back(std::move(*twin));
  return files;
}

void capSamples(DataOptions& o, int64_t max_samples, const std::string& option) {
  if (max_samples <= 0 || (o.limit > 0 && o.limit <= max_samples)) return;
  o.limit = max_samples;
  o.limit_hint = option;
}

std::unique_ptr<Dataset> openDataset(const DataOptions& o) {
  std::unique_ptr<Dataset> ds;
  try {
    ds = open(o);
  } catch (const std::filesystem::filesystem_error& e) {
    fail(e.path1().string(), ": ", e.code().message());
  }
  if (o.fixed_batch <= 0) return ds;
  if (ds->size() % o.fixed_batch != 0)
    fail(ds->describe(), ": ", ds->size(), " samples do not fill batches of ", o.fixed_batch,
         ", the model input's fixed batch size; use a sample limit that is a multiple of ", o.fixed_batch, " (",
         o.limit_hint.empty() ? "--calib-limit, --eval-limit, --limit" : o.limit_hint, ") or export the model with a symbolic batch dimension");
  return std::make_unique<FixedBatchDataset>(std::move(ds), o.fixed_batch);
}

std::string preprocessingWarning(const Dataset& ds) {
  if (const std::string ignored = ds.ignoredPreprocessing(); !ignored.empty())
    return ds.describe() + ": the preprocessing of " + ignored + " is not applied: these samples have the model's "
           "input type and are fed as stored (only uint8 images for a float input are preprocessed); put the scaling "
           "into the data or the model, or remove the preprocessing";
  const auto pp = ds.preprocessing();
  if (!pp || pp->origin != Preprocess{}.origin) return "";
  return ds.describe() +
         ": no preprocessing given and no preprocess.json beside the data, so pixels are only scaled to [0, 1] "
         "(no mean/std); if the model was trained on normalized inputs, give its preprocessing (--preprocess FILE, "
         "\"preprocess\" in a pipeline's data entry, or a preprocess.json beside the data)";
}

}  // namespace lwc

namespace lwc {

int64_t fixedBatchSize(const Model& m) {
  const auto inputs = m.graph.realInputs();
  if (inputs.empty() || !inputs[0]->shape || inputs[0]->shape->empty()) return 0;
  const Dim& d = (*inputs[0]->shape)[0];
  return d.known() ? d.value : 0;
}

void fitToModel(DataOptions& o, const Model& m) {
  const auto inputs = m.graph.realInputs();
  if (inputs.empty()) fail(m.label(), ": the model has no inputs to feed data to");
  if (inputs.size() > 1) {
    std::string names;
    for (size_t i = 0; i < inputs.size() && i < 3; ++i) names += (i ? ", '" : "'") + inputs[i]->name + "'";
    if (inputs.size() > 3) names += ", ...";
    fail(m.label(), ": the model has ", inputs.size(), " inputs (", names,
         "); lwc's data readers feed models with one input, for evaluation, calibration and recovery alike "
         "(lwc quantize --mode dynamic and lwc prune without --recover need no data; if the weights are graph "
         "inputs, export the model with its parameters as initializers, export_params=True)");
  }
  const ValueInfo& in = *inputs[0];
  o.dtype = in.dtype;
  o.fixed_batch = fixedBatchSize(m);
  o.sample_shape.clear();
  if (in.shape)
    for (size_t i = 1; i < in.shape->size(); ++i) o.sample_shape.push_back((*in.shape)[i].known() ? (*in.shape)[i].value : -1);
  // The class count: dimension 1 of output 0 when it is class scores as the accuracy meter reads
  // them, [N, C] or [N, C, 1, ...] (a convolutional head without Flatten). Another shape ([N, 5, 2])
  // has no class count: the meter refuses its scores, instead of labels being checked against
  // its last dimension (label 9 "out of range for a model with 2 classes").
  if (!m.graph.outputs.empty() && m.graph.outputs[0].shape && m.graph.outputs[0].shape->size() >= 2) {
    const SymShape& s = *m.graph.outputs[0].shape;
    bool scores = true;
    for (size_t i = 2; i < s.size(); ++i) scores = scores && s[i].known() && s[i].value == 1;
    if (scores && s[1].known()) o.num_classes = s[1].value;
  }
}

}  // namespace lwc
