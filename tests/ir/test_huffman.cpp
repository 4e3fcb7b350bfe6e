#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <queue>
#include <random>
#include <string>

#include "lwc/huffman.h"

using namespace lwc;
namespace hf = lwc::huffman;

namespace {

using Symbols = std::vector<uint32_t>;

std::vector<uint32_t> decodeAll(std::span<const uint8_t> stream, uint32_t num_symbols, size_t numel) {
  std::vector<uint32_t> out(numel, 0xdeadbeef);
  hf::decode(stream, num_symbols, out);
  return out;
}

// Encodes, decodes, checks the result and what inspect() reports; returns the encoding.
hf::Encoded roundTrip(const Symbols& s, uint32_t num_symbols, int32_t zero) {
  hf::Encoded e = hf::encode(s, num_symbols, zero);
  REQUIRE(decodeAll(e.bytes, num_symbols, s.size()) == s);
  const hf::StreamInfo info = hf::inspect(e.bytes);
  CHECK(info.numel == static_cast<int64_t>(s.size()));
  CHECK(info.nonzeros == e.stats.nonzeros);
  CHECK(info.sparse == (zero >= 0));
  CHECK(info.num_symbols == num_symbols);
  CHECK(info.zero_symbol == (zero >= 0 ? zero : -1));
  CHECK(info.max_code_length == e.stats.max_code_length);
  CHECK(info.max_code_length <= hf::kMaxEncodeLength);
  CHECK(info.header_bytes + info.table_bytes + info.payload_bytes == static_cast<int64_t>(e.bytes.size()));
  CHECK(e.stats.header_bytes + e.stats.table_bytes + e.stats.payload_bytes == static_cast<int64_t>(e.bytes.size()));
  return e;
}

Symbols uniform(size_t n, uint32_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> d(0, k - 1);
  Symbols s(n);
  for (auto& x : s) x = d(rng);
  return s;
}

// Like int8-quantized weights: a discretized Laplace distribution around 128, clamped to [0, 255].
Symbols laplace(size_t n, double scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution sign(0.5);
  Symbols s(n);
  for (auto& x : s) {
    const double v = 128 + (sign(rng) ? 1 : -1) * e(rng);
    x = static_cast<uint32_t>(std::clamp(std::lround(v), 0L, 255L));
  }
  return s;
}

Symbols sparsify(Symbols s, double zero_fraction, uint32_t zero, uint32_t seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution z(zero_fraction);
  for (auto& x : s)
    if (z(rng)) x = zero;
  return s;
}

// Empirical entropy in bits of a symbol sequence: a lower bound for any prefix code's total length.
double entropyBits(const Symbols& s) {
  std::map<uint32_t, double> count;
  for (uint32_t x : s) count[x] += 1;
  double bits = 0;
  for (auto& [sym, c] : count) bits -= c * std::log2(c / s.size());
  return bits;
}

// Total length of an unconstrained Huffman code, computed independently of the library.
uint64_t huffmanCost(const std::vector<uint64_t>& freqs) {
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>> q;
  for (uint64_t f : freqs)
    if (f) q.push(f);
  if (q.size() == 1) return q.top();
  uint64_t cost = 0;
  while (q.size() > 1) {
    const uint64_t a = q.top();
    q.pop();
    const uint64_t b = q.top();
    q.pop();
    cost += a + b;
    q.push(a + b);
  }
  return cost;
}

uint64_t kraftSum32(const std::vector<uint8_t>& len) {
  uint64_t s = 0;
  for (uint8_t l : len)
    if (l) s += uint64_t{1} << (32 - l);
  return s;
}

// Hand-built streams for the malformed cases.
struct Raw {
  uint8_t version = 1, flags = 0;
  uint32_t num_symbols = 2, zero = 0xffffffff;
  uint64_t numel = 1, nonzeros = 1, payload_bits = 1;
  std::vector<uint8_t> tables = {1, 1};  // one byte per entry is valid table encoding for lengths < 64
  std::vector<uint8_t> payload = {0x00};

  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> b = {'L', 'W', 'H', '1', version, flags};
    auto put = [&](uint64_t v, int n) {
      for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    put(num_symbols, 4);
    put(zero, 4);
    put(numel, 8);
    put(nonzeros, 8);
    put(payload_bits, 8);
    b.insert(b.end(), tables.begin(), tables.end());
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
  }
};

// A sparse Raw: 2 value symbols (0 = zero, 1 coded with length 1) and a gap table with one code.
Raw sparseRaw(uint32_t gap_symbol, uint64_t numel) {
  Raw r;
  r.flags = 1;
  r.zero = 0;
  r.numel = numel;
  r.nonzeros = 1;
  r.payload_bits = 2;
  r.tables = {0, 1};
  std::vector<uint8_t> gaps(hf::kGapSymbols, 0);
  gaps[gap_symbol] = 1;
  r.tables.insert(r.tables.end(), gaps.begin(), gaps.end());
  r.payload = {0x00};
  return r;
}

void requireError(std::span<const uint8_t> stream, uint32_t num_symbols, size_t numel, const std::string& fragment) {
  std::vector<uint32_t> out(numel);
  CHECK_THROWS_WITH(hf::decode(stream, num_symbols, out), Catch::Contains(fragment));
}

// Decoding a damaged stream must end in lwc::Error or a result; never a crash or another exception.
void decodeNoCrash(std::span<const uint8_t> stream, uint32_t num_symbols, size_t numel) {
  std::vector<uint32_t> out(numel);
  try {
    hf::decode(stream, num_symbols, out);
    CHECK(std::all_of(out.begin(), out.end(), [&](uint32_t x) { return x < num_symbols; }));
  } catch (const Error&) {
  }
}

}  // namespace

TEST_CASE("huffman round trip", "[huffman]") {
  SECTION("uniform int8, dense and sparse") {
    const Symbols s = uniform(10000, 256, 1);
    roundTrip(s, 256, -1);
    roundTrip(s, 256, 128);
  }
  SECTION("skewed (Laplace) int8, dense and sparse") {
    const Symbols s = laplace(50000, 3.0, 2);
    roundTrip(s, 256, -1);
    roundTrip(s, 256, 128);
    roundTrip(sparsify(s, 0.9, 128, 3), 256, 128);
  }
  SECTION("single symbol") {
    const Symbols s(1000, 7);
    const auto dense = roundTrip(s, 16, -1);
    CHECK(dense.stats.max_code_length == 1);
    CHECK(dense.stats.payload_bytes == 125);  // one bit per element
    roundTrip(s, 16, 3);
    roundTrip(Symbols(1000, 0), 1, -1);
  }
  SECTION("all zeros") {
    const Symbols s(100000, 5);
    const auto e = roundTrip(s, 256, 5);
    CHECK(e.stats.nonzeros == 0);
    CHECK(e.stats.payload_bytes == 0);
    CHECK(e.bytes.size() < 50);
    roundTrip(Symbols(10, 0), 1, 0);  // the only symbol is the zero symbol
  }
  SECTION("no zeros in sparse mode") {
    Symbols s = uniform(5000, 255, 4);
    for (auto& x : s) x += 1;
    const auto e = roundTrip(s, 256, 0);
    CHECK(e.stats.nonzeros == 5000);
  }
  SECTION("gaps of 255, 256, 257, 512 and more, leading and trailing zeros") {
    for (size_t gap : {0, 1, 255, 256, 257, 511, 512, 513, 70000}) {
      CAPTURE(gap);
      Symbols s;
      for (int v = 0; v < 4; ++v) {
        s.insert(s.end(), gap, 0);
        s.push_back(1 + v % 3);
      }
      s.insert(s.end(), gap, 0);
      roundTrip(s, 4, 0);
    }
  }
  SECTION("65536 symbols") {
    const Symbols s = uniform(300000, 65536, 5);
    const auto e = roundTrip(s, 65536, -1);
    CHECK(e.stats.payload_bytes <= 2 * 300000);  // no worse than 16-bit fixed-length codes
    roundTrip(s, 65536, 40000);
    // Few used symbols of a large alphabet: the table's zero runs keep it small.
    const auto few = roundTrip(Symbols{0, 65535, 30000, 30000}, 65536, -1);
    CHECK(few.stats.table_bytes < 20);
  }
  SECTION("one element") {
    roundTrip(Symbols{3}, 4, -1);
    roundTrip(Symbols{3}, 4, 0);
    roundTrip(Symbols{0}, 4, 0);
  }
  SECTION("zero elements") {
    const auto e = roundTrip(Symbols{}, 256, -1);
    CHECK(e.stats.payload_bytes == 0);
    roundTrip(Symbols{}, 256, 0);
  }
  SECTION("long codes take the decoder's slow path") {
    // Frequencies 2^0 .. 2^15: code lengths 1..15, beyond the 11-bit lookup table.
    Symbols s;
    for (uint32_t k = 0; k < 16; ++k) s.insert(s.end(), size_t{1} << k, k);
    std::shuffle(s.begin(), s.end(), std::mt19937(6));
    const auto e = roundTrip(s, 16, -1);
    CHECK(e.stats.max_code_length == 15);
    roundTrip(s, 16, 15);
  }
}

TEST_CASE("huffman encode rejects bad arguments", "[huffman]") {
  CHECK_THROWS_WITH(hf::encode(Symbols{1, 2}, 0, -1), Catch::Contains("num_symbols 0 out of range"));
  CHECK_THROWS_WITH(hf::encode(Symbols{1, 2}, 65537, -1), Catch::Contains("num_symbols 65537 out of range"));
  CHECK_THROWS_WITH(hf::encode(Symbols{1, 2}, 2, -1), Catch::Contains("symbol 2 at index 1 out of range [0, 2)"));
  CHECK_THROWS_WITH(hf::encode(Symbols{1, 2}, 4, 4), Catch::Contains("zero symbol 4 >= num_symbols 4"));
}

TEST_CASE("huffman code is close to the entropy bound", "[huffman]") {
  SECTION("dense, Huffman-optimal") {
    // A narrow distribution (p_max ~ 0.2), where Huffman's redundancy over the entropy is ~1 %:
    // the payload must be exactly the optimal prefix code's length.
    const Symbols s = laplace(200000, 2.5, 7);
    std::vector<uint64_t> freqs(256);
    for (uint32_t x : s) ++freqs[x];
    const uint64_t optimal = huffmanCost(freqs);
    const auto e = hf::encode(s, 256, -1);
    CHECK(e.stats.payload_bytes == static_cast<int64_t>((optimal + 7) / 8));
  }
  SECTION("dense, int8 weights") {
    const Symbols s = laplace(200000, 8.0, 7);
    const auto e = hf::encode(s, 256, -1);
    const double h = entropyBits(s);
    const double payload = 8.0 * e.stats.payload_bytes;
    CAPTURE(h / s.size(), payload / s.size());
    CHECK(payload >= h);
    CHECK(payload <= 1.01 * h + 64);
    CHECK(e.stats.payload_bytes <= static_cast<int64_t>(s.size()));  // fixed-length: 8 bits per element
    CHECK(e.stats.table_bytes <= 256);
  }
  SECTION("sparse beats dense when most elements are zero") {
    const Symbols s = sparsify(laplace(200000, 2.5, 8), 0.9, 128, 9);
    const auto dense = hf::encode(s, 256, -1), sparse = hf::encode(s, 256, 128);
    CHECK(sparse.bytes.size() < dense.bytes.size());
  }
  SECTION("package-merge without a binding limit equals Huffman") {
    std::mt19937 rng(10);
    for (int trial = 0; trial < 50; ++trial) {
      const size_t n = 2 + rng() % 300;
      std::vector<uint64_t> freqs(n);
      for (auto& f : freqs) f = rng() % 4 == 0 ? 0 : 1 + rng() % (trial % 2 ? 1000000 : 10);
      freqs[0] = std::max<uint64_t>(freqs[0], 1);
      freqs[1] = std::max<uint64_t>(freqs[1], 1);
      const auto len = hf::limitedCodeLengths(freqs, 32);
      uint64_t cost = 0;
      for (size_t i = 0; i < n; ++i) {
        CHECK((freqs[i] == 0) == (len[i] == 0));
        cost += freqs[i] * len[i];
      }
      CHECK(cost == huffmanCost(freqs));
      CHECK(kraftSum32(len) == uint64_t{1} << 32);
    }
  }
}

TEST_CASE("huffman code lengths are limited to 24 bits", "[huffman]") {
  // Fibonacci frequencies make the deepest Huffman tree: n symbols need n - 1 bits unconstrained.
  std::vector<uint64_t> fib = {1, 1};
  while (fib.size() < 40) fib.push_back(fib[fib.size() - 1] + fib[fib.size() - 2]);
  SECTION("lengths") {
    const auto free = hf::limitedCodeLengths(fib, 32);
    CHECK(*std::max_element(free.begin(), free.end()) == 32);
    const auto limited = hf::limitedCodeLengths(fib, 24);
    CHECK(*std::max_element(limited.begin(), limited.end()) == 24);
    CHECK(kraftSum32(limited) == uint64_t{1} << 32);
    // Lengths never increase with frequency.
    for (size_t i = 1; i < fib.size(); ++i) CHECK(limited[i] <= limited[i - 1]);
    std::vector<uint64_t> few(fib.begin(), fib.begin() + 27);
    const auto fewFree = hf::limitedCodeLengths(few, 32);
    CHECK(*std::max_element(fewFree.begin(), fewFree.end()) == 26);
  }
  SECTION("encoder, 27 Fibonacci frequencies (26 bits unconstrained)") {
    Symbols s;
    for (uint32_t k = 0; k < 27; ++k) s.insert(s.end(), fib[k], k);
    std::shuffle(s.begin(), s.end(), std::mt19937(11));
    const auto e = roundTrip(s, 27, -1);
    CHECK(e.stats.max_code_length == 24);
    // The limit costs almost nothing: the affected symbols are rare.
    const uint64_t unlimited = huffmanCost(std::vector<uint64_t>(fib.begin(), fib.begin() + 27));
    CHECK(8 * e.stats.payload_bytes >= static_cast<int64_t>(unlimited));
    CHECK(8.0 * e.stats.payload_bytes <= 1.0001 * unlimited + 8);
  }
}

TEST_CASE("huffman encoding is deterministic", "[huffman]") {
  const Symbols s = sparsify(laplace(20000, 4.0, 12), 0.5, 128, 13);
  CHECK(hf::encode(s, 256, 128).bytes == hf::encode(s, 256, 128).bytes);
  CHECK(hf::encode(s, 256, -1).bytes == hf::encode(s, 256, -1).bytes);
  // Equal frequencies: ties are broken by symbol index (lower index, longer code).
  const auto len = hf::limitedCodeLengths(std::vector<uint64_t>{5, 5, 5, 5, 5, 5}, 24);
  CHECK(len == std::vector<uint8_t>{3, 3, 3, 3, 2, 2});
}

TEST_CASE("huffman decoder rejects malformed streams", "[huffman]") {
  SECTION("the hand-built baseline is valid") {
    const Raw r;
    CHECK(decodeAll(r.bytes(), 2, 1) == Symbols{0});
    CHECK(decodeAll(sparseRaw(1, 3).bytes(), 2, 3) == Symbols{0, 1, 0});
  }
  SECTION("header") {
    Raw r;
    auto b = r.bytes();
    requireError(std::span(b).first(37), 2, 1, "truncated header (37 bytes, need 38)");
    b[0] = 'X';
    requireError(b, 2, 1, "bad magic");
    r.version = 2;
    requireError(r.bytes(), 2, 1, "unsupported version 2");
    r = Raw{};
    r.flags = 0x82;
    requireError(r.bytes(), 2, 1, "unknown flags 0x82");
    r = Raw{};
    r.num_symbols = 0;
    requireError(r.bytes(), 0, 1, "num_symbols 0 out of range [1, 65536]");
    r.num_symbols = 70000;
    requireError(r.bytes(), 70000, 1, "num_symbols 70000 out of range");
    requireError(Raw{}.bytes(), 3, 1, "has 2 symbols, expected 3");
    r = Raw{};
    r.zero = 5;
    requireError(r.bytes(), 2, 1, "dense stream has zero symbol 5");
    r = sparseRaw(0, 3);
    r.zero = 2;
    requireError(r.bytes(), 2, 3, "zero symbol 2 >= num_symbols 2");
    r = Raw{};
    r.nonzeros = 2;
    requireError(r.bytes(), 2, 1, "declares 2 non-zeros > 1 elements");
    r = sparseRaw(0, 3);
    r.nonzeros = 4;
    requireError(r.bytes(), 2, 3, "declares 4 non-zeros > 3 elements");
    r = Raw{};
    r.numel = 2;
    requireError(r.bytes(), 2, 2, "dense stream declares 1 non-zeros != 2 elements");
    r.numel = uint64_t{1} << 63;
    requireError(r.bytes(), 2, 1, "too large");
  }
  SECTION("element count") {
    const Symbols s = uniform(1000, 16, 14);
    const auto e = hf::encode(s, 16, -1);
    requireError(e.bytes, 16, 999, "declares 1000 elements, tensor has 999");
    requireError(e.bytes, 16, 1001, "declares 1000 elements, tensor has 1001");
    requireError(e.bytes, 17, 1000, "has 16 symbols, expected 17");
  }
  SECTION("huge declared sizes fail before anything is allocated") {
    Raw r;
    r.numel = r.nonzeros = uint64_t{1} << 60;
    requireError(r.bytes(), 2, 10, "declares 1152921504606846976 elements but only 1 payload bits");
    CHECK_THROWS_WITH(hf::inspect(r.bytes()), Catch::Contains("declares 1152921504606846976 elements but only 1 payload bits"));
    r.payload_bits = uint64_t{1} << 62;
    CHECK_THROWS_WITH(hf::inspect(r.bytes()), Catch::Contains("truncated payload (576460752303423488 payload bytes declared, 3 bytes follow the header)"));
    r = sparseRaw(0, uint64_t{1} << 60);
    r.nonzeros = 1000;
    CHECK_THROWS_WITH(hf::inspect(r.bytes()), Catch::Contains("declares 1000 non-zeros but only 2 payload bits"));
    // A sparse stream of 2^60 zeros is valid: the caller's tensor shape decides whether it is wanted.
    r = sparseRaw(0, uint64_t{1} << 60);
    r.nonzeros = 0;
    r.payload_bits = 0;
    r.payload.clear();
    CHECK(hf::inspect(r.bytes()).numel == int64_t{1} << 60);
    requireError(r.bytes(), 2, 10, "declares 1152921504606846976 elements, tensor has 10");
  }
  SECTION("code length tables") {
    Raw r;
    r.tables = {40, 1};
    requireError(r.bytes(), 2, 1, "code length 40 > 32");
    r.tables = {0x21, 1};
    requireError(r.bytes(), 2, 1, "code length 33 > 32");
    r.tables = {0x40, 1};
    requireError(r.bytes(), 2, 1, "repeats before its first entry");
    r.tables = {1, 0x41};
    requireError(r.bytes(), 2, 1, "run of 2 passes its 2 entries");
    r.tables = {0x80, 0x02};
    requireError(r.bytes(), 2, 1, "run of 3 passes its 2 entries");
    r.tables = {1, 1, 1};
    r.num_symbols = 3;
    requireError(r.bytes(), 3, 1, "value code lengths are over-subscribed");
    r.tables = {1, 2, 0};
    requireError(r.bytes(), 3, 1, "value code lengths are incomplete");
    r.tables = {0, 2, 0};
    requireError(r.bytes(), 3, 1, "single code of length 2");
    r.tables = {0, 0, 0};
    requireError(r.bytes(), 3, 1, "value code table is empty");
    // The table runs into the end of the stream.
    r = Raw{};
    r.tables = {1};
    r.payload.clear();
    r.payload_bits = 0;
    r.numel = r.nonzeros = 0;
    requireError(r.bytes(), 2, 0, "truncated value code length table (1 of 2 entries)");
    r.tables = {0x80};
    requireError(r.bytes(), 2, 0, "truncated value code length table (0 of 2 entries)");
  }
  SECTION("sparse tables and gaps") {
    Raw r = sparseRaw(1, 3);
    r.tables[0] = 1;
    r.tables[1] = 0;
    requireError(r.bytes(), 2, 3, "gives the zero symbol 0 a code");
    r = sparseRaw(1, 3);
    r.tables.resize(2 + 100);
    requireError(r.bytes(), 2, 3, "truncated gap code length table");
    r = sparseRaw(1, 3);
    std::fill(r.tables.begin() + 2, r.tables.end(), 0);
    requireError(r.bytes(), 2, 3, "gap code table is empty");
    requireError(sparseRaw(3, 3).bytes(), 2, 3, "gap runs past the element count 3");
    requireError(sparseRaw(2, 2).bytes(), 2, 2, "gap runs past the element count 2");
    requireError(sparseRaw(hf::kGapEscape, 256).bytes(), 2, 256, "gap runs past the element count 256");
    CHECK(decodeAll(sparseRaw(2, 3).bytes(), 2, 3) == Symbols{0, 0, 1});
  }
  SECTION("payload") {
    Raw r;
    r.payload.clear();
    requireError(r.bytes(), 2, 1, "truncated payload (1 bytes declared, 0 present)");
    r.payload_bits = 100;
    requireError(r.bytes(), 2, 1, "truncated payload (13 payload bytes declared, 2 bytes follow the header)");
    r = Raw{};
    r.payload.push_back(0);
    requireError(r.bytes(), 2, 1, "1 trailing bytes after the payload");
    r = Raw{};
    r.payload = {0x01};
    requireError(r.bytes(), 2, 1, "non-zero padding bits");
    r = Raw{};
    r.payload_bits = 2;
    requireError(r.bytes(), 2, 1, "payload declares 2 bits but its codes end after 1");
    // Symbol 0 has the code "0"; "1" is unused in a one-code table.
    r = Raw{};
    r.tables = {1, 0};
    r.payload = {0x80};
    requireError(r.bytes(), 2, 1, "invalid code in payload");
    // Two elements of a 2-bit code declared in 3 bits: the second code runs past the payload.
    r = Raw{};
    r.num_symbols = 4;
    r.tables = {2, 2, 2, 2};
    r.numel = r.nonzeros = 2;
    r.payload_bits = 3;
    r.payload = {0x00};
    requireError(r.bytes(), 4, 2, "truncated payload (the codes run past the 3 bits declared)");
  }
  SECTION("every truncation of a real stream fails") {
    for (int32_t zero : {-1, 128}) {
      const Symbols s = sparsify(laplace(3000, 3.0, 15), 0.7, 128, 16);
      const auto e = hf::encode(s, 256, zero);
      for (size_t n = 0; n < e.bytes.size(); ++n) {
        CAPTURE(zero, n);
        std::vector<uint32_t> out(s.size());
        CHECK_THROWS_AS(hf::decode(std::span(e.bytes).first(n), 256, out), Error);
        CHECK_THROWS_AS(hf::inspect(std::span(e.bytes).first(n)), Error);
      }
    }
  }
  SECTION("every flipped bit gives an error or some output") {
    for (int32_t zero : {-1, 7}) {
      const Symbols s = sparsify(laplace(600, 2.0, 17), 0.6, 7, 18);
      auto b = hf::encode(s, 16 + 256, zero).bytes;
      for (size_t bit = 0; bit < 8 * b.size(); ++bit) {
        b[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        decodeNoCrash(b, 16 + 256, s.size());
        try {
          hf::inspect(b);
        } catch (const Error&) {
        }
        b[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
    }
  }
}

// Throughput on a 25 M-element int8 tensor; run with: ./build/tests/test_ir "[.huffman_bench]"
TEST_CASE("huffman decode speed", "[.huffman_bench]") {
  const size_t n = 25'000'000;
  for (double zeros : {0.0, 0.9}) {
    const Symbols s = sparsify(laplace(n, 3.0, 19), zeros, 128, 20);
    const int32_t zero = zeros > 0 ? 128 : -1;
    const auto t0 = std::chrono::steady_clock::now();
    const auto e = hf::encode(s, 256, zero);
    const double enc = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<uint32_t> out(n);
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t1 = std::chrono::steady_clock::now();
      hf::decode(e.bytes, 256, out);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
    }
    REQUIRE(out == s);
    std::printf("%s, %.0f%% zeros: %zu bytes (%.3f bits/element), encode %.3f s, decode %.3f s = %.1f M elements/s\n",
                zero >= 0 ? "sparse" : "dense", 100 * zeros, e.bytes.size(), 8.0 * e.bytes.size() / n, enc, best,
                n / best / 1e6);
  }
}

// Writes the fuzzer's seed corpus: ./build/tests/test_ir "[.huffman_corpus]" (see fuzz_huffman_decode.cpp).
TEST_CASE("huffman fuzz corpus", "[.huffman_corpus]") {
  const auto write = [](const std::string& name, const Symbols& s, uint32_t num_symbols, int32_t zero) {
    const auto e = hf::encode(s, num_symbols, zero);
    std::vector<uint8_t> b;
    const uint32_t ns = num_symbols - 1, numel = static_cast<uint32_t>(s.size());
    for (int i = 0; i < 2; ++i) b.push_back(static_cast<uint8_t>(ns >> (8 * i)));
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(numel >> (8 * i)));
    b.insert(b.end(), e.bytes.begin(), e.bytes.end());
    std::ofstream(std::string(LWC_SOURCE_DIR) + "/tests/fuzz/corpus/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  write("dense_uniform16", uniform(200, 16, 21), 16, -1);
  write("dense_laplace256", laplace(400, 2.0, 22), 256, -1);
  write("sparse_laplace256", sparsify(laplace(1500, 2.0, 23), 0.9, 128, 24), 256, 128);
  Symbols gaps;
  for (size_t g : {0, 3, 255, 256, 300, 600}) gaps.insert(gaps.end(), g, 0), gaps.push_back(1 + g % 3);
  gaps.insert(gaps.end(), 40, 0);
  write("sparse_long_gaps", gaps, 4, 0);
  write("single_symbol", Symbols(100, 2), 4, -1);
  write("empty", Symbols{}, 256, -1);
  write("alphabet65536", Symbols{0, 65535, 30000, 30000, 7}, 65536, -1);
  Symbols deep;  // Fibonacci frequencies: code lengths up to 12, past the decoder's lookup table
  for (uint32_t k = 0, a = 1, b = 1; k < 13; ++k, b = a + b, a = b - a) deep.insert(deep.end(), a, k);
  std::shuffle(deep.begin(), deep.end(), std::mt19937(25));
  write("dense_long_codes", deep, 13, -1);
}
