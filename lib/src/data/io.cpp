// File access and byte streams for the dataset sources: plain files, gzip files and zip members
// (stored or deflated), all read sequentially with bounded buffers.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "internal.h"

namespace lwc::data {

namespace {
constexpr size_t kChunk = size_t(1) << 16;
}

File::File(const fs::path& p) : path_(p) {
  fd_ = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(show(p), ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(show(p), ": not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

size_t File::readAt(uint64_t offset, void* dst, size_t n) const {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd_, static_cast<char*>(dst) + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(show(path_), ": read error (", std::strerror(errno), ")");
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

void File::readExact(uint64_t offset, void* dst, size_t n, const char* what) const {
  if (readAt(offset, dst, n) != n) fail(show(path_), ": ", what, " is truncated");
}

std::string readWholeFile(const fs::path& p, uint64_t max_bytes) {
  File f(p);
  if (f.size() > max_bytes) fail(show(p), ": file is ", f.size(), " bytes, more than the ", max_bytes, " expected here");
  std::string s(f.size(), '\0');
  if (f.readAt(0, s.data(), s.size()) != s.size()) fail(show(p), ": file changed while being read");
  return s;
}

bool ByteStream::skip(uint64_t n) {
  char buf[4096];
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof buf));
    if (read(buf, k) != k) return false;
    n -= k;
  }
  return true;
}

void ByteStream::readExact(void* dst, size_t n, const std::string& where, const char* what) {
  if (read(dst, n) != n) fail(where, ": ", what, " is truncated");
}

namespace {

class FileStream final : public ByteStream {
 public:
  explicit FileStream(const fs::path& p) : file_(p) {}
  size_t read(void* dst, size_t n) override {
    const size_t r = file_.readAt(pos_, dst, n);
    pos_ += r;
    return r;
  }
  void rewind() override { pos_ = 0; }

 private:
  File file_;
  uint64_t pos_ = 0;
};

class GzipStream final : public ByteStream {
 public:
  explicit GzipStream(const fs::path& p) : path_(p) {
    gz_ = gzopen(p.c_str(), "rb");
    if (!gz_) fail(show(p), ": cannot open (", std::strerror(errno), ")");
    gzbuffer(gz_, 1 << 18);
  }
  ~GzipStream() override { gzclose(gz_); }
  size_t read(void* dst, size_t n) override {
    size_t done = 0;
    while (done < n) {
      const unsigned k = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      const int r = gzread(gz_, static_cast<char*>(dst) + done, k);
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(gz_, &code);
        fail(show(path_), ": corrupt gzip data (", msg, ")");
      }
      if (r == 0) {
        int code = 0;
        const char* msg = gzerror(gz_, &code);
        if (code != Z_OK) fail(show(path_), ": corrupt or truncated gzip data (", msg, ")");
        break;
      }
      done += static_cast<size_t>(r);
    }
    return done;
  }
  void rewind() override {
    if (gzrewind(gz_) != 0) fail(show(path_), ": cannot rewind");
  }

 private:
  fs::path path_;
  gzFile gz_ = nullptr;
};

}  // namespace

std::unique_ptr<ByteStream> openFileStream(const fs::path& p) { return std::make_unique<FileStream>(p); }
std::unique_ptr<ByteStream> openGzipStream(const fs::path& p) { return std::make_unique<GzipStream>(p); }

bool isGzip(const fs::path& p) {
  File f(p);
  unsigned char m[2] = {0, 0};
  return f.readAt(0, m, 2) == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

uint64_t declaredSize(const fs::path& p) {
  File f(p);
  unsigned char m[2] = {0, 0};
  if (f.readAt(0, m, 2) != 2 || m[0] != 0x1f || m[1] != 0x8b || f.size() < 18) return f.size();
  unsigned char t[4];
  f.readExact(f.size() - 4, t, 4, "gzip trailer");
  return uint64_t(t[0]) | uint64_t(t[1]) << 8 | uint64_t(t[2]) << 16 | uint64_t(t[3]) << 24;
}

uint64_t uncompressedSize(const fs::path& p, bool* truncated) {
  *truncated = false;
  gzFile gz = gzopen(p.c_str(), "rb");
  if (!gz) fail(show(p), ": cannot open (", std::strerror(errno), ")");
  gzbuffer(gz, 1 << 18);
  std::vector<char> buf(kChunk * 4);
  uint64_t total = 0;
  for (;;) {
    const int r = gzread(gz, buf.data(), static_cast<unsigned>(buf.size()));
    if (r > 0) {
      total += static_cast<uint64_t>(r);
      continue;
    }
    int code = 0;
    gzerror(gz, &code);
    if (r < 0 || code != Z_OK) *truncated = true;
    break;
  }
  gzclose(gz);
  return total;
}

// ---------------------------------------------------------------------------------------------
// zip

namespace {

uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t le32(const unsigned char* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

/// Stored member: a window of the archive; deflated member: raw inflate of such a window.
class ZipMemberStream final : public ByteStream {
 public:
  ZipMemberStream(std::shared_ptr<File> f, ZipEntry e) : file_(std::move(f)), e_(std::move(e)) {
    where_ = show(file_->path()) + " member '" + e_.name + "'";
    if (e_.method == 8) {
      in_.resize(kChunk);
      std::memset(&zs_, 0, sizeof zs_);
      if (inflateInit2(&zs_, -MAX_WBITS) != Z_OK) throw std::bad_alloc();
      inflating_ = true;
    }
  }
  ~ZipMemberStream() override {
    if (inflating_) inflateEnd(&zs_);
  }

  size_t read(void* dst, size_t n) override {
    n = static_cast<size_t>(std::min<uint64_t>(n, e_.uncompressed - out_pos_));
    if (n == 0) return 0;
    size_t got = 0;
    if (e_.method == 0) {
      got = file_->readAt(e_.data_offset + out_pos_, dst, n);
      if (got != n) fail(where_, ": data is truncated");
    } else {
      zs_.next_out = static_cast<Bytef*>(dst);
      zs_.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
      while (zs_.avail_out > 0) {
        if (zs_.avail_in == 0) {
          const size_t k = static_cast<size_t>(std::min<uint64_t>(in_.size(), e_.compressed - in_pos_));
          if (k == 0) fail(where_, ": compressed data ends before ", e_.uncompressed, " bytes (corrupt archive)");
          file_->readExact(e_.data_offset + in_pos_, in_.data(), k, "zip member data");
          in_pos_ += k;
          zs_.next_in = in_.data();
          zs_.avail_in = static_cast<uInt>(k);
        }
        const int r = inflate(&zs_, Z_NO_FLUSH);
        if (r == Z_STREAM_END) {
          if (zs_.avail_out > 0) fail(where_, ": deflate stream ends before the ", e_.uncompressed, " bytes the archive declares");
          break;
        }
        if (r != Z_OK) fail(where_, ": corrupt deflate data (", zs_.msg ? zs_.msg : "zlib error", ")");
      }
      got = static_cast<size_t>(static_cast<Bytef*>(zs_.next_out) - static_cast<Bytef*>(dst));
    }
    crc_ = crc32(crc_, static_cast<const Bytef*>(dst), static_cast<uInt>(got));
    out_pos_ += got;
    if (out_pos_ == e_.uncompressed && crc_ != e_.crc) fail(where_, ": CRC-32 mismatch (corrupt archive)");
    return got;
  }

  void rewind() override {
    out_pos_ = 0;
    in_pos_ = 0;
    crc_ = crc32(0, nullptr, 0);
    if (inflating_) {
      inflateReset(&zs_);
      zs_.avail_in = 0;
    }
  }

 private:
  std::shared_ptr<File> file_;
  ZipEntry e_;
  std::string where_;
  uint64_t out_pos_ = 0, in_pos_ = 0;
  uLong crc_ = crc32(0, nullptr, 0);
  z_stream zs_;
  bool inflating_ = false;
  std::vector<Bytef> in_;
};

}  // namespace

ZipArchive::ZipArchive(const fs::path& p) : file_(std::make_shared<File>(p)) {
  const std::string where = show(p);
  const uint64_t fsize = file_->size();
  if (fsize < 22) fail(where, ": not a zip/.npz archive (too short)");
  // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
  const uint64_t tail_len = std::min<uint64_t>(fsize, 22 + 65535);
  std::vector<unsigned char> tail(tail_len);
  file_->readExact(fsize - tail_len, tail.data(), tail_len, "archive");
  int64_t eocd = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i)
    if (le32(&tail[i]) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) fail(where, ": not a zip/.npz archive (no end-of-central-directory record)");
  const unsigned char* r = &tail[eocd];
  uint64_t count = le16(r + 10), cd_size = le32(r + 12), cd_off = le32(r + 16);
  if (le16(r + 4) != 0 || le16(r + 6) != 0) fail(where, ": multi-volume zip archives are not supported");
  const uint64_t eocd_pos = fsize - tail_len + static_cast<uint64_t>(eocd);
  if (count == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
    if (eocd_pos < 20) fail(where, ": zip64 locator missing (corrupt archive)");
    unsigned char loc[20];
    file_->readExact(eocd_pos - 20, loc, 20, "zip64 locator");
    if (le32(loc) != 0x07064b50) fail(where, ": zip64 locator missing (corrupt archive)");
    const uint64_t z64 = le64(loc + 8);
    unsigned char rec[56];
    if (z64 > fsize || fsize - z64 < 56) fail(where, ": zip64 end record outside the file (corrupt archive)");
    file_->readExact(z64, rec, 56, "zip64 end record");
    if (le32(rec) != 0x06064b50) fail(where, ": bad zip64 end record (corrupt archive)");
    count = le64(rec + 32);
    cd_size = le64(rec + 40);
    cd_off = le64(rec + 48);
  }
  if (cd_off > fsize || cd_size > fsize - cd_off) fail(where, ": central directory lies outside the file (corrupt archive)");
  if (count > cd_size / 46) fail(where, ": central directory too small for ", count, " entries (corrupt archive)");
  std::vector<unsigned char> cd(cd_size);
  file_->readExact(cd_off, cd.data(), cd_size, "central directory");
  size_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_size - pos < 46 || le32(&cd[pos]) != 0x02014b50) fail(where, ": bad central directory entry ", i, " (corrupt archive)");
    const unsigned char* h = &cd[pos];
    const uint16_t flags = le16(h + 8), nlen = le16(h + 28), xlen = le16(h + 30), clen = le16(h + 32);
    if (cd_size - pos - 46 < uint64_t(nlen) + xlen + clen) fail(where, ": central directory entry ", i, " overruns (corrupt archive)");
    ZipEntry e;
    e.method = le16(h + 10);
    e.crc = le32(h + 16);
    e.compressed = le32(h + 20);
    e.uncompressed = le32(h + 24);
    uint64_t local = le32(h + 42);
    e.name.assign(reinterpret_cast<const char*>(h + 46), nlen);
    // zip64 extra field: 64-bit values for those fields stored as 0xffffffff, in this order.
    const unsigned char* x = h + 46 + nlen;
    for (size_t xp = 0; xp + 4 <= xlen;) {
      const uint16_t id = le16(x + xp), len = le16(x + xp + 2);
      if (xp + 4 + len > xlen) break;
      if (id == 0x0001) {
        const unsigned char* v = x + xp + 4;
        size_t vp = 0;
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffff) return;
          if (vp + 8 > len) fail(where, ": bad zip64 field for '", e.name, "' (corrupt archive)");
          field = le64(v + vp);
          vp += 8;
        };
        take(e.uncompressed);
        take(e.compressed);
        take(local);
      }
      xp += 4 + len;
    }
    pos += 46 + nlen + xlen + clen;
    if (flags & 1) fail(where, ": member '", e.name, "' is encrypted; save the arrays without encryption");
    if (e.method != 0 && e.method != 8)
      fail(where, ": member '", e.name, "' uses compression method ", e.method, "; only stored and deflated are supported (np.savez / np.savez_compressed)");
    if (e.method == 0 && e.compressed != e.uncompressed) fail(where, ": stored member '", e.name, "' has mismatched sizes (corrupt archive)");
    unsigned char lh[30];
    if (local > fsize || fsize - local < 30) fail(where, ": member '", e.name, "' lies outside the file (corrupt archive)");
    file_->readExact(local, lh, 30, "local header");
    if (le32(lh) != 0x04034b50) fail(where, ": member '", e.name, "' has a bad local header (corrupt archive)");
    e.data_offset = local + 30 + le16(lh + 26) + le16(lh + 28);
    if (e.data_offset > fsize || e.compressed > fsize - e.data_offset)
      fail(where, ": member '", e.name, "' data lies outside the file (truncated archive?)");
    entries_.push_back(std::move(e));
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::unique_ptr<ByteStream> ZipArchive::open(const ZipEntry& e) const { return std::make_unique<ZipMemberStream>(file_, e); }

}  // namespace lwc::data
