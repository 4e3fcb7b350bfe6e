// Pieces the dataset sources share: file access, byte streams (plain, gzip, zip members), .npy
// headers, image decoding, the preprocessing pipeline and label files.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lwc/dataset.h"

namespace lwc::data {

namespace fs = std::filesystem;

/// A display name for a path: as the user wrote it.
inline std::string show(const fs::path& p) { return p.string(); }

// ---------------------------------------------------------------------------------------------
// Files and byte streams

/// A read-only file with positioned reads; errors name the file.
class File {
 public:
  explicit File(const fs::path& p);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  uint64_t size() const { return size_; }
  /// Reads up to n bytes at `offset`; returns how many were read (less only at the end of the file).
  size_t readAt(uint64_t offset, void* dst, size_t n) const;
  /// Reads exactly n bytes at `offset` or fails with "<file>: <what> is truncated".
  void readExact(uint64_t offset, void* dst, size_t n, const char* what) const;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Reads a whole (small) file; `max_bytes` guards against reading something huge by mistake.
std::string readWholeFile(const fs::path& p, uint64_t max_bytes = uint64_t(1) << 31);

/// A sequential byte stream that can start over.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  /// Reads up to n bytes; fewer only at the end of the stream. Corrupt data throws lwc::Error.
  virtual size_t read(void* dst, size_t n) = 0;
  virtual void rewind() = 0;
  /// Skips n bytes; false when the stream ends first.
  bool skip(uint64_t n);
  /// Reads exactly n bytes or fails naming `where` and `what`.
  void readExact(void* dst, size_t n, const std::string& where, const char* what);
};

/// A plain file read from the start.
std::unique_ptr<ByteStream> openFileStream(const fs::path& p);
/// A gzip file (or a plain one: zlib reads those transparently).
std::unique_ptr<ByteStream> openGzipStream(const fs::path& p);

/// True when the file starts with the gzip magic bytes.
bool isGzip(const fs::path& p);
/// The uncompressed length of a gzip or plain file. For gzip this inflates the whole stream (memory
/// stays bounded); `truncated` is set when the compressed stream ends early.
uint64_t uncompressedSize(const fs::path& p, bool* truncated);
/// The gzip trailer's ISIZE (uncompressed length mod 2^32), or the plain file's size.
uint64_t declaredSize(const fs::path& p);

/// A member of a zip archive (.npz).
struct ZipEntry {
  std::string name;
  uint16_t method = 0;  ///< 0 stored, 8 deflated
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t data_offset = 0;  ///< first byte of the member's data in the archive
};

/// The central directory of a zip archive, validated (sizes inside the file, supported methods,
/// no encryption; zip64 supported).
class ZipArchive {
 public:
  explicit ZipArchive(const fs::path& p);
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  /// A stream over one member's uncompressed bytes; its CRC-32 is checked when read to the end.
  std::unique_ptr<ByteStream> open(const ZipEntry& e) const;
  const fs::path& path() const { return file_->path(); }

 private:
  std::shared_ptr<File> file_;
  std::vector<ZipEntry> entries_;
};

// ---------------------------------------------------------------------------------------------
// .npy headers read from a stream

struct NpyHeader {
  DType dtype = DType::Undefined;
  Shape shape;
  uint64_t header_bytes = 0;  ///< bytes before the data
  uint64_t dataBytes() const { return static_cast<uint64_t>(numelOf(shape)) * dtypeSize(dtype); }
};

/// Reads and validates a .npy header; the stream is left at the first data byte.
NpyHeader readNpyHeader(ByteStream& s, const std::string& where);

// ---------------------------------------------------------------------------------------------
// Images

/// A decoded image: interleaved HWC, 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels,
/// 8 or 16 bits per sample.
struct DecodedImage {
  int64_t h = 0, w = 0, c = 0;
  int bits = 8;
  std::vector<uint8_t> px8;
  std::vector<uint16_t> px16;
};

/// Decodes PNG or JPEG bytes (detected by signature); `where` names the file in errors.
DecodedImage decodeImage(const std::string& bytes, const std::string& where);

/// A view of raw pixels with strides (elements), so HWC and CHW arrays need no copy.
struct PixelView {
  int64_t h = 0, w = 0, c = 0;
  int64_t sy = 0, sx = 0, sc = 0;
  const uint8_t* p8 = nullptr;
  const uint16_t* p16 = nullptr;
  static PixelView of(const DecodedImage& img);
  static PixelView hwc(const uint8_t* p, int64_t h, int64_t w, int64_t c) { return {h, w, c, w * c, c, 1, p, nullptr}; }
  static PixelView chw(const uint8_t* p, int64_t c, int64_t h, int64_t w) { return {h, w, c, w, 1, h * w, p, nullptr}; }
};

/// Turns raw pixels into one model input sample: color conversion, resize, crop, scale/mean/std,
/// layout. Holds scratch buffers, so one pipeline serves one dataset at a time.
class ImagePipeline {
 public:
  ImagePipeline(const Preprocess& pp, const std::vector<int64_t>& sample_shape);
  /// Preprocesses one image into `out`; returns the sample's shape. Errors name `where`.
  Shape run(const PixelView& in, std::vector<float>& out, const std::string& where);
  const Preprocess& preprocess() const { return pp_; }

 private:
  template <typename T>
  Shape runT(const PixelView& in, const T* base, std::vector<float>& out, const std::string& where);
  const std::vector<float>& lutFor(int64_t channels, const std::string& where);

  Preprocess pp_;
  Preprocess::Layout layout_ = Preprocess::Layout::NCHW;
  Shape sample_shape_;
  bool image_shape_ = false;  ///< sample_shape is [C,H,W] / [H,W,C]
  int64_t model_c_ = -1, model_h_ = -1, model_w_ = -1;
  std::vector<float> lut_;  ///< per channel: 256 floats for 8-bit values
  int64_t lut_channels_ = 0;
  std::vector<uint8_t> s8a_, s8b_;
  std::vector<uint16_t> s16a_, s16b_;
};

/// Collects preprocessed samples into one batch tensor, checking they all have the same shape.
class BatchBuilder {
 public:
  /// `out`: Float32, or Float16 for a model whose input is half precision (values are rounded
  /// to nearest even when the batch is finished).
  /// `recycle`: the dataset's last float32 batch. When the caller has let go of it (its buffer
  /// is no longer shared) and it has the new batch's shape, the batch is built in its buffer
  /// instead of a fresh one; finish() leaves the new batch there. A batch over 256 KiB is its own
  /// mapping (the mmap threshold lwc sets), so a fresh one costs a page fault per 4 KiB touched:
  /// lwc eval of lenet5 on the 10 000 Fashion-MNIST test images spent about a third of its
  /// time there.
  explicit BatchBuilder(int64_t n, DType out = DType::Float32, Tensor* recycle = nullptr)
      : n_(n), out_(out), recycle_(recycle) {}
  void add(const Shape& shape, const std::vector<float>& values, const std::string& where);
  Tensor finish();

 private:
  int64_t n_, count_ = 0;
  DType out_;
  Shape first_;
  std::string first_where_;
  Tensor t_;
  Tensor* recycle_;
};

/// A tensor of this type and shape: `recycle` itself when nobody else holds its buffer (its
/// contents are then overwritten by the caller), else a new one that `recycle` keeps for next time.
Tensor recycledTensor(Tensor& recycle, DType dtype, const Shape& shape);

/// The element type preprocessed images are delivered in for a model input of type `model_input`
/// (Undefined: not known yet): float32, or float16 for a float16 input; anything else is the user's
/// error, naming `where`.
DType imageBatchType(DType model_input, const std::string& where);

/// Checks an as-is sample shape against the model's ([-1] dims match anything).
bool shapeMatches(const Shape& actual, const std::vector<int64_t>& wanted);
/// "[?,1,28,28]" for a per-sample shape with a symbolic batch dim in front.
std::string modelShapeStr(const std::vector<int64_t>& sample_shape);

// ---------------------------------------------------------------------------------------------
// Labels

struct LabelFile {
  std::vector<int64_t> labels;
  std::vector<std::string> files;  ///< CSV "file,label": the file of each label; empty otherwise
  std::string unit = "labels";  ///< "lines" for text files, for count messages
};

/// Reads labels from CSV "file,label" (optional header), one integer per line, a .npy integer
/// array, or an IDX labels file (gzipped or not). Negative labels and labels >= num_classes (when
/// num_classes > 0) are errors naming the file and the line or index.
LabelFile readLabelFile(const fs::path& p, int64_t num_classes);
/// Range check of labels read from an array: errors name "<file>[i]".
void checkLabelRange(const std::vector<int64_t>& labels, int64_t num_classes, const std::string& file);
/// The values of an integer (or bool) label array, exactly; a uint64 label above INT64_MAX is an
/// error naming `where` and its index.
std::vector<int64_t> labelValues(const Tensor& t, const std::string& where);

// ---------------------------------------------------------------------------------------------
// Sources

std::unique_ptr<Dataset> openImageFolder(const fs::path& root, const DataOptions& o, const Preprocess& pp);
std::unique_ptr<Dataset> openFlatImageFolder(const fs::path& dir, const std::vector<std::string>& files,
                                             const DataOptions& o, const Preprocess& pp);
std::unique_ptr<Dataset> openNpy(const fs::path& p, const DataOptions& o, const Preprocess& pp);
std::unique_ptr<Dataset> openNpz(const fs::path& p, const DataOptions& o, const Preprocess& pp);
std::unique_ptr<Dataset> openIdx(const fs::path& p, const DataOptions& o, const Preprocess& pp);
std::unique_ptr<Dataset> openOnnxTestData(const fs::path& dir, const std::vector<fs::path>& pb_files,
                                          const DataOptions& o);

/// True for .png/.jpg/.jpeg (any case).
bool isImageFile(const fs::path& p);
/// Sorted image files (.png/.jpg/.jpeg, not hidden) of `dir`, as paths relative to it; with
/// `recursive`, at any depth (class folders of an ImageFolder).
std::vector<std::string> listImages(const fs::path& dir, bool recursive = false);
/// The first of labels.npy, labels.txt, labels.csv in `dir`, if any.
std::optional<fs::path> findLabelsIn(const fs::path& dir);
/// The labels files findLabelsIn looks for in `dir`, in its order (labels.npy, .txt, .csv).
std::vector<fs::path> labelsCandidates(const fs::path& dir);
/// The labels file of an IDX images file (…-images-idx3-… -> …-labels-idx1-…), or nullopt.
std::optional<fs::path> idxLabelsTwin(const fs::path& images);

}  // namespace lwc::data
