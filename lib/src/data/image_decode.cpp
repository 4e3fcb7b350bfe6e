// PNG (libpng) and JPEG (libjpeg) decoding from memory.
//
// Both libraries report errors by longjmp. Everything that must survive the jump lives in a heap
// state created before setjmp, and the frames the jump skips (the libraries' and our callbacks)
// hold no C++ objects with destructors, so the jump is well defined; we throw only after it lands.
#include <png.h>
#include <stdio.h>  // jpeglib.h needs FILE and size_t declared first
#include <jpeglib.h>
#include <jerror.h>

#include <csetjmp>
#include <cstring>
#include <memory>

#include "internal.h"

namespace lwc::data {

namespace {

// Larger images are refused rather than allocated (a few KB of PNG can declare gigapixels).
constexpr int64_t kMaxPixels = int64_t(1) << 28;
constexpr uint32_t kMaxSide = 1u << 16;

std::string tooLarge(int64_t w, int64_t h) {
  return std::to_string(w) + "x" + std::to_string(h) + " pixels is over lwc's limit of " + std::to_string(kMaxPixels) +
         " pixels per image; resize it before evaluation";
}

struct PngState {
  const unsigned char* data = nullptr;
  size_t size = 0, pos = 0;
  char msg[256] = {0};
  bool too_large = false;  // a valid image over kMaxPixels: not "corrupt"
  DecodedImage img;
  std::vector<png_bytep> rows;
};

void pngError(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(st->msg, sizeof st->msg, "%s", msg);
  png_longjmp(png, 1);
}

void pngWarning(png_structp, png_const_charp) {}

void pngRead(png_structp png, png_bytep out, png_size_t n) {
  auto* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > st->size - st->pos) png_error(png, "file is truncated");
  std::memcpy(out, st->data + st->pos, n);
  st->pos += n;
}

DecodedImage decodePng(const std::string& bytes, const std::string& where) {
  auto st = std::make_unique<PngState>();
  st->data = reinterpret_cast<const unsigned char*>(bytes.data());
  st->size = bytes.size();
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st.get(), pngError, pngWarning);
  if (!png) throw std::bad_alloc();
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw std::bad_alloc();
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    if (st->too_large) fail(where, ": ", tooLarge(st->img.w, st->img.h));
    fail(where, ": corrupt PNG (", st->msg, ")");
  }
  png_set_read_fn(png, st.get(), pngRead);
  png_set_user_limits(png, kMaxSide, kMaxSide);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_swap(png);  // to host (little-endian) order, read straight into uint16
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  DecodedImage& img = st->img;
  img.w = png_get_image_width(png, info);
  img.h = png_get_image_height(png, info);
  img.c = png_get_channels(png, info);
  img.bits = png_get_bit_depth(png, info);
  if (img.w * img.h > kMaxPixels) {
    st->too_large = true;
    png_error(png, "image too large");
  }
  const size_t rowbytes = png_get_rowbytes(png, info);
  const size_t elem = img.bits == 16 ? 2 : 1;
  if (rowbytes != static_cast<size_t>(img.w * img.c) * elem) png_error(png, "unexpected row layout");
  unsigned char* base;
  if (img.bits == 16) {
    img.px16.resize(static_cast<size_t>(img.h * img.w * img.c));
    base = reinterpret_cast<unsigned char*>(img.px16.data());
  } else {
    img.px8.resize(static_cast<size_t>(img.h * img.w * img.c));
    base = img.px8.data();
  }
  st->rows.resize(static_cast<size_t>(img.h));
  for (int64_t y = 0; y < img.h; ++y) st->rows[y] = base + static_cast<size_t>(y) * rowbytes;
  png_read_image(png, st->rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  return std::move(st->img);
}

// Standard layout with the libjpeg error manager first, so c->err leads back to it.
struct JpegErr {
  jpeg_error_mgr pub;
  std::jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  int64_t large_w = 0, large_h = 0;  // a valid image over kMaxPixels: not "corrupt"
  bool cmyk = false;                  // a valid CMYK/YCCK image: not "corrupt" either
};

struct JpegState {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  DecodedImage img;
};

void jpegErrorExit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jb, 1);
}

// Warnings are ignored (as Pillow does) except a premature end of data, which libjpeg would
// otherwise paper over with grey pixels.
void jpegEmit(j_common_ptr c, int level) {
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
    auto* e = reinterpret_cast<JpegErr*>(c->err);
    std::snprintf(e->msg, sizeof e->msg, "premature end of data; the file is truncated");
    std::longjmp(e->jb, 1);
  }
}

DecodedImage decodeJpeg(const std::string& bytes, const std::string& where) {
  auto st = std::make_unique<JpegState>();
  JpegErr& err = st->err;
  st->cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpegErrorExit;
  err.pub.emit_message = jpegEmit;
  err.msg[0] = 0;
  jpeg_create_decompress(&st->cinfo);
  if (setjmp(err.jb)) {
    jpeg_destroy_decompress(&st->cinfo);
    if (err.large_w > 0) fail(where, ": ", tooLarge(err.large_w, err.large_h));
    if (err.cmyk) fail(where, ": a CMYK JPEG, which lwc does not read; convert the image to RGB (PIL: .convert('RGB'))");
    fail(where, ": corrupt JPEG (", err.msg, ")");
  }
  jpeg_decompress_struct& ci = st->cinfo;
  jpeg_mem_src(&ci, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&ci, TRUE);
  if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
    err.cmyk = true;
    std::longjmp(err.jb, 1);
  }
  ci.out_color_space = ci.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  if (static_cast<int64_t>(ci.image_width) * ci.image_height > kMaxPixels) {
    err.large_w = ci.image_width;
    err.large_h = ci.image_height;
    std::longjmp(err.jb, 1);
  }
  jpeg_start_decompress(&ci);
  DecodedImage& img = st->img;
  img.w = ci.output_width;
  img.h = ci.output_height;
  img.c = ci.output_components;
  img.bits = 8;
  img.px8.resize(static_cast<size_t>(img.w * img.h * img.c));
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW row = img.px8.data() + static_cast<size_t>(ci.output_scanline) * img.w * img.c;
    jpeg_read_scanlines(&ci, &row, 1);
  }
  jpeg_finish_decompress(&ci);
  jpeg_destroy_decompress(&ci);
  return std::move(st->img);
}

}  // namespace

DecodedImage decodeImage(const std::string& bytes, const std::string& where) {
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return decodePng(bytes, where);
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xff && static_cast<unsigned char>(bytes[1]) == 0xd8 &&
      static_cast<unsigned char>(bytes[2]) == 0xff)
    return decodeJpeg(bytes, where);
  if (bytes.empty()) fail(where, ": the file is empty");
  fail(where, ": not a PNG or JPEG file (unrecognised signature)");
}

PixelView PixelView::of(const DecodedImage& img) {
  PixelView v{img.h, img.w, img.c, img.w * img.c, img.c, 1, nullptr, nullptr};
  if (img.bits == 16)
    v.p16 = img.px16.data();
  else
    v.p8 = img.px8.data();
  return v;
}

}  // namespace lwc::data
