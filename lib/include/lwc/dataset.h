// Real data for evaluation and calibration: image folders, .npy/.npz arrays, IDX (MNIST) files and
// ONNX test_data_set_* folders, read batch by batch with the preprocessing a model was trained with.
//
// Every source produces the same float32 numbers for the same pixels: an image decoded from PNG or
// JPEG, a uint8 array in an .npy file and an IDX record all go through one preprocessing routine.
// Problems with the data (unreadable file, wrong channel count, size the model cannot take, labels
// that do not match) throw lwc::Error naming the file and saying what to do.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lwc/tensor.h"

namespace lwc {

/// How raw 0..255 pixels become the model's input, read from JSON:
///   "resize": N (shorter side to N, aspect kept) or [h, w]; bilinear with half-pixel centres, no
///             antialiasing (torch.nn.functional.interpolate(align_corners=False)), rounded to whole
///             0..255 levels like torchvision does for uint8/PIL images. Optional.
///   "crop":   N or [h, w]; centre crop (offsets round((size - crop) / 2), half to even, as
///             torchvision's CenterCrop). Optional.
///   "scale":  multiplies the raw value; default 1/255.
///   "mean", "std": one value or one per channel, applied after scale: (v*scale - mean) / std;
///             defaults 0 and 1.
///   "color":  "gray" | "rgb" | "bgr": the channels the model wants; images are converted
///             (gray -> rgb replicates, rgb -> gray is Pillow's ITU-R 601-2 luma). When absent, an
///             image must already have the model's channel count. Alpha is dropped.
///   "layout": "NCHW" | "NHWC"; when absent, taken from the model's input shape (NCHW if unclear).
struct Preprocess {
  enum class Color { Gray, Rgb, Bgr };
  enum class Layout { NCHW, NHWC };

  int64_t resize_short = 0;                 ///< "resize": N; 0 = off
  std::array<int64_t, 2> resize_hw{0, 0};   ///< "resize": [h, w]; {0, 0} = off
  std::array<int64_t, 2> crop{0, 0};        ///< {0, 0} = off
  double scale = 1.0 / 255.0;
  std::vector<double> mean;                 ///< empty = 0
  std::vector<double> stddev;               ///< JSON "std"; empty = 1
  std::optional<Color> color;
  std::optional<Layout> layout;
  std::string origin = "default preprocessing";  ///< the file or option it came from, for messages
  std::filesystem::path file;                    ///< the JSON file it was read from (load), else empty

  /// Validates every key; unknown keys or wrong types -> lwc::Error naming the key and `where`.
  static Preprocess fromJson(const nlohmann::json& j, const std::string& where);
  /// Reads a JSON file; errors name the file.
  static Preprocess load(const std::filesystem::path& p);
  /// The effective settings, defaults included, for reports.
  nlohmann::json toJson() const;
  /// The JSON keys fromJson accepts.
  static const std::vector<std::string>& keys();
};

struct DataOptions {
  std::filesystem::path path;            ///< folder or file
  std::filesystem::path labels;          ///< optional: CSV "file,label", one int per line, .npy or IDX labels
  std::optional<Preprocess> preprocess;  ///< else preprocess.json next to the data if present, else defaults
  /// 0 = all samples. An ImageFolder (ordered by class) takes evenly spaced samples so every class
  /// stays represented; the other sources take the first ones.
  int64_t limit = 0;
  /// The model input's per-sample shape (batch dim dropped), e.g. {1, 28, 28}; -1 for a symbolic
  /// dim; empty = no check. Every sample is checked against it and batches have exactly this layout.
  std::vector<int64_t> sample_shape;
  /// The model input's element type; Undefined = no check. Image sources produce float32.
  DType dtype = DType::Undefined;
  /// Number of classes the model predicts (0 = unknown): labels must lie in [0, num_classes).
  int64_t num_classes = 0;
  /// The model input's batch size when it is fixed (a model exported with batch 1), 0 when
  /// symbolic. Then every batch has exactly this many samples, whatever next(n) asks for, and
  /// openDataset fails when the samples (after the limit) do not fill whole batches.
  int64_t fixed_batch = 0;
  /// How the user sets `limit` where these options come from, for messages ("--calib-limit",
  /// "data.calib.limit"); empty: the generic list of limit options.
  std::string limit_hint;
};

/// The files the loaders may read beside a data file without being told: its folder's
/// preprocess.json, labels.npy/.txt/.csv, and an IDX images file's labels file.
std::vector<std::filesystem::path> filesReadBeside(const std::filesystem::path& data_file);

/// Lowers o.limit to `max_samples` (a pass option such as calib_samples; 0 = no cap) when that is
/// fewer samples, and then names `option` as the limit in messages.
void capSamples(DataOptions& o, int64_t max_samples, const std::string& option);

class Model;
/// The batch size the model's first input fixes (a model exported with batch 1), 0 when the
/// batch dimension is symbolic or the input has no shape.
int64_t fixedBatchSize(const Model& m);
/// Sets sample_shape, dtype, num_classes and fixed_batch from the model's (single) input and first output.
/// Throws lwc::Error when the model has no input or several.
void fitToModel(DataOptions& o, const Model& m);

struct Batch {
  Tensor inputs;                ///< [n, ...sample_shape]
  std::vector<int64_t> labels;  ///< one per sample; empty when the source has none
  int64_t first_index = 0;      ///< index of the first sample in the dataset
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of samples, after the limit.
  virtual int64_t size() const = 0;
  virtual bool hasLabels() const = 0;
  /// One line for reports, e.g. "ImageFolder 'x' (500 images, 10 classes)".
  virtual std::string describe() const = 0;
  /// The next batch of up to n samples, std::nullopt at the end. Only this batch is held in memory.
  virtual std::optional<Batch> next(int64_t n) = 0;
  /// Starts again from the first sample.
  virtual void reset() = 0;
  /// Names of the classes when the source knows them (ImageFolder folder names).
  virtual std::vector<std::string> classNames() const { return {}; }
  /// Where sample i comes from, for reports: "png/07/00042.png", "images.npy[42]".
  virtual std::string sampleName(int64_t i) const = 0;
  /// The preprocessing applied, or nullopt for sources used as stored (float arrays, .pb tensors).
  virtual std::optional<Preprocess> preprocessing() const { return std::nullopt; }
  /// Where a preprocessing came from that these samples do not get because they are fed as stored
  /// (a preprocess.json beside an array of the model's dtype, e.g. uint8 images for a uint8
  /// input); empty when none was given or it applies.
  virtual std::string ignoredPreprocessing() const { return ""; }
};

/// Opens a dataset, detecting its kind from `opts.path`:
///   - a folder of test_data_set_*/ folders, or one holding input_0.pb: ONNX TensorProto batches;
///   - a folder holding .png/.jpg/.jpeg files: flat image folder with labels.npy/labels.txt/labels.csv;
///   - a folder whose subfolders hold images: ImageFolder (label = index of the class folder among
///     all non-hidden subfolders in sorted order, as torchvision's ImageFolder numbers them);
///   - a folder holding images.npy (or a single .npy / .npz): as for that file;
///   - a .npy/.npz file: uint8 images [N,H,W], [N,C,H,W] or [N,H,W,C] (preprocessed), or float32
///     [N, ...sample_shape] (used as is);
///   - an IDX file (MNIST, gzipped or not): images [N,H,W] with labels from the matching labels-idx1 file.
/// Errors (missing path, no data, corrupt files, shape mismatches) throw lwc::Error naming the file.
std::unique_ptr<Dataset> openDataset(const DataOptions& opts);

/// One line for image data read with the default preprocessing (no preprocessing given and no
/// preprocess.json beside the data), which only scales pixels to [0, 1]: a model trained on
/// normalized inputs then sees the wrong values, and nothing else would say so. Likewise for a
/// preprocessing given for samples fed as stored, which it does not reach. Empty when a
/// preprocessing file or option applies, or when none was given for arrays fed as stored.
std::string preprocessingWarning(const Dataset& ds);

}  // namespace lwc
