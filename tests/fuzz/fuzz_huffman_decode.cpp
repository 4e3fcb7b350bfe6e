// libFuzzer target for the Huffman stream decoder (lwc/huffman.h).
//
// Input: u16 LE num_symbols - 1, u32 LE expected element count (0xffffffff: the count the stream
// declares), then the stream. Counts above 2^20 are skipped to keep memory bounded.
// lwc::Error from inspect/decode is the expected answer to bad input; anything else (another
// exception, a sanitizer report, a failed consistency check) is a bug. A stream that decodes must
// also survive a round trip: re-encoding its symbols and decoding again gives them back.
// Seeds: tests/fuzz/corpus/, written by `test_ir "[.huffman_corpus]"`.
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "lwc/huffman.h"

namespace {

constexpr uint32_t kMaxNumel = 1u << 20;

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "fuzz_huffman_decode: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace hf = lwc::huffman;
  if (size < 6) return 0;
  const uint32_t num_symbols = (data[0] | uint32_t{data[1]} << 8) + 1;
  uint32_t numel = data[2] | uint32_t{data[3]} << 8 | uint32_t{data[4]} << 16 | uint32_t{data[5]} << 24;
  const std::span<const uint8_t> stream(data + 6, size - 6);

  std::optional<hf::StreamInfo> info;
  try {
    info = hf::inspect(stream);
  } catch (const lwc::Error&) {
  }
  if (numel == 0xffffffffu) {
    if (!info || info->numel > kMaxNumel) return 0;
    numel = static_cast<uint32_t>(info->numel);
  }
  if (numel > kMaxNumel) return 0;

  std::vector<uint32_t> out(numel);
  try {
    hf::decode(stream, num_symbols, out);
  } catch (const lwc::Error&) {
    return 0;
  }
  // decode validates everything inspect does, and more.
  if (!info) bug("decode accepted a stream inspect rejected");
  if (info->numel != numel || info->num_symbols != num_symbols) bug("inspect and decode disagree");
  const int32_t zero = info->sparse ? static_cast<int32_t>(info->zero_symbol) : -1;
  for (uint32_t x : out) {
    if (x >= num_symbols) bug("decoded symbol out of range");
  }

  // Errors here are bugs too: let them escape and abort.
  const hf::Encoded again = hf::encode(out, num_symbols, zero);
  std::vector<uint32_t> back(numel);
  hf::decode(again.bytes, num_symbols, back);
  if (back != out) bug("round trip changed the symbols");
  // Streams may carry codes up to 32 bits; what the encoder writes never exceeds its own limit.
  if (again.stats.max_code_length > hf::kMaxEncodeLength) bug("encoder exceeded the length limit");
  return 0;
}
