#include <png.h>
#include <stdio.h>
#include <jpeglib.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "lwc/dataset.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "support/test_util.h"

using namespace lwc;
using Catch::Matchers::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kSample = test::testdataDir() / "fmnist_sample";
const fs::path kIdxImages = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";

/// Every sample of a dataset, flattened, with labels and names.
struct All {
  std::vector<std::vector<float>> x;
  std::vector<int64_t> y;
  std::vector<std::string> names;
  Shape batch_shape;
};

All readAll(Dataset& d, int64_t batch) {
  All a;
  while (auto b = d.next(batch)) {
    const Tensor& t = b->inputs;
    REQUIRE(t.dtype() == DType::Float32);
    REQUIRE(b->first_index == static_cast<int64_t>(a.x.size()));
    if (a.batch_shape.empty()) a.batch_shape = t.shape();
    const int64_t per = t.numel() / t.dim(0);
    for (int64_t i = 0; i < t.dim(0); ++i) {
      a.x.emplace_back(t.data<float>() + i * per, t.data<float>() + (i + 1) * per);
      a.names.push_back(d.sampleName(b->first_index + i));
    }
    a.y.insert(a.y.end(), b->labels.begin(), b->labels.end());
  }
  return a;
}

bool bitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// Writes a PNG with libpng; rows are packed as PNG stores them (16-bit big-endian).
void writePng(const fs::path& p, int w, int h, int color_type, int depth, const std::vector<uint8_t>& rows,
              const std::vector<png_color>& palette = {}, bool interlace = false) {
  FILE* f = std::fopen(p.c_str(), "wb");
  REQUIRE(f);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, w, h, depth, color_type, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  const int passes = png_set_interlace_handling(png);
  const size_t rowbytes = png_get_rowbytes(png, info);
  REQUIRE(rows.size() == rowbytes * h);
  for (int pass = 0; pass < passes; ++pass)
    for (int y = 0; y < h; ++y) png_write_row(png, rows.data() + y * rowbytes);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

void writeGray(const fs::path& p, int w, int h, const std::vector<uint8_t>& px) { writePng(p, w, h, PNG_COLOR_TYPE_GRAY, 8, px); }

void writeJpeg(const fs::path& p, int w, int h, int comps, const std::vector<uint8_t>& px) {
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  FILE* f = std::fopen(p.c_str(), "wb");
  REQUIRE(f);
  jpeg_stdio_dest(&c, f);
  c.image_width = w;
  c.image_height = h;
  c.input_components = comps;
  c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + c.next_scanline * w * comps;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

void put16(std::string& s, uint32_t v) { s += char(v & 0xff), s += char((v >> 8) & 0xff); }
void put32(std::string& s, uint32_t v) { put16(s, v & 0xffff), put16(s, v >> 16); }
void put64(std::string& s, uint64_t v) { put32(s, uint32_t(v)), put32(s, uint32_t(v >> 32)); }

std::string rawDeflate(const std::string& in) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

/// A zip archive as np.savez (stored) / np.savez_compressed (deflated) write it; numpy puts a zip64
/// extra field in each local header, which `zip64_local` imitates.
std::string makeZip(const std::vector<std::pair<std::string, std::string>>& members, bool deflate, bool zip64_local) {
  std::string out, cd;
  for (const auto& [name, data] : members) {
    const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
    const std::string comp = deflate ? rawDeflate(data) : data;
    const uint32_t off = static_cast<uint32_t>(out.size());
    std::string extra;
    if (zip64_local) {
      put16(extra, 1), put16(extra, 16), put64(extra, data.size()), put64(extra, comp.size());
    }
    put32(out, 0x04034b50), put16(out, 45), put16(out, 0), put16(out, deflate ? 8 : 0), put16(out, 0), put16(out, 0x21);
    put32(out, crc), put32(out, zip64_local ? 0xffffffff : comp.size()), put32(out, zip64_local ? 0xffffffff : data.size());
    put16(out, name.size()), put16(out, extra.size());
    out += name + extra + comp;
    put32(cd, 0x02014b50), put16(cd, 45), put16(cd, 45), put16(cd, 0), put16(cd, deflate ? 8 : 0), put16(cd, 0), put16(cd, 0x21);
    put32(cd, crc), put32(cd, comp.size()), put32(cd, data.size()), put16(cd, name.size()), put16(cd, 0), put16(cd, 0);
    put16(cd, 0), put16(cd, 0), put32(cd, 0), put32(cd, off);
    cd += name;
  }
  const uint32_t cd_off = static_cast<uint32_t>(out.size());
  out += cd;
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, members.size()), put16(out, members.size());
  put32(out, cd.size()), put32(out, cd_off), put16(out, 0);
  return out;
}

std::string gzip(const std::string& data) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string idxHeader(uint32_t n, uint32_t h, uint32_t w) {
  std::string s("\0\0\x08\x03", 4);
  for (uint32_t v : {n, h, w}) s += char(v >> 24), s += char(v >> 16), s += char(v >> 8), s += char(v);
  return s;
}

Preprocess raw(json extra = json::object()) {
  extra["scale"] = 1.0;
  return Preprocess::fromJson(extra, "test preprocessing");
}

DataOptions opts(const fs::path& p, std::optional<Preprocess> pp = std::nullopt, std::vector<int64_t> shape = {}) {
  DataOptions o;
  o.path = p;
  o.preprocess = std::move(pp);
  o.sample_shape = std::move(shape);
  return o;
}

/// The single sample of a one-image dataset.
std::pair<Shape, std::vector<float>> one(const DataOptions& o) {
  auto d = openDataset(o);
  auto b = d->next(8);
  REQUIRE(b);
  REQUIRE(b->inputs.dim(0) == 1);
  Shape s(b->inputs.shape().begin() + 1, b->inputs.shape().end());
  return {s, std::vector<float>(b->inputs.data<float>(), b->inputs.data<float>() + b->inputs.numel())};
}

}  // namespace

TEST_CASE("fmnist sample: PNG ImageFolder, .npy and IDX give identical batches", "[data]") {
  const Preprocess pp = Preprocess::load(kSample / "preprocess.json");
  DataOptions o;
  o.preprocess = pp;
  o.sample_shape = {1, 28, 28};
  o.num_classes = 10;

  o.path = kSample / "images.npy";
  auto npy = openDataset(o);
  CHECK(npy->size() == 500);
  CHECK(npy->hasLabels());
  CHECK_THAT(npy->describe(), Contains("labels from labels.npy"));
  const All a = readAll(*npy, 64);
  REQUIRE(a.x.size() == 500);
  REQUIRE(a.y.size() == 500);
  CHECK(a.batch_shape == Shape{64, 1, 28, 28});
  CHECK(a.names[3] == "images.npy[3]");
  // pixel value 0 -> (0 * scale - mean) / std
  bool saw_zero = false;
  for (float v : a.x[0]) saw_zero |= v == static_cast<float>(-0.286 / 0.353);
  CHECK(saw_zero);

  SECTION("the folder picks images.npy, its labels and preprocess.json") {
    DataOptions f;
    f.path = kSample;
    f.sample_shape = {1, 28, 28};
    auto d = openDataset(f);
    CHECK_THAT(d->describe(), Contains("images.npy"));
    REQUIRE(d->preprocessing());
    CHECK(d->preprocessing()->origin == (kSample / "preprocess.json").string());
    const All b = readAll(*d, 500);
    CHECK(b.x == a.x);
    CHECK(b.y == a.y);
  }

  SECTION("PNG ImageFolder") {
    o.path = kSample / "png";
    auto d = openDataset(o);
    CHECK(d->size() == 500);
    CHECK(d->classNames().size() == 10);
    CHECK_THAT(d->describe(), Contains("ImageFolder") && Contains("500 images") && Contains("10 classes"));
    const All b = readAll(*d, 50);
    REQUIRE(b.x.size() == 500);
    std::set<int64_t> seen;
    for (size_t i = 0; i < b.x.size(); ++i) {
      // png/<class>/<index in the test set>.png
      const int64_t idx = std::stoll(fs::path(b.names[i]).stem().string());
      REQUIRE(idx < 500);
      seen.insert(idx);
      INFO(b.names[i]);
      CHECK(bitEqual(b.x[i], a.x[idx]));
      CHECK(b.y[i] == a.y[idx]);
      CHECK(std::stoll(fs::path(b.names[i]).parent_path().string()) == b.y[i]);
    }
    CHECK(seen.size() == 500);
  }

  SECTION("flat image folder with labels.txt") {
    test::TempDir t;
    for (const auto& cls : fs::directory_iterator(kSample / "png"))
      for (const auto& f : fs::directory_iterator(cls.path())) fs::copy_file(f.path(), t / f.path().filename().string());
    fs::copy_file(kSample / "labels.txt", t / "labels.txt");
    o.path = t.path();
    auto d = openDataset(o);
    CHECK_THAT(d->describe(), Contains("labels from labels.txt"));
    const All b = readAll(*d, 128);
    REQUIRE(b.x.size() == 500);
    CHECK(b.y == a.y);
    for (size_t i = 0; i < 500; ++i) CHECK(bitEqual(b.x[i], a.x[i]));
  }

  SECTION("IDX (first 500 of the test set)") {
    if (!fs::exists(kIdxImages)) {
      WARN("skipped: " << kIdxImages << " not installed (package dataset-fashion-mnist)");
      return;
    }
    o.path = kIdxImages;
    o.limit = 500;
    auto d = openDataset(o);
    CHECK(d->size() == 500);
    CHECK_THAT(d->describe(), Contains("first 500 of 10000") && Contains("t10k-labels-idx1-ubyte.gz"));
    const All b = readAll(*d, 100);
    REQUIRE(b.x.size() == 500);
    CHECK(b.y == a.y);
    for (size_t i = 0; i < 500; ++i) CHECK(bitEqual(b.x[i], a.x[i]));
    SECTION("reset starts over") {
      d->reset();
      auto first = d->next(3);
      REQUIRE(first);
      CHECK(first->first_index == 0);
      CHECK(bitEqual(std::vector<float>(first->inputs.data<float>(), first->inputs.data<float>() + 784), a.x[0]));
    }
  }

  SECTION(".npz, stored and deflated") {
    const Tensor images = readNpy(kSample / "images.npy");
    const Tensor labels = readNpy(kSample / "labels.npy");
    for (const bool deflate : {false, true})
      for (const bool zip64 : {false, true}) {
        test::TempDir t;
        test::writeFile(t / "d.npz", makeZip({{"x.npy", toNpy(images)}, {"y.npy", toNpy(labels)}}, deflate, zip64));
        o.path = t / "d.npz";
        auto d = openDataset(o);
        CHECK_THAT(d->describe(), Contains("labels from d.npz:y"));
        const All b = readAll(*d, 77);
        CHECK(b.y == a.y);
        CHECK(b.x == a.x);
        d->reset();
        const All c = readAll(*d, 500);
        CHECK(c.x == a.x);
      }
  }
}

TEST_CASE("a float16 model input gets image batches rounded to float16, other types are refused", "[data]") {
  // Before 2026-12-01 a half-precision model could not be evaluated on images at all.
  DataOptions o;
  o.preprocess = Preprocess::load(kSample / "preprocess.json");
  o.sample_shape = {1, 28, 28};
  o.num_classes = 10;
  for (const fs::path& path : {kSample / "images.npy", kSample / "png"}) {
    INFO(path);
    o.path = path;
    o.dtype = DType::Float32;
    const All ref = readAll(*openDataset(o), 100);
    o.dtype = DType::Float16;
    auto d = openDataset(o);
    size_t i = 0;
    while (auto b = d->next(100)) {
      REQUIRE(b->inputs.dtype() == DType::Float16);
      const auto* h = static_cast<const uint16_t*>(b->inputs.raw());
      const int64_t per = b->inputs.numel() / b->inputs.dim(0);
      for (int64_t k = 0; k < b->inputs.dim(0); ++k, ++i)
        for (int64_t j = 0; j < per; ++j) REQUIRE(h[k * per + j] == floatToHalf(ref.x[i][static_cast<size_t>(j)]));
    }
    CHECK(i == 500);
  }
  o.path = kSample / "images.npy";
  o.dtype = DType::Int64;
  CHECK_THROWS_WITH(openDataset(o), Contains("images.npy: the model input is int64 but preprocessed images are float32"));
}

TEST_CASE("image data read with the default preprocessing, or arrays given a preprocessing they do not get, get a warning", "[data]") {
  DataOptions o;
  o.sample_shape = {1, 28, 28};
  o.num_classes = 10;
  // PNG folder without a preprocess.json of its own (the sample's sits one level up).
  o.path = kSample / "png";
  auto bare = openDataset(o);
  REQUIRE(bare->preprocessing());
  CHECK(bare->preprocessing()->origin == Preprocess{}.origin);
  CHECK_THAT(preprocessingWarning(*bare), Contains("ImageFolder") && Contains("only scaled to [0, 1]") &&
                                                    Contains("--preprocess FILE"));
  // Given explicitly, or found beside the data: no warning.
  o.preprocess = Preprocess::load(kSample / "preprocess.json");
  CHECK(preprocessingWarning(*openDataset(o)).empty());
  DataOptions beside;
  beside.path = kSample;
  beside.sample_shape = {1, 28, 28};
  CHECK(preprocessingWarning(*openDataset(beside)).empty());
  // Float arrays are fed as stored: nothing is preprocessed, nothing to warn about.
  test::TempDir d;
  writeNpy(d / "x.npy", Tensor(DType::Float32, {4, 1, 28, 28}));
  DataOptions f;
  f.path = d / "x.npy";
  f.sample_shape = {1, 28, 28};
  auto floats = openDataset(f);
  CHECK_FALSE(floats->preprocessing());
  CHECK(preprocessingWarning(*floats).empty());
  // ... unless a preprocessing was given for them, which they do not get: uint8 images for a
  // uint8 model input (Cast/Div inside the model) with the preprocess.json beside them.
  DataOptions u8;
  u8.path = kSample;
  u8.sample_shape = {1, 28, 28};
  u8.dtype = DType::UInt8;
  auto raw = openDataset(u8);
  CHECK_FALSE(raw->preprocessing());
  CHECK_THAT(preprocessingWarning(*raw), Contains("preprocess.json is not applied") && Contains("fed as stored"));
  f.preprocess = Preprocess::load(kSample / "preprocess.json");
  CHECK_THAT(preprocessingWarning(*openDataset(f)), Contains("x.npy") && Contains("is not applied"));
}

TEST_CASE("preprocessing JSON", "[data]") {
  SECTION("valid keys") {
    const Preprocess p = Preprocess::fromJson(
        json::parse(R"({"resize": 256, "crop": 224, "scale": 0.5, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                        "color": "bgr", "layout": "NHWC"})"),
        "p.json");
    CHECK(p.resize_short == 256);
    CHECK(p.crop == std::array<int64_t, 2>{224, 224});
    CHECK(p.scale == 0.5);
    CHECK(p.mean.size() == 3);
    CHECK(p.color == Preprocess::Color::Bgr);
    CHECK(p.layout == Preprocess::Layout::NHWC);
    const Preprocess q = Preprocess::fromJson(p.toJson(), "again");
    CHECK(q.toJson() == p.toJson());
    const Preprocess d = Preprocess::fromJson(json::object(), "empty");
    CHECK(d.scale == 1.0 / 255.0);
    CHECK(d.toJson()["resize"].is_null());
    CHECK(Preprocess::fromJson(json::parse(R"({"resize": [32, 48], "crop": [30, 40]})"), "x").resize_hw ==
          std::array<int64_t, 2>{32, 48});
  }
  SECTION("errors name the key and the file") {
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"crp": 3})"), "p.json"),
                      Contains("p.json") && Contains("\"crp\" (did you mean 'crop'?)") &&
                          Contains("valid keys: resize, crop, scale, mean, std, color, layout"));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"crop": "224"})"), "p.json"), Contains("p.json") && Contains("\"crop\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"resize": [1, 2, 3]})"), "p.json"), Contains("\"resize\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"resize": -5})"), "p.json"), Contains("\"resize\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"mean": [1, 2]})"), "p.json"), Contains("\"mean\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"std": [0]})"), "p.json"), Contains("\"std\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"scale": "1/255"})"), "p.json"), Contains("\"scale\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"color": "hsv"})"), "p.json"), Contains("\"color\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse(R"({"layout": "CHW"})"), "p.json"), Contains("\"layout\""));
    CHECK_THROWS_WITH(Preprocess::fromJson(json::parse("[1]"), "p.json"), Contains("p.json") && Contains("object"));
    test::TempDir t;
    test::writeFile(t / "bad.json", "{\"scale\": ");
    CHECK_THROWS_WITH(Preprocess::load(t / "bad.json"),
                      Contains("bad.json: not valid JSON: parse error at line 1, column 11") && !Contains("json.exception"));
    test::writeFile(t / "big.json", R"({"scale": 2e400})");  // nlohmann's out_of_range, not parse_error
    CHECK_THROWS_WITH(Preprocess::load(t / "big.json"), Contains("big.json: not valid JSON") && Contains("number overflow"));
  }
  SECTION("settings that contradict the model") {
    test::TempDir t;
    writeGray(t / "a.png", 4, 4, std::vector<uint8_t>(16, 7));
    CHECK_THROWS_WITH(openDataset(opts(t.path(), raw({{"color", "rgb"}}), {1, 4, 4})),
                      Contains("test preprocessing") && Contains("wants 1") && Contains("set \"color\": \"gray\""));
    CHECK_THROWS_WITH(openDataset(opts(t.path(), raw({{"mean", {1, 2, 3}}}), {1, 4, 4})), Contains("\"mean\" has 3 values"));
    CHECK_THROWS_WITH(openDataset(opts(t.path(), raw({{"layout", "NCHW"}}), {4, 4, 1})), Contains("set \"layout\": \"NHWC\""));
  }
}

TEST_CASE("resize, crop, color and layout on synthetic images", "[data]") {
  test::TempDir t;
  // 4 rows x 6 columns, v = 10*y + x + 1
  std::vector<uint8_t> px(24);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x) px[y * 6 + x] = static_cast<uint8_t>(10 * y + x + 1);
  writeGray(t / "a.png", 6, 4, px);

  SECTION("no resize: raw values") {
    auto [s, v] = one(opts(t.path(), raw()));
    CHECK(s == Shape{1, 4, 6});
    CHECK(v[7] == 12);
  }
  SECTION("shorter side to 2: 2x2 block means, halves rounded to even") {
    auto [s, v] = one(opts(t.path(), raw({{"resize", 2}})));
    CHECK(s == Shape{1, 2, 3});
    CHECK(v == std::vector<float>{6, 8, 10, 26, 28, 30});
  }
  SECTION("resize then crop: offsets round half to even") {
    auto [s, v] = one(opts(t.path(), raw({{"resize", 2}, {"crop", {1, 2}}})));
    CHECK(s == Shape{1, 1, 2});
    CHECK(v == std::vector<float>{6, 8});
  }
  SECTION("centre crops") {
    auto [s, v] = one(opts(t.path(), raw({{"crop", 2}})));
    CHECK(v == std::vector<float>{13, 14, 23, 24});
    auto [s3, v3] = one(opts(t.path(), raw({{"crop", 3}})));
    CHECK(v3 == std::vector<float>{3, 4, 5, 13, 14, 15, 23, 24, 25});
    CHECK_THROWS_WITH(openDataset(opts(t.path(), raw({{"crop", 5}}))), Contains("a.png") && Contains("smaller than the crop 5x5"));
  }
  SECTION("upscaling: half-pixel centres, edges clamped") {
    test::TempDir u;
    writeGray(u / "b.png", 2, 2, {0, 100, 0, 100});
    auto [s, v] = one(opts(u.path(), raw({{"resize", {1, 4}}})));
    CHECK(s == Shape{1, 1, 4});
    CHECK(v == std::vector<float>{0, 25, 75, 100});
  }
  SECTION("scale, mean, std") {
    auto [s, v] = one(opts(t.path(), Preprocess::fromJson({{"scale", 0.5}, {"mean", 1.0}, {"std", 2.0}}, "x")));
    CHECK(v[0] == static_cast<float>((1 * 0.5 - 1.0) / 2.0));
    CHECK(v[23] == static_cast<float>((36 * 0.5 - 1.0) / 2.0));
  }
  SECTION("size check against the model") {
    CHECK_THROWS_WITH(openDataset(opts(t.path(), raw(), {1, 2, 3})),
                      Contains("a.png") && Contains("4x6 after preprocessing but the model wants 2x3") && Contains("\"resize\"/\"crop\""));
    auto [s, v] = one(opts(t.path(), raw({{"resize", 2}}), {1, 2, 3}));
    CHECK(s == Shape{1, 2, 3});
    auto [sf, vf] = one(opts(t.path(), raw(), {24}));  // a flat model input takes the same values
    CHECK(sf == Shape{24});
    CHECK(vf[7] == 12);
  }

  SECTION("colour conversion and layouts") {
    test::TempDir c;
    writePng(c / "rgb.png", 2, 1, PNG_COLOR_TYPE_RGB, 8, {10, 200, 30, 1, 2, 3});
    auto [s, v] = one(opts(c.path(), raw()));
    CHECK(s == Shape{3, 1, 2});
    CHECK(v == std::vector<float>{10, 1, 200, 2, 30, 3});
    auto [sg, vg] = one(opts(c.path(), raw({{"color", "gray"}})));
    CHECK(sg == Shape{1, 1, 2});
    CHECK(vg == std::vector<float>{124, 2});  // Pillow: (10*19595 + 200*38470 + 30*7471 + 32768) >> 16
    auto [sb, vb] = one(opts(c.path(), raw({{"color", "bgr"}, {"layout", "NHWC"}})));
    CHECK(sb == Shape{1, 2, 3});
    CHECK(vb == std::vector<float>{30, 200, 10, 3, 2, 1});
    test::TempDir c2;
    writePng(c2 / "rgb.png", 1, 2, PNG_COLOR_TYPE_RGB, 8, {10, 200, 30, 1, 2, 3});
    auto [sn, vn] = one(opts(c2.path(), raw(), {2, 1, 3}));  // NHWC taken from the model's shape
    CHECK(sn == Shape{2, 1, 3});
    CHECK(vn == std::vector<float>{10, 200, 30, 1, 2, 3});

    test::TempDir g;
    writeGray(g / "g.png", 2, 1, {5, 250});
    auto [s3, v3] = one(opts(g.path(), raw({{"color", "rgb"}})));
    CHECK(s3 == Shape{3, 1, 2});
    CHECK(v3 == std::vector<float>{5, 250, 5, 250, 5, 250});
    CHECK_THROWS_WITH(openDataset(opts(g.path(), raw(), {3, 1, 2})),
                      Contains("g.png") && Contains("1 channel but the model input wants 3") && Contains("\"color\": \"rgb\""));
  }

  SECTION("PNG flavours: alpha, palette, 1-bit, 16-bit, interlaced") {
    test::TempDir c;
    writePng(c / "a_rgba.png", 1, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, {10, 20, 30, 0});
    writePng(c / "b_ga.png", 1, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {77, 9});
    writePng(c / "c_pal.png", 2, 1, PNG_COLOR_TYPE_PALETTE, 8, {1, 0}, {{1, 2, 3}, {40, 50, 60}});
    writePng(c / "d_1bit.png", 8, 1, PNG_COLOR_TYPE_GRAY, 1, {0xa0});
    writePng(c / "e_16.png", 2, 1, PNG_COLOR_TYPE_GRAY, 16, {0xff, 0xff, 0x80, 0x00});
    std::vector<uint8_t> big(9 * 7 * 3);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
    writePng(c / "f_interlaced.png", 9, 7, PNG_COLOR_TYPE_RGB, 8, big, {}, true);
    const auto single = [&](const std::string& name, Preprocess pp) {
      test::TempDir d;
      fs::copy_file(c / name, d / name);
      return one(opts(d.path(), std::move(pp)));
    };
    CHECK(single("a_rgba.png", raw()).second == std::vector<float>{10, 20, 30});
    CHECK(single("b_ga.png", raw()).second == std::vector<float>{77});
    CHECK(single("c_pal.png", raw()).second == std::vector<float>{40, 1, 50, 2, 60, 3});
    CHECK(single("d_1bit.png", raw()).second == std::vector<float>{255, 0, 255, 0, 0, 0, 0, 0});
    const auto v16 = single("e_16.png", raw()).second;
    CHECK(v16[0] == 255.0f);
    CHECK(v16[1] == static_cast<float>(32768 * 255.0 / 65535.0));
    const auto vi = single("f_interlaced.png", raw({{"layout", "NHWC"}})).second;
    CHECK(vi == std::vector<float>(big.begin(), big.end()));
  }

  SECTION("JPEG gray and RGB") {
    test::TempDir j;
    writeJpeg(j / "a.jpg", 8, 8, 1, std::vector<uint8_t>(64, 128));
    auto [s, v] = one(opts(j.path(), raw()));
    CHECK(s == Shape{1, 8, 8});
    CHECK(v == std::vector<float>(64, 128));
    test::TempDir k;
    std::vector<uint8_t> rgb;
    for (int i = 0; i < 64; ++i) rgb.insert(rgb.end(), {200, 50, 90});
    writeJpeg(k / "b.JPEG", 8, 8, 3, rgb);
    auto [s3, v3] = one(opts(k.path(), raw()));
    CHECK(s3 == Shape{3, 8, 8});
    CHECK(std::abs(v3[0] - 200) <= 2);
    CHECK(std::abs(v3[64] - 50) <= 2);
    CHECK(std::abs(v3[128] - 90) <= 2);
    // A CMYK JPEG is valid (PIL reads it), so not "corrupt": named as what it is, with the fix.
    test::TempDir m;
    writeJpeg(m / "c.jpg", 8, 8, 4, std::vector<uint8_t>(256, 30));
    CHECK_THROWS_WITH(one(opts(m.path(), raw())),
                      Contains("c.jpg: a CMYK JPEG, which lwc does not read; convert the image to RGB") && !Contains("corrupt"));
  }
}

TEST_CASE("bad data gets one error naming the file", "[data]") {
  test::TempDir t;
  const fs::path real = kSample / "png" / "00" / "00019.png";

  SECTION("corrupt (truncated) PNG") {
    fs::create_directories(t / "cls");
    const std::string bytes = test::readFile(real);
    test::writeFile(t / "cls" / "bad.png", bytes.substr(0, bytes.size() / 2));
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("bad.png") && Contains("corrupt PNG"));
    test::writeFile(t / "cls" / "bad.png", "not an image");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("bad.png") && Contains("not a PNG or JPEG"));
  }
  SECTION("images at the top of an ImageFolder, and an image that is a link to a missing file") {
    // One stray preview.png at the top turned a labelled ImageFolder into a flat folder of 1
    // unlabelled image (calibration then ran on it); a dangling link was left out without a word.
    for (const char* c : {"00", "01"}) {
      fs::create_directories(t / "if" / c);
      writeGray(t / "if" / c / "a.png", 2, 2, {1, 2, 3, 4});
    }
    CHECK(openDataset(opts(t / "if"))->size() == 2);
    writeGray(t / "if" / "preview.png", 2, 2, {1, 2, 3, 4});
    CHECK_THROWS_WITH(openDataset(opts(t / "if")),
                      Contains("holds images at its top (1, e.g. 'preview.png') and class folders of images (e.g. '00')"));
    fs::remove(t / "if" / "preview.png");
    fs::create_symlink(t / "nowhere.png", t / "if" / "01" / "b.png");
    CHECK_THROWS_WITH(openDataset(opts(t / "if")), Contains("b.png") && Contains("a link to a missing file"));
  }
  SECTION("images in nested folders of a class folder belong to that class, as in torchvision") {
    for (const char* c : {"00", "01"}) {
      fs::create_directories(t / "nest" / c / "batch2");
      writeGray(t / "nest" / c / "a.png", 2, 2, {1, 2, 3, 4});
      writeGray(t / "nest" / c / "batch2" / "b.png", 2, 2, {1, 2, 3, 4});
    }
    fs::create_directories(t / "nest" / "01" / ".cache");
    writeGray(t / "nest" / "01" / ".cache" / "c.png", 2, 2, {1, 2, 3, 4});  // hidden: not data
    auto d = openDataset(opts(t / "nest"));
    CHECK(d->size() == 4);
    const auto b = d->next(4);
    REQUIRE(b);
    CHECK(b->labels == std::vector<int64_t>{0, 0, 1, 1});
  }
  SECTION("a class's images in torchvision's order: the folder's own files first, then its subfolders'") {
    // Sorting whole paths put "sub/b.png" before "z.png" ('/' < 'z'); torchvision's sorted(os.walk)
    // takes a folder's files before its subfolders' ("sub-x.png" < "z.png", then "sub/b.png").
    fs::create_directories(t / "ord" / "c" / "sub");
    for (const char* f : {"sub-x.png", "sub/b.png", "z.png"}) writeGray(t / "ord" / "c" / f, 2, 2, {1, 2, 3, 4});
    auto d = openDataset(opts(t / "ord"));
    CHECK(readAll(*d, 8).names == std::vector<std::string>{"c/sub-x.png", "c/z.png", "c/sub/b.png"});
  }
  SECTION("a linked folder inside a class folder is followed, as torchvision's os.walk(followlinks=True) does") {
    fs::create_directories(t / "elsewhere");
    writeGray(t / "elsewhere" / "q.png", 2, 2, {1, 2, 3, 4});
    for (const char* c : {"00", "01"}) {
      fs::create_directories(t / "lnk" / c);
      writeGray(t / "lnk" / c / "a.png", 2, 2, {1, 2, 3, 4});
    }
    fs::create_directory_symlink(t / "elsewhere", t / "lnk" / "01" / "more");
    const All a = readAll(*openDataset(opts(t / "lnk")), 8);
    CHECK(a.names == std::vector<std::string>{"00/a.png", "01/a.png", "01/more/q.png"});
    CHECK(a.y == std::vector<int64_t>{0, 1, 1});
    // A link back up would be followed forever: named instead.
    fs::create_directory_symlink(t / "lnk", t / "lnk" / "00" / "up");
    CHECK_THROWS_WITH(openDataset(opts(t / "lnk")), Contains("folders nested more than 64 deep") && Contains("remove the link"));
  }
  SECTION("a hidden folder of images at the top is refused: torchvision would number it as a class") {
    for (const char* c : {".ipynb_checkpoints", "a", "b"}) {
      fs::create_directories(t / "hid" / c);
      writeGray(t / "hid" / c / "1.png", 2, 2, {1, 2, 3, 4});
    }
    CHECK_THROWS_WITH(openDataset(opts(t / "hid")),
                      Contains(".ipynb_checkpoints: a hidden folder with images") && Contains("Move it out of"));
    fs::remove_all(t / "hid" / ".ipynb_checkpoints" / "1.png");  // an empty one (or one of other files) is no class
    CHECK(openDataset(opts(t / "hid"))->size() == 2);
  }
  SECTION("image types torchvision reads and lwc does not are named, not left out") {
    for (const char* c : {"a", "b"}) {
      fs::create_directories(t / "bmp" / c);
      writeGray(t / "bmp" / c / "1.png", 2, 2, {1, 2, 3, 4});
    }
    CHECK(openDataset(opts(t / "bmp"))->size() == 2);
    for (const char* ext : {".bmp", ".TIF", ".webp", ".ppm"}) {
      const fs::path f = t / "bmp" / "b" / (std::string("2") + ext);
      test::writeFile(f, "x");
      CHECK_THROWS_WITH(openDataset(opts(t / "bmp")), Contains(f.filename().string()) && Contains("lwc reads PNG and JPEG images"));
      fs::remove(f);
    }
    test::writeFile(t / "bmp" / "b" / "notes.txt", "not an image");  // other files stay ignored
    CHECK(openDataset(opts(t / "bmp"))->size() == 2);
  }
  SECTION("a valid PNG larger than the pixel limit is named as such, not as corrupt") {
    // IHDR of 60000 x 60000 gray pixels and a short IDAT: 74 bytes.
    const unsigned char png[] = {0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0xea, 0x60, 0x00, 0x00, 0xea, 0x60, 0x08, 0x00, 0x00, 0x00, 0x00, 0xa5, 0xb9, 0x2a, 0x9e, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0xa3, 0x60, 0x14, 0x0c, 0x77, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x01, 0xb3, 0xa6, 0xd3, 0x46, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    fs::create_directories(t / "big" / "c0");
    test::writeFile(t / "big" / "c0" / "0.png", std::string(reinterpret_cast<const char*>(png), sizeof png));
    CHECK_THROWS_WITH(openDataset(opts(t / "big"))->next(1),
                      Contains("0.png: 60000x60000 pixels is over lwc's limit of 268435456 pixels per image"));
  }
  SECTION("corrupt (truncated) JPEG") {
    writeJpeg(t / "a.jpg", 64, 64, 3, std::vector<uint8_t>(64 * 64 * 3, 99));
    const std::string bytes = test::readFile(t / "a.jpg");
    test::writeFile(t / "a.jpg", bytes.substr(0, bytes.size() / 2));
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("a.jpg") && Contains("corrupt JPEG"));
  }
  SECTION("3-channel image for a 1-channel model without colour conversion") {
    writeGray(t / "a.png", 2, 2, {1, 2, 3, 4});
    writePng(t / "b.png", 2, 2, PNG_COLOR_TYPE_RGB, 8, std::vector<uint8_t>(12, 9));
    auto d = openDataset(opts(t.path(), std::nullopt, {1, 2, 2}));
    CHECK_THROWS_WITH(d->next(2), Contains("b.png") && Contains("image has 3 channels but the model input wants 1") &&
                                      Contains("set \"color\": \"gray\" in the preprocessing JSON"));
  }
  SECTION(".npy of the wrong shape for the model") {
    writeNpy(t / "images.npy", Tensor(DType::UInt8, {4, 32, 32}));
    CHECK_THROWS_WITH(openDataset(opts(t / "images.npy", std::nullopt, {1, 28, 28})),
                      Contains("images.npy") && Contains("32x32 after preprocessing but the model wants 28x28"));
    writeNpy(t / "f.npy", Tensor(DType::Float32, {4, 784}));
    CHECK_THROWS_WITH(openDataset(opts(t / "f.npy", std::nullopt, {1, 28, 28})),
                      Contains("f.npy") && Contains("does not match the model input [?,1,28,28]"));
    writeNpy(t / "g.npy", Tensor(DType::Float64, {4, 1, 28, 28}));
    CHECK_THROWS_WITH(openDataset(opts(t / "g.npy", std::nullopt, {1, 28, 28})), Contains("g.npy") && Contains("float32"));
    writeNpy(t / "h.npy", Tensor(DType::UInt8, {4, 5}));
    CHECK_THROWS_WITH(openDataset(opts(t / "h.npy")), Contains("h.npy") && Contains("is not images"));
    std::string cut = toNpy(Tensor(DType::Float32, {4, 1, 28, 28}));
    test::writeFile(t / "cut.npy", cut.substr(0, cut.size() - 5));
    CHECK_THROWS_WITH(openDataset(opts(t / "cut.npy")), Contains("cut.npy") && Contains("truncated"));
  }
  SECTION("float samples holding NaN or infinity") {
    // Fed as stored, they flowed through every layer: lsq recovery fitted to NaN activations
    // reported a near-zero error and wrote a model.
    for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      Tensor x(DType::Float32, {5, 1, 2, 2});
      x.data<float>()[3 * 4 + 1] = bad;  // sample 3
      writeNpy(t / "f.npy", x);
      auto d = openDataset(opts(t / "f.npy", std::nullopt, {1, 2, 2}));
      CHECK_NOTHROW(d->next(3));
      CHECK_THROWS_WITH(d->next(2), Contains("f.npy") && Contains("sample 3 holds NaN or infinity"));
    }
  }
  SECTION("IDX header lying about its size") {
    const std::string header = idxHeader(10000, 28, 28);
    test::writeFile(t / "t10k-images-idx3-ubyte.gz", gzip(header + "abc"));
    CHECK_THROWS_WITH(openDataset(opts(t / "t10k-images-idx3-ubyte.gz")),
                      Contains("t10k-images-idx3-ubyte.gz") && Contains("header says 10000 images of 28x28 but the file holds 3 bytes of data"));
    test::writeFile(t / "plain-images-idx3-ubyte", header + "abc");
    CHECK_THROWS_WITH(openDataset(opts(t / "plain-images-idx3-ubyte")),
                      Contains("plain-images-idx3-ubyte") && Contains("holds 3 bytes of data"));
    // Another element type (signed bytes, 0x09) was "unrecognised data file".
    std::string signed_header = header;
    signed_header[2] = '\x09';
    test::writeFile(t / "s-images-idx3-ubyte", signed_header + "abc");
    CHECK_THROWS_WITH(openDataset(opts(t / "s-images-idx3-ubyte")), Contains("IDX element type 0x9 is not supported"));
    if (fs::exists(kIdxImages)) {  // a real file cut in half: the gzip stream is truncated
      const std::string bytes = test::readFile(kIdxImages);
      test::writeFile(t / "cut-images-idx3-ubyte.gz", bytes.substr(0, bytes.size() / 2));
      CHECK_THROWS_WITH(openDataset(opts(t / "cut-images-idx3-ubyte.gz")),
                        Contains("cut-images-idx3-ubyte.gz") && Contains("header says 10000 images") && Contains("truncated"));
    }
  }
  SECTION("IDX labels that do not match") {
    std::string img = idxHeader(3, 2, 2) + std::string(12, '\x05');
    test::writeFile(t / "x-images-idx3-ubyte", img);
    test::writeFile(t / "x-labels-idx1-ubyte", std::string("\0\0\x08\x01\0\0\0\x02\x01\x02", 10));
    CHECK_THROWS_WITH(openDataset(opts(t / "x-images-idx3-ubyte")),
                      Contains("x-labels-idx1-ubyte has 2 labels but") && Contains("holds 3 images"));
    test::writeFile(t / "x-labels-idx1-ubyte", std::string("\0\0\x08\x01\0\0\0\x03\x01\x02\x0c", 11));
    DataOptions o = opts(t / "x-images-idx3-ubyte");
    o.num_classes = 10;
    CHECK_THROWS_WITH(openDataset(o), Contains("x-labels-idx1-ubyte[2]") && Contains("label 12 is out of range"));
    o.num_classes = 0;
    auto d = openDataset(o);
    auto b = d->next(10);
    REQUIRE(b);
    CHECK(b->labels == std::vector<int64_t>{1, 2, 12});
    CHECK(b->inputs.shape() == Shape{3, 1, 2, 2});
    CHECK(b->inputs.data<float>()[0] == 5.0f / 255.0f);
  }
  SECTION(".npy labels at the ends of 64-bit integers") {
    // Read through a double, INT64_MAX became 2^63 and its conversion back was undefined
    // (fuzz_dataset under UBSan, 2026-12-04). Without a model the class count is unknown, so it is
    // a label like any other, read exactly; negative and unrepresentable ones are one error each,
    // naming the file and index.
    writeNpy(t / "images.npy", Tensor(DType::UInt8, {3, 28, 28}));
    writeNpy(t / "labels.npy", Tensor::fromVector<int64_t>({3}, {1, std::numeric_limits<int64_t>::max(), 0}));
    {
      auto d = openDataset(opts(t.path(), std::nullopt, {1, 28, 28}));
      auto b = d->next(3);
      REQUIRE(b);
      CHECK(b->labels == std::vector<int64_t>{1, std::numeric_limits<int64_t>::max(), 0});
    }
    writeNpy(t / "labels.npy", Tensor::fromVector<int64_t>({3}, {1, std::numeric_limits<int64_t>::min(), 0}));
    CHECK_THROWS_WITH(openDataset(opts(t.path(), std::nullopt, {1, 28, 28})),
                      Contains("labels.npy[1]") && Contains("is negative"));
    writeNpy(t / "labels.npy", Tensor::fromVector<uint64_t>({3}, {1, 0, uint64_t{1} << 63}));
    CHECK_THROWS_WITH(openDataset(opts(t.path(), std::nullopt, {1, 28, 28})),
                      Contains("labels.npy") && Contains("[2]: label 9223372036854775808 is out of range"));
    writeNpy(t / "labels.npy", Tensor::fromVector<uint64_t>({3}, {1, 0, 9}));
    auto d = openDataset(opts(t.path(), std::nullopt, {1, 28, 28}));
    auto b = d->next(3);
    REQUIRE(b);
    CHECK(b->labels == std::vector<int64_t>{1, 0, 9});
    // The same reading for an .npz's label array.
    const Tensor images(DType::UInt8, {3, 28, 28});
    test::writeFile(t / "d.npz", makeZip({{"x.npy", toNpy(images)}, {"y.npy", toNpy(Tensor::fromVector<uint64_t>({3}, {1, uint64_t{1} << 63, 0}))}},
                                         false, false));
    CHECK_THROWS_WITH(openDataset(opts(t / "d.npz", std::nullopt, {1, 28, 28})),
                      Contains("d.npz") && Contains("[1]: label 9223372036854775808 is out of range"));
    test::writeFile(t / "d.npz", makeZip({{"x.npy", toNpy(images)}, {"y.npy", toNpy(Tensor::fromVector<int64_t>({3}, {1, std::numeric_limits<int64_t>::max(), 0}))}},
                                         false, false));
    auto dz = openDataset(opts(t / "d.npz", std::nullopt, {1, 28, 28}));
    auto bz = dz->next(3);
    REQUIRE(bz);
    CHECK(bz->labels == std::vector<int64_t>{1, std::numeric_limits<int64_t>::max(), 0});
  }

  SECTION(".npy bool labels and inputs with bytes other than 0 and 1 read as True") {
    // A bool holding any other byte was undefined behaviour (fuzz_dataset under UBSan, 2026-12-05).
    writeNpy(t / "images.npy", Tensor(DType::UInt8, {3, 28, 28}));
    std::string lab = toNpy(Tensor::fromVector<bool>({3}, {false, true, false}));
    lab[lab.size() - 2] = '\x20';
    test::writeFile(t / "labels.npy", lab);
    auto d = openDataset(opts(t.path(), std::nullopt, {1, 28, 28}));
    auto b = d->next(3);
    REQUIRE(b);
    CHECK(b->labels == std::vector<int64_t>{0, 1, 0});
    // A bool array fed as stored (a model with a bool input), bytes 0x00 0x05 0x01 0xff per sample.
    fs::remove(t / "images.npy");
    fs::remove(t / "labels.npy");
    std::string mask = toNpy(Tensor(DType::Bool, {2, 4}));
    const std::string bytes("\x00\x05\x01\xff\x00\x05\x01\xff", 8);
    mask.replace(mask.size() - 8, 8, bytes);
    test::writeFile(t / "mask.npy", mask);
    DataOptions o = opts(t / "mask.npy", std::nullopt, {4});
    o.dtype = DType::Bool;
    auto dm = openDataset(o);
    auto bm = dm->next(2);
    REQUIRE(bm);
    REQUIRE(bm->inputs.dtype() == DType::Bool);
    const auto* mb = static_cast<const uint8_t*>(bm->inputs.raw());
    CHECK(std::vector<int>(mb, mb + 8) == std::vector<int>{0, 1, 1, 1, 0, 1, 1, 1});
  }

  SECTION("labels file with fewer lines than images") {
    for (int i = 0; i < 3; ++i) writeGray(t / ("im" + std::to_string(i) + ".png"), 2, 2, {1, 2, 3, 4});
    test::writeFile(t / "labels.txt", "1\n2\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.txt has 2 lines but the folder") && Contains("has 3 images"));
    test::writeFile(t / "labels.txt", "1\n-2\n0\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.txt line 2") && Contains("negative"));
    test::writeFile(t / "labels.txt", "1\ncat\n0\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.txt line 2") && Contains("not an integer"));
    test::writeFile(t / "labels.txt", "1\n2\n0\n");
    auto d = openDataset(opts(t.path()));
    CHECK(readAll(*d, 2).y == std::vector<int64_t>{1, 2, 0});
    // A UTF-8 byte-order mark before the first label ("'1' is not an integer label", the mark unseen),
    // and before the first file name of a CSV without a header.
    test::writeFile(t / "labels.txt", "\xEF\xBB\xBF" "1\n2\n0\n");
    CHECK(readAll(*openDataset(opts(t.path())), 2).y == std::vector<int64_t>{1, 2, 0});
    fs::remove(t / "labels.txt");
    test::writeFile(t / "labels.csv", "\xEF\xBB\xBF" "im0.png,4\nim1.png,5\nim2.png,6\n");
    CHECK(readAll(*openDataset(opts(t.path())), 2).y == std::vector<int64_t>{4, 5, 6});
  }
  SECTION("CSV labels by file name, with a header") {
    for (int i = 0; i < 3; ++i) writeGray(t / ("im" + std::to_string(i) + ".png"), 2, 2, {1, 2, 3, 4});
    test::writeFile(t / "labels.csv", "file,label\nim2.png,7\nim0.png,5\nim1.png,6\n");
    auto d = openDataset(opts(t.path()));
    CHECK(readAll(*d, 3).y == std::vector<int64_t>{5, 6, 7});
    test::writeFile(t / "labels.csv", "file,label\nim2.png,7\nim0.png,5\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.csv has no label for 'im1.png'"));
    test::writeFile(t / "labels.csv", "im2.png,7\nim0.png,5\nim9.png,1\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.csv") && Contains("'im9.png'"));
    // A third column was read as the label, and "im2.png,7" as a file name that is no image.
    test::writeFile(t / "labels.csv", "file,label,split\nim2.png,7,test\nim0.png,5,test\nim1.png,6,test\n");
    CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("labels.csv line 2: 3 columns; a labels CSV has two, file,label"));
  }
  SECTION("empty folder, missing path, ImageFolder class count") {
    CHECK_THROWS_WITH(openDataset(opts(t.path())),
                      Contains("folder '" + t.path().string() + "' holds no images (.png, .jpg, .jpeg)"));
    CHECK_THROWS_WITH(openDataset(opts(t / "nope")), Contains("nope") && Contains("no such file or folder"));
    // The parent of an ImageFolder (images two folders down) names the folder that is meant.
    fs::create_directories(t / "up" / "train" / "cat");
    writeGray(t / "up" / "train" / "cat" / "a.png", 2, 2, {1, 2, 3, 4});
    CHECK_THROWS_WITH(openDataset(opts(t / "up")), Contains("only two or more folders down (e.g. 'train/cat/a.png')") &&
                                                       Contains("(e.g. '" + (t / "up" / "train").string() + "')"));
    fs::remove_all(t / "up");
    // An MNIST-style folder (Debian's fashion-mnist): the IDX image files are named, labels not.
    fs::create_directories(t / "mnist");
    for (const char* f : {"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
      test::writeFile(t / "mnist" / f, "x");
    CHECK_THROWS_WITH(openDataset(opts(t / "mnist")),
                      Contains("holds IDX image files ('t10k-images-idx3-ubyte', 'train-images-idx3-ubyte.gz'); give one "
                               "of them, e.g. '" + (t / "mnist" / "t10k-images-idx3-ubyte").string() + "'"));
    fs::remove_all(t / "mnist");
    test::writeFile(t / "notes.bin", "hello");
    CHECK_THROWS_WITH(openDataset(opts(t / "notes.bin")), Contains("notes.bin") && Contains("unrecognised"));
    for (int c = 0; c < 3; ++c) {
      fs::create_directories(t / std::to_string(c));
      writeGray(t / std::to_string(c) / "a.png", 2, 2, {1, 2, 3, 4});
    }
    DataOptions o = opts(t.path());
    o.num_classes = 2;
    CHECK_THROWS_WITH(openDataset(o), Contains("3 class folders but the model predicts 2"));
  }
  SECTION("corrupt .npz") {
    const std::string zip = makeZip({{"x.npy", toNpy(Tensor(DType::UInt8, {50, 4, 4}))}}, false, false);
    std::string bad = zip;
    bad[200] ^= 1;  // inside the stored data: the CRC no longer matches
    test::writeFile(t / "a.npz", bad);
    auto d = openDataset(opts(t / "a.npz"));
    CHECK_THROWS_WITH(readAll(*d, 16), Contains("a.npz") && Contains("CRC-32 mismatch"));
    test::writeFile(t / "b.npz", zip.substr(0, zip.size() - 30));
    CHECK_THROWS_WITH(openDataset(opts(t / "b.npz")), Contains("b.npz") && Contains("zip"));
    const std::string deflated = makeZip({{"x.npy", toNpy(Tensor(DType::UInt8, {50, 4, 4}))}}, true, false);
    bad = deflated;
    bad[60] ^= 0x55;
    test::writeFile(t / "c.npz", bad);
    CHECK_THROWS_WITH(readAll(*openDataset(opts(t / "c.npz")), 16), Contains("c.npz"));
  }
}

TEST_CASE("ONNX test_data_set folders", "[data]") {
  test::TempDir t;
  std::vector<float> v(5 * 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  const Tensor a = Tensor::fromVector<float>({3, 1, 2, 2}, std::vector<float>(v.begin(), v.begin() + 12));
  const Tensor b = Tensor::fromVector<float>({2, 1, 2, 2}, std::vector<float>(v.begin() + 12, v.end()));
  for (const auto& [dir, tensor] : {std::pair{"test_data_set_0", a}, std::pair{"test_data_set_1", b}}) {
    fs::create_directories(t / dir);
    test::writeFile(t / dir / "input_0.pb", tensorToProto(tensor, "input").SerializeAsString());
    test::writeFile(t / dir / "output_0.pb", "ignored");
  }
  auto d = openDataset(opts(t.path(), std::nullopt, {1, 2, 2}));
  CHECK(d->size() == 5);
  CHECK_FALSE(d->hasLabels());
  CHECK_THAT(d->describe(), Contains("2 sets"));
  const All all = readAll(*d, 2);  // batches of at most 2: [2], [1], [2]
  REQUIRE(all.x.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(all.x[i][0] == static_cast<float>(4 * i));
  CHECK(all.names[4] == "test_data_set_1/input_0.pb[1]");
  CHECK_THROWS_WITH(openDataset(opts(t.path(), std::nullopt, {3, 2, 2})), Contains("input_0.pb") && Contains("does not match"));
  test::writeFile(t / "test_data_set_1" / "input_0.pb", "\xff\xff\xff garbage");
  CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("test_data_set_1") && Contains("input_0.pb"));
  // bfloat16 data: the advice is to convert it, not the model-export tip an initializer gets.
  onnx::TensorProto bf = tensorToProto(a, "input");
  bf.clear_raw_data();
  bf.clear_float_data();
  bf.set_data_type(onnx::TensorProto::BFLOAT16);
  bf.set_raw_data(std::string(24, '\0'));
  test::writeFile(t / "test_data_set_1" / "input_0.pb", bf.SerializeAsString());
  CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("BFLOAT16") && Contains("convert it to float32") &&
                                                     !Contains("torch.onnx.export"));
  // A .pb of exactly 2 GiB is refused before it is read (protobuf parses at most 2 GiB - 1 byte).
  test::writeFile(t / "test_data_set_1" / "input_0.pb", "");
  fs::resize_file(t / "test_data_set_1" / "input_0.pb", uintmax_t(1) << 31);
  CHECK_THROWS_WITH(openDataset(opts(t.path())), Contains("input_0.pb: file is 2147483648 bytes, more than the 2147483647"));
}

TEST_CASE("limits", "[data]") {
  DataOptions o = opts(kSample / "png");
  o.limit = 20;
  auto d = openDataset(o);
  CHECK(d->size() == 20);
  CHECK_THAT(d->describe(), Contains("20 of 500 images, evenly spaced"));
  const All a = readAll(*d, 7);
  CHECK(std::set<int64_t>(a.y.begin(), a.y.end()).size() == 10);  // every class, not just the first
  o.path = kSample / "images.npy";
  auto n = openDataset(o);
  CHECK_THAT(n->describe(), Contains("first 20 of 500"));
  CHECK(readAll(*n, 64).x.size() == 20);
  o.limit = -1;
  CHECK_THROWS_WITH(openDataset(o), Contains("limit"));
}

TEST_CASE("a model with a fixed batch size gets batches of exactly that size", "[data]") {
  // Models exported with batch 1 (or 4) accept no other batch: every batch has that size,
  // whatever a caller asks next() for, and a sample count that leaves a partial batch is an error.
  DataOptions o = opts(kSample / "images.npy");
  o.fixed_batch = 1;
  o.limit = 5;
  auto one = openDataset(o);
  int batches = 0;
  while (auto b = one->next(16)) {
    CHECK(b->inputs.dim(0) == 1);
    CHECK(b->first_index == batches);
    ++batches;
  }
  CHECK(batches == 5);
  o.fixed_batch = 4;
  CHECK_THROWS_WITH(openDataset(o), Contains("5 samples do not fill batches of 4") && Contains("--calib-limit"));
  // The caller names the option that set the limit; a pass's own cap takes over when it is lower.
  o.limit_hint = "--limit";
  CHECK_THROWS_WITH(openDataset(o), Contains("(--limit)"));
  o.limit = 0;
  capSamples(o, 7, "calib_samples");
  CHECK(o.limit == 7);
  CHECK_THROWS_WITH(openDataset(o), Contains("7 samples do not fill batches of 4,") && Contains("(calib_samples)"));
  capSamples(o, 9, "ignored");  // no lower than the limit in effect: nothing changes
  CHECK(o.limit == 7);
  CHECK(o.limit_hint == "calib_samples");
  o.limit = 5;
  o.limit_hint.clear();
  o.limit = 8;
  auto four = openDataset(o);
  batches = 0;
  while (auto b = four->next(3)) {
    CHECK(b->inputs.dim(0) == 4);
    ++batches;
  }
  CHECK(batches == 2);
}

TEST_CASE("a batch the caller keeps is never overwritten, a released one is reused", "[data]") {
  // Datasets build the next batch in the last one's buffer once nobody holds it (a fresh 256 KiB+
  // batch costs a page fault per 4 KiB). Batches kept by the caller, or views of them, must keep
  // their values.
  test::TempDir d;
  Tensor f(DType::Float32, {60, 1, 28, 28});
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = static_cast<float>(i % 977) * 0.5f;
  writeNpy(d / "f.npy", f);
  const Preprocess pp = Preprocess::load(kSample / "preprocess.json");
  for (const fs::path& src : {kSample / "images.npy", kSample / "png", d / "f.npy"}) {
    INFO(src);
    const DataOptions o = opts(src, pp, {1, 28, 28});
    auto ref_ds = openDataset(o);
    const All ref = readAll(*ref_ds, 10);
    auto ds = openDataset(o);
    auto kept = ds->next(10);
    REQUIRE(kept);
    const Tensor kept_view = kept->inputs.view(0, {1, 1, 28, 28});
    const std::vector<float> kept_values(kept->inputs.data<float>(), kept->inputs.data<float>() + kept->inputs.numel());
    const void* released = nullptr;
    int64_t batches = 1, reused = 0;
    while (auto b = ds->next(10)) {
      CHECK(b->inputs.raw() != kept->inputs.raw());
      reused += b->inputs.raw() == released;
      const int64_t per = b->inputs.numel() / b->inputs.dim(0);
      for (int64_t i = 0; i < b->inputs.dim(0); ++i)
        CHECK(bitEqual(std::vector<float>(b->inputs.data<float>() + i * per, b->inputs.data<float>() + (i + 1) * per),
                       ref.x.at(static_cast<size_t>(b->first_index + i))));
      released = b->inputs.raw();
      ++batches;
      if (batches == 4) break;
    }
    CHECK(batches == 4);
    CHECK(reused == 2);  // batches 3 and 4 came in the buffer of the one before
    CHECK(std::memcmp(kept->inputs.raw(), kept_values.data(), kept_values.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(kept_view.raw(), kept_values.data(), 784 * sizeof(float)) == 0);
    // A view alone keeps the buffer too.
    kept.reset();
    auto after = ds->next(10);
    REQUIRE(after);
    CHECK(std::memcmp(kept_view.raw(), kept_values.data(), 784 * sizeof(float)) == 0);
  }
}

TEST_CASE("reading speed", "[data]") {
  using clock = std::chrono::steady_clock;
  const auto readCount = [](Dataset& d) {
    int64_t n = 0;
    while (auto b = d.next(256)) n += b->inputs.dim(0);
    return n;
  };
  if (fs::exists(kIdxImages)) {
    const auto t0 = clock::now();
    auto d = openDataset(opts(kIdxImages, Preprocess::load(kSample / "preprocess.json"), {1, 28, 28}));
    const int64_t n = readCount(*d);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    CHECK(n == 10000);
    std::cout << "IDX: 10000 images in " << s * 1e3 << " ms\n";
    CHECK(s < 2.0);
  }
  const auto t0 = clock::now();
  auto d = openDataset(opts(kSample / "png", Preprocess::load(kSample / "preprocess.json"), {1, 28, 28}));
  const int64_t n = readCount(*d);
  const double s = std::chrono::duration<double>(clock::now() - t0).count();
  CHECK(n == 500);
  std::cout << "PNG ImageFolder: 500 images in " << s * 1e3 << " ms\n";
  CHECK(s < 2.0);
}

TEST_CASE("fitToModel takes the class count from dimension 1 of [N, C] or [N, C, 1, ...] scores, and none from other shapes", "[data]") {
  // A convolutional head without Flatten declares [N, C, 1, 1]; its class count is C (it was 1, and
  // every label above 0 was refused as out of range), as the accuracy meter reads such scores.
  auto classes = [](const char* out) {
    const std::string text = std::string("<ir_version: 8, opset_import: [\"\" : 13]>\ng (float[N, 10] x) => (") + out +
                             " y) {\n  y = Reshape (x, shape)\n}";
    Model m = parseModelText(text, LoadOptions{false});
    m.graph.initializers.set("shape", Tensor::fromVector<int64_t>({4}, {-1, 10, 1, 1}));
    DataOptions o;
    fitToModel(o, m);
    return o.num_classes;
  };
  CHECK(classes("float[N, 10, 1, 1]") == 10);
  CHECK(classes("float[N, 10]") == 10);
  CHECK(classes("float[N, 10, 1]") == 10);
  // Not class scores: no class count (labels were checked against the last dimension, so label 9
  // was "out of range for a model with 2 classes" where the real fault is the output's shape).
  CHECK(classes("float[N, 2, 5]") == 0);
  CHECK(classes("float[N, 5, 2, 1]") == 0);
}

TEST_CASE("a uint8 array that reads as both [N,C,H,W] and [N,H,W,C] follows the model's height and width", "[data]") {
  // Two 4x5 RGB images stored HWC: [2,4,5,3] also reads as 4 channels of 5x3, and was read so (the
  // model's layout alone decided), then resized to 4x5 without a word.
  lwc::test::TempDir t;
  Tensor a(DType::UInt8, {2, 4, 5, 3});
  for (int64_t i = 0; i < a.numel(); ++i) a.data<uint8_t>()[i] = static_cast<uint8_t>((i * 37) % 251);
  writeNpy(t / "hwc.npy", a);
  for (const bool resize : {false, true}) {
    INFO("resize " << resize);
    auto d = openDataset(opts(t / "hwc.npy", raw(resize ? json{{"resize", {4, 5}}} : json::object()), {3, 4, 5}));
    auto b = d->next(2);
    REQUIRE(b);
    REQUIRE(b->inputs.shape() == Shape{2, 3, 4, 5});
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < 4; ++y)
          for (int64_t x = 0; x < 5; ++x)
            CHECK(b->inputs.data<float>()[((n * 3 + c) * 4 + y) * 5 + x] ==
                  float(a.data<uint8_t>()[((n * 4 + y) * 5 + x) * 3 + c]));
  }
  // An array that also reads both ways but whose CHW reading has the model's size stays CHW:
  // [2,3,5,4] for a [3,5,4] model (as HWC it would be 3x5 images of 4 channels).
  Tensor c(DType::UInt8, {2, 3, 5, 4});
  std::memcpy(c.raw(), a.raw(), a.nbytes());
  writeNpy(t / "chw.npy", c);
  auto d = openDataset(opts(t / "chw.npy", raw({{"layout", "NCHW"}}), {3, 5, 4}));
  auto b = d->next(2);
  REQUIRE(b);
  for (int64_t i = 0; i < c.numel(); ++i) CHECK(b->inputs.data<float>()[i] == float(c.data<uint8_t>()[i]));
}
