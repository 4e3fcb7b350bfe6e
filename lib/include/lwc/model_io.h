// Reading and writing ONNX models.
#pragma once

#include <onnx/onnx_pb.h>

#include <climits>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lwc/graph.h"
#include "lwc/signal_cleanup.h"

namespace lwc {

struct LoadOptions {
  /// Check the graph (no dangling inputs, no cycles) and sort it topologically.
  bool validate = true;
};

/// The folder a file is in: "." for a bare name ("m.onnx" has the empty parent "").
std::filesystem::path folderOf(const std::filesystem::path& path);

/// Loads an ONNX file, resolving external data relative to its folder. Throws lwc::Error with a
/// one-line message naming the file for anything malformed.
Model loadModel(const std::filesystem::path& path, const LoadOptions& opts = {});

/// Builds the IR from a parsed ModelProto. `base_dir` resolves external data; `label` names the model in errors.
Model modelFromProto(const onnx::ModelProto& proto, const std::filesystem::path& base_dir,
                     const std::string& label, const LoadOptions& opts = {});

/// Converts the IR back to protobuf (initializers always stored inline as raw_data).
onnx::ModelProto modelToProto(const Model& m);

/// modelToProto for ONNX's shape inference, without copying weights: each initializer of more than
/// `over_bytes` bytes, other than int32/int64 ones (which inference may read as shapes or axes), is
/// declared as a graph input of its type and shape instead, without its data. (A 100 MB model was
/// copied in full by each of the ~40 inferences of one `lwc quantize`.)
onnx::ModelProto modelToInferenceProto(const Model& m, int64_t over_bytes = 4096);

/// modelToProto(m).ByteSizeLong(), the size of the model as one file, without copying weights.
int64_t serializedModelBytes(const Model& m);

/// How a model is laid out on disk. One ONNX file holds everything, up to protobuf's 2 GB; a
/// larger model, or any with `external_data`, keeps each initializer of at least
/// `external_min_bytes` in one data file beside it (ONNX's external data: the ONNX file names it
/// relative to its own folder), as onnx.save_model(save_as_external_data=True) does. Tensors of
/// 1 MiB and more start at a multiple of 64 KiB in the data file, as ONNX Runtime aligns them
/// for memory mapping.
struct SaveOptions {
  bool external_data = false;
  int64_t external_min_bytes = 1024;   ///< onnx's size_threshold
  int64_t max_single_file = INT32_MAX; ///< larger models go to external data (lowered by tests)
};

/// The data file of a model written to `path`: its file name + ".data", in the same folder.
std::filesystem::path externalDataPath(const std::filesystem::path& path);

/// A model as the files saveModel writes: the ONNX file's bytes, and with external data the data
/// file's contents as pieces (views of the model's weights and of zero padding: valid while the
/// model is).
struct SerializedModel {
  std::string model;
  std::filesystem::path data_path;  ///< empty: one file
  std::vector<std::string_view> data;
  int64_t data_bytes = 0;
  int64_t totalBytes() const { return static_cast<int64_t>(model.size()) + data_bytes; }
};

/// Lays the model out for `path` (`path` names the data file, and the file in errors: a model
/// file still over 2 GB).
SerializedModel serializeModelFiles(const Model& m, const std::filesystem::path& path, const SaveOptions& opts = {});
/// serializeModelFiles(m, path, opts).totalBytes(), the bytes on disk, without copying weights.
int64_t savedModelBytes(const Model& m, const std::filesystem::path& path, const SaveOptions& opts = {});

class OutputSet;
/// Stages the model's files in `out` (the data file first) and returns their layout (the data
/// pieces are spent).
SerializedModel stageModel(OutputSet& out, const Model& m, const std::filesystem::path& path, const SaveOptions& opts = {});

/// Writes the model atomically: temporary files in the destination folder, then rename.
/// A failure leaves no partial file and never touches the destination's previous contents.
void saveModel(const Model& m, const std::filesystem::path& path, const SaveOptions& opts = {});
/// The bytes saveModel writes for a model that fits one file; `path` names the file in errors (a
/// model over protobuf's 2 GB, which needs serializeModelFiles).
std::string serializeModel(const Model& m, const std::filesystem::path& path);

/// Parses a model written in ONNX's text format (onnx/defs/parser.h); for tests and small tools.
Model parseModelText(std::string_view text, const LoadOptions& opts = {});

/// Fails with one line naming `path` unless writeFileAtomic can write it: its folder exists and is
/// writable, and `path` is not a folder. Commands call it for each output before any work.
void checkWritable(const std::filesystem::path& path);

/// A file a command reads or writes, and what it is to the user ("the input model", "--report").
struct NamedPath {
  std::string what;
  std::filesystem::path path;
};

/// Fails with one line naming the output unless every output in `outputs` (empty paths skipped)
/// can be written without harm: checkWritable, and a file can really be created in its folder;
/// not an existing file other than a regular file (a device such as /dev/null: the atomic write
/// renames over whatever is there); not the same file as an input (for an input folder, as any
/// file directly inside it) or as another output.
/// Commands call it before any work, and again with the input model's external data once loaded.
void checkOutputPaths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs);

/// The error for an output that exists and is not a regular file (a device, a pipe, a link to
/// one), which the rename of an atomic write would replace: "cannot write <named>: ...; <instead>".
[[noreturn]] void failSpecialFile(const std::string& named, const std::string& instead);

/// Reads a whole file the user named; `what` says what it should be ("the pipeline file"). A
/// missing file, a folder or a read error fails with one line naming the path.
std::string readUserFile(const std::filesystem::path& path, const std::string& what);

/// Writes bytes atomically (temp file in the same folder + fsync + rename, then the folder synced).
/// A target that exists and is not a regular file (a device, a pipe) is refused.
void writeFileAtomic(const std::filesystem::path& path, std::string_view bytes);

/// The files one run writes, put in place together. stage() writes a file in full to a temporary
/// file beside its target (fsync'ed; removed if a signal ends lwc); commit() renames every staged
/// file into place, in the order staged, once all of them are written, then syncs their folders.
/// Until commit() no target is touched, and staged files never committed (an error after staging)
/// are removed: a failed run leaves none of its outputs, where it used to leave the model without
/// its report, or a --save-calib file beside no model. (A rename that fails part-way through
/// commit() names the files already in place.)
class OutputSet {
 public:
  OutputSet() = default;
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;
  ~OutputSet();
  /// Fails with one line naming `path` (not writable, a special file, no space) and stages nothing.
  void stage(const std::filesystem::path& path, std::string_view bytes);
  /// The file is the pieces one after the other.
  void stage(const std::filesystem::path& path, const std::vector<std::string_view>& pieces);
  void commit();
  bool empty() const { return staged_.empty(); }

 private:
  struct Staged {
    std::filesystem::path target;
    std::string tmp;
    SignalCleanup guard;
  };
  std::vector<Staged> staged_;
};

/// Creates `prefix` + six random characters exclusively (O_EXCL, mode 0600), registered in `guard`
/// for removal on a fatal signal before it exists; returns the descriptor, or -1 with errno set.
int createExclusive(const std::string& prefix, std::string& name, SignalCleanup& guard);

/// Tensor <-> TensorProto. `base_dir` resolves external data; `where` names the tensor in errors.
Tensor tensorFromProto(const onnx::TensorProto& p, const std::filesystem::path& base_dir, const std::string& where);
onnx::TensorProto tensorToProto(const Tensor& t, const std::string& name);
/// tensorToProto(t, name).ByteSizeLong(), without copying the data.
int64_t tensorProtoBytes(const Tensor& t, const std::string& name);
/// Bytes a length-delimited protobuf field with a one-byte tag takes: the tag, the length, `body`
/// bytes (a message as an entry of its parent's repeated field; a tensor's raw_data).
int64_t framedFieldBytes(size_t body);

/// ValueInfo <-> ValueInfoProto.
ValueInfo valueInfoFromProto(const onnx::ValueInfoProto& p);
onnx::ValueInfoProto valueInfoToProto(const ValueInfo& v);

/// A node as a written model holds it; `default_opset` (the model's default-domain opset) decides
/// which trailing empty outputs its schema lets the file leave out.
onnx::NodeProto nodeToProto(const Node& n, int64_t default_opset);

}  // namespace lwc
