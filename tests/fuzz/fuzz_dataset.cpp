// libFuzzer target for the dataset readers (lwc/dataset.h): .npy, .npz (stored and deflated zip
// members), IDX (plain and gzip) with its labels file, PNG and JPEG images with labels.txt/.csv,
// preprocess.json, and ONNX test_data_set .pb tensors.
//
// Input: one byte choosing the kind of file and the model the data is fitted to, then the file's
// bytes. The file is written into a scratch folder (fixed names, so the readers see what a user's
// folder would hold), opened with openDataset and read to the end in batches of 3.
// lwc::Error is the expected answer to bad data; anything else (another exception, a sanitizer
// report, a batch of the wrong shape or a label out of range) is a bug.
// Seeds: tests/fuzz/corpus_dataset/, written by scripts/fuzz_dataset_seeds.py.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "lwc/dataset.h"
#include "lwc/status.h"

namespace fs = std::filesystem;

namespace {

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz_dataset: %s\n", what.c_str());
  std::abort();
}

void writeFile(const fs::path& p, const uint8_t* data, size_t size) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) bug("cannot write " + p.string());
}

void writeFile(const fs::path& p, const std::string& s) {
  writeFile(p, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A valid 2x2 8-bit grayscale PNG (pixels 0, 64, 128, 255), for the label-file kinds.
const unsigned char kTinyPng[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x00, 0x00, 0x00, 0x57, 0xdd, 0x52, 0xf8, 0x00, 0x00, 0x00,
    0x0e, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x70, 0x60, 0x68, 0xf8, 0x0f, 0x00, 0x03, 0x05, 0x01,
    0xc0, 0x4e, 0x33, 0x5b, 0xe9, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

/// The scratch folder, removed when the fuzzer exits normally (a crash leaves it for inspection).
struct Scratch {
  fs::path root = fs::temp_directory_path() / ("lwc_fuzz_dataset." + std::to_string(getpid()));
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

/// An .npy file (format 1.0) of uint8 values with the given shape.
std::string npyUint8(const std::string& shape, const std::string& values) {
  std::string h = "{'descr': '|u1', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  return std::string("\x93NUMPY\x01\x00", 8) + char(h.size() & 0xff) + char(h.size() >> 8) + h + values;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const Scratch scratch;
  const fs::path& root = scratch.root;
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::create_directories(root);

  const uint8_t sel = data[0];
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  lwc::DataOptions o;
  // Bits 4-5: the model the data is fitted to (none; a 1x28x28 classifier of 10 classes; a 3x8x8
  // input of 4 classes with batch fixed at 1; an NHWC uint8 input of any height and width).
  // Bit 6: read only the first 5 samples.
  switch ((sel >> 4) & 3) {
    case 1:
      o.sample_shape = {1, 28, 28};
      o.dtype = lwc::DType::Float32;
      o.num_classes = 10;
      break;
    case 2:
      o.sample_shape = {3, 8, 8};
      o.dtype = lwc::DType::Float32;
      o.num_classes = 4;
      o.fixed_batch = 1;
      break;
    case 3:
      o.sample_shape = {-1, -1, 3};
      o.dtype = lwc::DType::UInt8;
      break;
    default:
      break;
  }
  if (sel & 0x40) o.limit = 5;

  switch (sel & 0xf) {
    case 0: writeFile(o.path = root / "images.npy", body, n); break;
    case 1: writeFile(o.path = root / "images.npz", body, n); break;
    case 2: writeFile(o.path = root / "x-images-idx3-ubyte", body, n); break;
    case 3: writeFile(o.path = root / "x-images-idx3-ubyte.gz", body, n); break;
    case 4:  // an IDX labels file beside 3 valid 2x2 images
      writeFile(root / "x-images-idx3-ubyte", std::string("\0\0\x08\x03\0\0\0\x03\0\0\0\x02\0\0\0\x02", 16) + std::string(12, '\x07'));
      writeFile(root / "x-labels-idx1-ubyte", body, n);
      o.path = root / "x-images-idx3-ubyte";
      break;
    case 5: fs::create_directories(root / "c0"); writeFile(root / "c0" / "a.png", body, n); o.path = root; break;
    case 6: fs::create_directories(root / "c0"); writeFile(root / "c0" / "a.jpg", body, n); o.path = root; break;
    case 7:  // labels.txt or labels.csv for 3 valid images
    case 8:
      for (const char* name : {"a.png", "b.png", "c.png"}) writeFile(root / name, kTinyPng, sizeof kTinyPng);
      writeFile(root / ((sel & 0xf) == 7 ? "labels.txt" : "labels.csv"), body, n);
      o.path = root;
      break;
    case 9:  // preprocess.json beside 3 valid images
      for (const char* name : {"a.png", "b.png", "c.png"}) writeFile(root / name, kTinyPng, sizeof kTinyPng);
      writeFile(root / "preprocess.json", body, n);
      o.path = root;
      break;
    case 10:  // an ONNX test_data_set folder
      fs::create_directories(root / "test_data_set_0");
      writeFile(root / "test_data_set_0" / "input_0.pb", body, n);
      o.path = root;
      break;
    case 11:  // a labels .npy for 3 valid 2x2 uint8 images
      writeFile(root / "images.npy", npyUint8("(3, 2, 2)", std::string(12, '\x09')));
      writeFile(o.labels = root / "labels.npy", body, n);
      o.path = root / "images.npy";
      break;
    default: return 0;
  }

  try {
    auto ds = lwc::openDataset(o);
    const int64_t total = ds->size();
    int64_t seen = 0;
    while (auto b = ds->next(3)) {
      const auto& shape = b->inputs.shape();
      if (shape.empty() || shape[0] <= 0 || shape[0] > 3) bug("batch of " + std::to_string(shape.empty() ? -1 : shape[0]));
      if (o.fixed_batch > 0 && shape[0] != o.fixed_batch) bug("fixed batch not kept");
      if (!o.sample_shape.empty()) {
        if (shape.size() != o.sample_shape.size() + 1) bug("batch rank differs from the model's");
        for (size_t k = 0; k < o.sample_shape.size(); ++k)
          if (o.sample_shape[k] >= 0 && shape[k + 1] != o.sample_shape[k]) bug("batch shape differs from the model's");
      }
      if (o.dtype != lwc::DType::Undefined && b->inputs.dtype() != o.dtype) bug("batch type differs from the model's");
      if (!b->labels.empty()) {
        if (static_cast<int64_t>(b->labels.size()) != shape[0]) bug("label count differs from the batch");
        for (int64_t l : b->labels)
          if (l < 0 || (o.num_classes > 0 && l >= o.num_classes)) bug("label out of range: " + std::to_string(l));
      }
      if (b->first_index != seen) bug("first_index out of order");
      for (int64_t i = 0; i < shape[0]; ++i) (void)ds->sampleName(seen + i);
      seen += shape[0];
    }
    if (seen != total) bug("read " + std::to_string(seen) + " samples of " + std::to_string(total));
    (void)ds->describe();
    (void)lwc::preprocessingWarning(*ds);
  } catch (const lwc::Error& e) {
    static const bool verbose = std::getenv("FUZZ_DATASET_VERBOSE") != nullptr;  // to check the seeds
    if (verbose) std::fprintf(stderr, "fuzz_dataset: lwc::Error: %s\n", e.what());
  }
  return 0;
}
