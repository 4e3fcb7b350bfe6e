// Canonical-Huffman codec; the stream format is documented in lwc/huffman.h.
#include "lwc/huffman.h"

#include <algorithm>
#include <array>
#include <utility>

namespace lwc::huffman {
namespace {

constexpr uint8_t kMagic[4] = {'L', 'W', 'H', '1'};
constexpr uint8_t kVersion = 1;
constexpr uint8_t kFlagSparse = 1;
constexpr uint32_t kDenseZero = 0xffffffffu;
constexpr uint64_t kMaxNumel = uint64_t{1} << 63;

// Table byte codes (see the header).
constexpr int kRepeatMax = 64;
constexpr int kZeroRunMax = 32768;

// The decoder's first-level table: 2^11 entries of 4 bytes stay in L1 even with two tables (sparse),
// and a quantized weight tensor's common codes are all shorter than 11 bits.
constexpr int kLutBits = 11;
constexpr uint32_t kLutLong = 1u << 30;     // the prefix starts a code longer than kLutBits
constexpr uint32_t kLutInvalid = 1u << 31;  // no code starts with the prefix

template <typename... Args>
[[noreturn]] void bad(Args&&... args) {
  fail("huffman stream: ", std::forward<Args>(args)...);
}

uint64_t getLE(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

uint8_t* putLE(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) *p++ = static_cast<uint8_t>(v >> (8 * i));
  return p;
}

uint64_t loadBE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

uint64_t ceilBytes(uint64_t bits) { return bits / 8 + (bits % 8 != 0); }

// Canonical code layout of a length table: codes of length L are first[L], first[L]+1, ... in the
// order of `sorted` starting at offset[L].
struct Canonical {
  std::array<uint64_t, kMaxDecodeLength + 1> first{};
  std::array<uint32_t, kMaxDecodeLength + 1> count{};
  std::array<uint32_t, kMaxDecodeLength + 1> offset{};
  std::vector<uint32_t> sorted;
  int max_len = 0;
};

Canonical canonicalize(const std::vector<uint8_t>& lengths) {
  Canonical c;
  for (uint8_t l : lengths)
    if (l) ++c.count[l], c.max_len = std::max<int>(c.max_len, l);
  for (int l = 1; l <= kMaxDecodeLength; ++l) {
    c.offset[l] = l == 1 ? 0 : c.offset[l - 1] + c.count[l - 1];
    c.first[l] = l == 1 ? 0 : (c.first[l - 1] + c.count[l - 1]) << 1;
  }
  c.sorted.resize(c.offset[kMaxDecodeLength] + c.count[kMaxDecodeLength]);
  auto next = c.offset;
  for (uint32_t s = 0; s < lengths.size(); ++s)
    if (lengths[s]) c.sorted[next[lengths[s]]++] = s;
  return c;
}

// Kraft sum in units of 2^-32: a complete code sums to exactly 2^32.
void checkKraft(const std::vector<uint8_t>& lengths, const char* name) {
  uint64_t sum = 0, codes = 0;
  int only = 0;
  for (uint8_t l : lengths)
    if (l) sum += uint64_t{1} << (kMaxDecodeLength - l), ++codes, only = l;
  constexpr uint64_t kOne = uint64_t{1} << kMaxDecodeLength;
  if (sum > kOne) bad(name, " code lengths are over-subscribed (Kraft sum > 1)");
  if (codes == 1 && only != 1) bad(name, " code table has a single code of length ", only, ", expected 1");
  if (codes > 1 && sum < kOne) bad(name, " code lengths are incomplete (Kraft sum < 1)");
}

// ---------------------------------------------------------------------------------------------
// Stream header and tables

struct Header {
  bool sparse = false;
  uint32_t num_symbols = 0, zero_symbol = 0;
  uint64_t numel = 0, nonzeros = 0, payload_bits = 0;
};

Header parseHeader(std::span<const uint8_t> s) {
  if (s.size() < static_cast<size_t>(kHeaderBytes))
    bad("truncated header (", s.size(), " bytes, need ", kHeaderBytes, ")");
  const uint8_t* p = s.data();
  if (!std::equal(kMagic, kMagic + 4, p)) bad("bad magic (not an LWH1 stream)");
  if (p[4] != kVersion) bad("unsupported version ", int(p[4]), " (this build reads version ", int(kVersion), ")");
  if (p[5] & ~kFlagSparse) bad("unknown flags 0x", std::hex, int(p[5]));
  Header h;
  h.sparse = p[5] & kFlagSparse;
  h.num_symbols = static_cast<uint32_t>(getLE(p + 6, 4));
  h.zero_symbol = static_cast<uint32_t>(getLE(p + 10, 4));
  h.numel = getLE(p + 14, 8);
  h.nonzeros = getLE(p + 22, 8);
  h.payload_bits = getLE(p + 30, 8);
  if (h.num_symbols < 1 || h.num_symbols > kMaxSymbols)
    bad("num_symbols ", h.num_symbols, " out of range [1, ", kMaxSymbols, "]");
  if (h.sparse && h.zero_symbol >= h.num_symbols)
    bad("zero symbol ", h.zero_symbol, " >= num_symbols ", h.num_symbols);
  if (!h.sparse && h.zero_symbol != kDenseZero) bad("dense stream has zero symbol ", h.zero_symbol, ", expected 0xffffffff");
  if (h.numel >= kMaxNumel) bad("element count ", h.numel, " too large");
  if (h.nonzeros > h.numel) bad("declares ", h.nonzeros, " non-zeros > ", h.numel, " elements");
  if (!h.sparse && h.nonzeros != h.numel) bad("dense stream declares ", h.nonzeros, " non-zeros != ", h.numel, " elements");
  const uint64_t after = s.size() - kHeaderBytes;
  if (ceilBytes(h.payload_bits) > after)
    bad("truncated payload (", ceilBytes(h.payload_bits), " payload bytes declared, ", after, " bytes follow the header)");
  // Every code is at least one bit long.
  if (!h.sparse && h.numel > h.payload_bits)
    bad("declares ", h.numel, " elements but only ", h.payload_bits, " payload bits");
  if (h.sparse && h.nonzeros > h.payload_bits / 2)
    bad("declares ", h.nonzeros, " non-zeros but only ", h.payload_bits, " payload bits");
  return h;
}

std::vector<uint8_t> readTable(std::span<const uint8_t> s, size_t& pos, uint32_t n, const char* name) {
  std::vector<uint8_t> len(n);
  uint32_t i = 0;
  int prev = -1;
  while (i < n) {
    if (pos >= s.size()) bad("truncated ", name, " code length table (", i, " of ", n, " entries)");
    const uint8_t b = s[pos++];
    if (b < 0x40) {
      if (b > kMaxDecodeLength) bad(name, " code length ", int(b), " > ", kMaxDecodeLength, " (symbol ", i, ")");
      len[i++] = b;
      prev = b;
      continue;
    }
    uint32_t run;
    if (b < 0x80) {
      if (prev < 0) bad(name, " code length table repeats before its first entry");
      run = (b & 0x3fu) + 1;
    } else {
      if (pos >= s.size()) bad("truncated ", name, " code length table (", i, " of ", n, " entries)");
      run = ((b & 0x7fu) << 8 | s[pos++]) + 1;
      prev = 0;
    }
    if (run > n - i) bad(name, " code length table run of ", run, " passes its ", n, " entries");
    std::fill_n(len.begin() + i, run, static_cast<uint8_t>(prev));
    i += run;
  }
  return len;
}

void writeTable(std::vector<uint8_t>& out, const std::vector<uint8_t>& len) {
  const size_t n = len.size();
  for (size_t i = 0; i < n;) {
    size_t run = 1;
    while (i + run < n && len[i + run] == len[i]) ++run;
    if (len[i] == 0 && run > kRepeatMax + 1) {
      // A zero run costs two bytes per 32768; a literal plus one repeat already covers 65.
      for (size_t left = run; left > 0;) {
        const size_t k = std::min<size_t>(left, kZeroRunMax);
        out.push_back(static_cast<uint8_t>(0x80 | (k - 1) >> 8));
        out.push_back(static_cast<uint8_t>((k - 1) & 0xff));
        left -= k;
      }
    } else {
      out.push_back(len[i]);
      for (size_t left = run - 1; left > 0;) {
        const size_t k = std::min<size_t>(left, kRepeatMax);
        out.push_back(static_cast<uint8_t>(0x40 | (k - 1)));
        left -= k;
      }
    }
    i += run;
  }
}

// Header, tables and stream size, fully validated; the payload is not looked at except its padding.
struct Layout {
  Header h;
  std::vector<uint8_t> value_len, gap_len;
  size_t payload_offset = 0;
};

Layout parseLayout(std::span<const uint8_t> s, const Header& h) {
  Layout L;
  L.h = h;
  size_t pos = kHeaderBytes;
  L.value_len = readTable(s, pos, h.num_symbols, "value");
  if (h.sparse) {
    if (L.value_len[h.zero_symbol] != 0) bad("sparse stream gives the zero symbol ", h.zero_symbol, " a code");
    L.gap_len = readTable(s, pos, kGapSymbols, "gap");
  }
  checkKraft(L.value_len, "value");
  if (h.sparse) checkKraft(L.gap_len, "gap");
  const auto hasCode = [](const std::vector<uint8_t>& v) { return std::any_of(v.begin(), v.end(), [](uint8_t l) { return l != 0; }); };
  if (h.nonzeros > 0 && !hasCode(L.value_len)) bad("declares ", h.nonzeros, " coded elements but the value code table is empty");
  if (h.sparse && h.nonzeros > 0 && !hasCode(L.gap_len)) bad("declares ", h.nonzeros, " non-zeros but the gap code table is empty");
  const uint64_t have = s.size() - pos, need = ceilBytes(h.payload_bits);
  if (have < need) bad("truncated payload (", need, " bytes declared, ", have, " present)");
  if (have > need) bad(have - need, " trailing bytes after the payload");
  if (const int r = h.payload_bits % 8; r != 0 && (s.back() & ((1u << (8 - r)) - 1)) != 0)
    bad("non-zero padding bits after the payload");
  L.payload_offset = pos;
  return L;
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct DecodeTable {
  std::array<uint32_t, 1u << kLutBits> lut;  // symbol | length << 16, or kLutLong / kLutInvalid
  Canonical c;
};

DecodeTable buildDecodeTable(const std::vector<uint8_t>& lengths) {
  DecodeTable t;
  t.c = canonicalize(lengths);
  t.lut.fill(kLutInvalid);
  for (int l = 1; l <= t.c.max_len; ++l) {
    for (uint32_t k = 0; k < t.c.count[l]; ++k) {
      const uint64_t code = t.c.first[l] + k;
      const uint32_t sym = t.c.sorted[t.c.offset[l] + k];
      if (l <= kLutBits) {
        const uint64_t lo = code << (kLutBits - l), hi = (code + 1) << (kLutBits - l);
        for (uint64_t e = lo; e < hi; ++e) t.lut[e] = sym | static_cast<uint32_t>(l) << 16;
      } else {
        t.lut[code >> (l - kLutBits)] = kLutLong;
      }
    }
  }
  return t;
}

// MSB-first bit reader over the payload. `buf` holds `cnt` valid bits at its top; the bits below are
// zero or already the stream's next bits, so refills may OR whole words in (Giesen's variant 4).
// Past the payload it reads zero bytes; consumed() then exceeds the declared length, which the
// caller reports as truncation.
class BitReader {
 public:
  BitReader(std::span<const uint8_t> payload, uint64_t bits) : p_(payload.data()), n_(payload.size()), bits_(bits) {}

  void refill() {
    if (cnt_ >= kMaxDecodeLength) return;
    if (pos_ + 8 <= n_) {
      buf_ |= loadBE64(p_ + pos_) >> cnt_;
      pos_ += (63 - cnt_) >> 3;
      cnt_ |= 56;
    } else {
      refillTail();
    }
  }
  uint64_t peek() const { return buf_; }
  void consume(unsigned n) {
    buf_ <<= n;
    cnt_ -= n;
  }
  uint64_t consumed() const { return uint64_t{pos_} * 8 - cnt_; }

 private:
  void refillTail() {
    while (cnt_ <= 56) {
      const uint64_t b = pos_ < n_ ? p_[pos_] : 0;
      buf_ |= b << (56 - cnt_);
      ++pos_;
      cnt_ += 8;
    }
    if (consumed() > bits_) bad("truncated payload (the codes run past the ", bits_, " bits declared)");
  }

  const uint8_t* p_;
  size_t n_;
  uint64_t bits_;
  size_t pos_ = 0;
  uint64_t buf_ = 0;
  unsigned cnt_ = 0;
};

[[gnu::noinline]] uint32_t decodeSlow(const DecodeTable& t, BitReader& br, uint32_t e) {
  if (e & kLutInvalid) bad("invalid code in payload");
  const uint64_t top = br.peek() >> 32;
  for (int l = kLutBits + 1; l <= t.c.max_len; ++l) {
    const uint64_t d = (top >> (32 - l)) - t.c.first[l];
    if (d < t.c.count[l]) {
      br.consume(l);
      return t.c.sorted[t.c.offset[l] + d];
    }
  }
  bad("invalid code in payload");
}

// Needs at least kMaxDecodeLength valid bits in the reader.
inline uint32_t decodeSymbol(const DecodeTable& t, BitReader& br) {
  const uint32_t e = t.lut[br.peek() >> (64 - kLutBits)];
  if ((e & (kLutLong | kLutInvalid)) == 0) [[likely]] {
    br.consume(e >> 16);
    return e & 0xffff;
  }
  return decodeSlow(t, br, e);
}

// ---------------------------------------------------------------------------------------------
// Encoding

// Writes MSB-first into a buffer sized in advance.
class BitWriter {
 public:
  explicit BitWriter(uint8_t* p) : p_(p) {}
  void put(uint32_t code, unsigned len) {
    acc_ = acc_ << len | code;
    n_ += len;
    total_ += len;
    if (n_ >= 32) {
      n_ -= 32;
      const uint32_t w = static_cast<uint32_t>(acc_ >> n_);
      *p_++ = static_cast<uint8_t>(w >> 24);
      *p_++ = static_cast<uint8_t>(w >> 16);
      *p_++ = static_cast<uint8_t>(w >> 8);
      *p_++ = static_cast<uint8_t>(w);
    }
  }
  void finish() {
    while (n_ >= 8) n_ -= 8, *p_++ = static_cast<uint8_t>(acc_ >> n_);
    if (n_ > 0) *p_++ = static_cast<uint8_t>(acc_ << (8 - n_));
    n_ = 0;
  }
  uint64_t total() const { return total_; }
  const uint8_t* end() const { return p_; }

 private:
  uint8_t* p_;
  uint64_t acc_ = 0;
  unsigned n_ = 0;
  uint64_t total_ = 0;
};

struct CodeBook {
  std::vector<uint32_t> code;
  std::vector<uint8_t> len;
};

CodeBook makeCodeBook(std::vector<uint8_t> lengths) {
  const Canonical c = canonicalize(lengths);
  CodeBook b;
  b.code.assign(lengths.size(), 0);
  for (int l = 1; l <= c.max_len; ++l)
    for (uint32_t k = 0; k < c.count[l]; ++k) b.code[c.sorted[c.offset[l] + k]] = static_cast<uint32_t>(c.first[l] + k);
  b.len = std::move(lengths);
  return b;
}

uint64_t payloadBits(const std::vector<uint64_t>& freq, const std::vector<uint8_t>& len) {
  uint64_t bits = 0;
  for (size_t i = 0; i < freq.size(); ++i) bits += freq[i] * len[i];
  return bits;
}

}  // namespace

std::vector<uint8_t> limitedCodeLengths(std::span<const uint64_t> freqs, int max_length) {
  LWC_CHECK(max_length >= 1 && max_length <= kMaxDecodeLength, "max_length ", max_length);
  std::vector<uint32_t> used;
  uint64_t total = 0;
  for (uint32_t i = 0; i < freqs.size(); ++i)
    if (freqs[i]) used.push_back(i), total += freqs[i];
  std::vector<uint8_t> len(freqs.size(), 0);
  const size_t n = used.size();
  if (n == 0) return len;
  if (n == 1) {
    len[used[0]] = 1;
    return len;
  }
  LWC_CHECK(max_length >= 32 || n <= (size_t{1} << max_length), n, " symbols cannot have codes of at most ", max_length, " bits");
  // Package weights are sums over at most max_length levels of all leaves.
  LWC_CHECK(total <= UINT64_MAX / 64, "frequencies too large");
  std::stable_sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) { return freqs[a] < freqs[b]; });

  // Package-merge: the list at depth max_length holds the leaves (coins of denomination
  // 2^-max_length); the list one level up merges the leaves with pairs ("packages") of the list
  // below. The cheapest 2n-2 items at depth 1 are the optimal choice; each leaf's code length is the
  // number of levels at which it is chosen. Only the leaf/package flags are kept per level, since the
  // chosen items of every level are a prefix of its list and the chosen leaves a prefix of `used`.
  std::vector<uint64_t> leaf(n);
  for (size_t i = 0; i < n; ++i) leaf[i] = freqs[used[i]];
  std::vector<std::vector<uint8_t>> isLeaf(max_length);
  isLeaf[max_length - 1].assign(n, 1);
  std::vector<uint64_t> below = leaf, cur;
  for (int d = max_length - 2; d >= 0; --d) {
    cur.clear();
    auto& flags = isLeaf[d];
    size_t li = 0, pi = 0;
    const size_t packages = below.size() / 2;
    while (li < n || pi < packages) {
      // Ties go to the leaf, which keeps the result independent of the merge order.
      if (pi == packages || (li < n && leaf[li] <= below[2 * pi] + below[2 * pi + 1])) {
        cur.push_back(leaf[li++]);
        flags.push_back(1);
      } else {
        cur.push_back(below[2 * pi] + below[2 * pi + 1]);
        ++pi;
        flags.push_back(0);
      }
    }
    std::swap(below, cur);
  }
  size_t take = 2 * n - 2;
  for (int d = 0; d < max_length; ++d) {
    LWC_CHECK(take <= isLeaf[d].size(), "package-merge level ", d);
    size_t leaves = 0;
    for (size_t i = 0; i < take; ++i) leaves += isLeaf[d][i];
    for (size_t i = 0; i < leaves; ++i) ++len[used[i]];
    take = 2 * (take - leaves);
  }
  LWC_CHECK(take == 0, "package-merge left ", take, " items");
  return len;
}

Encoded encode(std::span<const uint32_t> symbols, uint32_t num_symbols, int32_t zero_symbol) {
  if (num_symbols < 1 || num_symbols > kMaxSymbols)
    fail("huffman encode: num_symbols ", num_symbols, " out of range [1, ", kMaxSymbols, "]");
  const bool sparse = zero_symbol >= 0;
  if (sparse && static_cast<uint32_t>(zero_symbol) >= num_symbols)
    fail("huffman encode: zero symbol ", zero_symbol, " >= num_symbols ", num_symbols);
  const uint32_t zero = sparse ? static_cast<uint32_t>(zero_symbol) : kDenseZero;

  std::vector<uint64_t> vfreq(num_symbols), gfreq(sparse ? kGapSymbols : 0);
  uint64_t nonzeros = 0, run = 0;
  for (size_t i = 0; i < symbols.size(); ++i) {
    const uint32_t s = symbols[i];
    if (s >= num_symbols) fail("huffman encode: symbol ", s, " at index ", i, " out of range [0, ", num_symbols, ")");
    if (s == zero) {
      ++run;
      continue;
    }
    if (sparse) {
      gfreq[kGapEscape] += run / kGapEscape;
      ++gfreq[run % kGapEscape];
      run = 0;
    }
    ++vfreq[s];
    ++nonzeros;
  }
  const CodeBook vbook = makeCodeBook(limitedCodeLengths(vfreq, kMaxEncodeLength));
  const CodeBook gbook = makeCodeBook(limitedCodeLengths(gfreq, kMaxEncodeLength));
  const uint64_t bits = payloadBits(vfreq, vbook.len) + payloadBits(gfreq, gbook.len);

  Encoded enc;
  auto& out = enc.bytes;
  out.resize(kHeaderBytes);
  uint8_t* p = std::copy(kMagic, kMagic + 4, out.data());
  *p++ = kVersion;
  *p++ = sparse ? kFlagSparse : 0;
  p = putLE(p, num_symbols, 4);
  p = putLE(p, zero, 4);
  p = putLE(p, symbols.size(), 8);
  p = putLE(p, nonzeros, 8);
  putLE(p, bits, 8);
  writeTable(out, vbook.len);
  if (sparse) writeTable(out, gbook.len);
  const size_t tableEnd = out.size();
  out.resize(tableEnd + ceilBytes(bits));

  BitWriter w(out.data() + tableEnd);
  run = 0;
  for (const uint32_t s : symbols) {
    if (s == zero) {
      ++run;
      continue;
    }
    if (sparse) {
      for (; run >= kGapEscape; run -= kGapEscape) w.put(gbook.code[kGapEscape], gbook.len[kGapEscape]);
      w.put(gbook.code[run], gbook.len[run]);
      run = 0;
    }
    w.put(vbook.code[s], vbook.len[s]);
  }
  w.finish();
  LWC_CHECK(w.total() == bits && w.end() == out.data() + out.size(), "huffman payload size");

  auto& st = enc.stats;
  st.numel = static_cast<int64_t>(symbols.size());
  st.nonzeros = static_cast<int64_t>(nonzeros);
  st.header_bytes = kHeaderBytes;
  st.table_bytes = static_cast<int64_t>(tableEnd) - kHeaderBytes;
  st.payload_bytes = static_cast<int64_t>(ceilBytes(bits));
  for (const auto* len : {&vbook.len, &gbook.len})
    for (uint8_t l : *len) st.max_code_length = std::max<int>(st.max_code_length, l);
  return enc;
}

StreamInfo inspect(std::span<const uint8_t> stream) {
  const Layout L = parseLayout(stream, parseHeader(stream));
  StreamInfo info;
  info.numel = static_cast<int64_t>(L.h.numel);
  info.nonzeros = static_cast<int64_t>(L.h.nonzeros);
  info.sparse = L.h.sparse;
  info.num_symbols = L.h.num_symbols;
  info.zero_symbol = L.h.sparse ? int64_t{L.h.zero_symbol} : -1;
  for (const auto* len : {&L.value_len, &L.gap_len})
    for (uint8_t l : *len) info.max_code_length = std::max<int>(info.max_code_length, l);
  info.header_bytes = kHeaderBytes;
  info.table_bytes = static_cast<int64_t>(L.payload_offset) - kHeaderBytes;
  info.payload_bytes = static_cast<int64_t>(stream.size() - L.payload_offset);
  return info;
}

void decode(std::span<const uint8_t> stream, uint32_t num_symbols, std::span<uint32_t> out) {
  const Header h = parseHeader(stream);
  if (h.num_symbols != num_symbols) bad("has ", h.num_symbols, " symbols, expected ", num_symbols);
  if (h.numel != out.size()) bad("declares ", h.numel, " elements, tensor has ", out.size());
  const Layout L = parseLayout(stream, h);
  const DecodeTable values = buildDecodeTable(L.value_len);
  BitReader br(stream.subspan(L.payload_offset), h.payload_bits);

  if (!h.sparse) {
    for (uint32_t& o : out) {
      br.refill();
      o = decodeSymbol(values, br);
    }
  } else {
    const DecodeTable gaps = buildDecodeTable(L.gap_len);
    const size_t n = out.size();
    size_t i = 0;
    for (uint64_t k = 0; k < h.nonzeros; ++k) {
      size_t gap = 0;
      for (;;) {
        br.refill();
        const uint32_t g = decodeSymbol(gaps, br);
        gap += g;
        // The value after the gap needs one more element.
        if (gap >= n - i) bad("gap runs past the element count ", n, " (non-zero ", k, " of ", h.nonzeros, ")");
        if (g != kGapEscape) break;
      }
      std::fill_n(out.begin() + i, gap, h.zero_symbol);
      i += gap;
      br.refill();
      out[i++] = decodeSymbol(values, br);
    }
    std::fill(out.begin() + i, out.end(), h.zero_symbol);
  }
  if (br.consumed() > h.payload_bits) bad("truncated payload (the codes run past the ", h.payload_bits, " bits declared)");
  if (br.consumed() < h.payload_bits)
    bad("payload declares ", h.payload_bits, " bits but its codes end after ", br.consumed());
}

}  // namespace lwc::huffman
