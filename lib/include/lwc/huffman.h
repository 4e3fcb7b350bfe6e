// Canonical-Huffman coding of quantized weight tensors (Deep Compression, Han et al. 2016, stage 3).
//
// A tensor is a sequence of symbols in [0, num_symbols): quantization-grid or codebook indices.
// Dense mode codes every element. Sparse mode (after pruning) codes only the elements that differ
// from a "zero symbol", each as (gap, value), where the gap counts the zero elements before it:
// the paper's relative indexing, with the gaps Huffman-coded too instead of stored in fixed width.
//
// Stream format "LWH1", version 1. Integers are little-endian.
//
//   offset size field
//   0      4    magic "LWH1"
//   4      1    version = 1
//   5      1    flags: bit 0 = sparse; the other bits must be 0
//   6      4    num_symbols, in [1, 65536]
//   10     4    zero_symbol: sparse: < num_symbols; dense: 0xffffffff
//   14     8    numel: element count of the tensor (< 2^63)
//   22     8    nonzeros: sparse: elements != zero_symbol (<= numel); dense: = numel
//   30     8    payload_bits: exact length of the payload in bits
//   38          value code lengths: num_symbols entries (table encoding below)
//               sparse only: gap code lengths, kGapSymbols = 257 entries
//               payload: ceil(payload_bits / 8) bytes, then the stream ends
//
// Code length tables. An entry is a code length in 0..32 (0 = symbol has no code). Byte codes:
//   0x00-0x3f  one entry of length b (a length above 32 is rejected)
//   0x40-0x7f  (b & 0x3f) + 1 more entries repeating the previous entry (1..64)
//   0x80-0xff  ((b & 0x7f) << 8 | next byte) + 1 entries of length 0 (1..32768)
// A run may not pass the table's end. An int8 table costs at most 256 bytes, usually far less.
//
// Codes are canonical: symbols sorted by (length, symbol index) get consecutive code values, each
// code at its own length. A table is accepted if it is a complete prefix code (Kraft sum = 1), is
// empty, or holds a single code of length 1 (the encoder's choice for a one-symbol alphabet).
// Over-subscribed and other incomplete tables are rejected: the encoder never writes them, and
// rejecting them keeps every payload bit pattern meaningful (except the unused code of a one-code
// table, which is rejected when met in the payload).
// In sparse mode the value table gives zero_symbol no code. The gap alphabet is 0..255 = "this many
// zero elements, then a value" and kGapEscape = 256 = "256 zero elements, no value": a gap g is
// written as g / 256 escapes and then g % 256. Zeros after the last value are implied by numel.
//
// Payload: dense: numel value codes; sparse: nonzeros times (escapes, gap code, value code). Codes
// are written most-significant bit first into bytes filled from their most-significant bit; the last
// byte is padded with zero bits. The decoder requires the payload to use exactly payload_bits bits,
// zero padding bits, and nothing after the payload: truncated input and trailing bytes are errors.
//
// Every header field is checked before anything is allocated, against bounds the stream's own size
// implies (each code takes at least one bit): a dense stream holds at most payload_bits elements,
// a sparse one at most payload_bits / 2 values. Decoding allocates only tables of O(num_symbols).
//
// Code lengths are limited to kMaxEncodeLength = 24 bits by package-merge (Larmore & Hirschberg),
// which gives the optimal length-limited code; ties are broken by symbol index, so the encoder is
// deterministic. The decoder accepts lengths up to 32. It decodes through an 11-bit lookup table,
// falling back to a canonical search for longer codes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "lwc/status.h"

namespace lwc::huffman {

inline constexpr uint32_t kMaxSymbols = 65536;
inline constexpr int kMaxEncodeLength = 24;
inline constexpr int kMaxDecodeLength = 32;
inline constexpr uint32_t kGapEscape = 256;
inline constexpr uint32_t kGapSymbols = kGapEscape + 1;
inline constexpr int64_t kHeaderBytes = 38;

/// Sizes of an encoded stream's parts; nonzeros = numel in dense mode.
struct EncodeStats {
  int64_t numel = 0, nonzeros = 0;
  int64_t header_bytes = 0, table_bytes = 0, payload_bytes = 0;
  int max_code_length = 0;
};

struct Encoded {
  std::vector<uint8_t> bytes;
  EncodeStats stats;
};

/// What a stream's header and tables declare (see inspect()).
struct StreamInfo {
  int64_t numel = 0, nonzeros = 0;
  bool sparse = false;
  uint32_t num_symbols = 0;
  int64_t zero_symbol = -1;  ///< -1 in dense mode
  int max_code_length = 0;
  int64_t header_bytes = 0, table_bytes = 0, payload_bytes = 0;
};

/// Encodes symbols[i] in [0, num_symbols), num_symbols in [1, 65536]. zero_symbol >= 0 selects sparse
/// mode (elements equal to it become gaps), zero_symbol < 0 dense mode. Bad arguments throw lwc::Error.
Encoded encode(std::span<const uint32_t> symbols, uint32_t num_symbols, int32_t zero_symbol);

/// Decodes a stream into out, whose size must equal the element count the stream declares. Any
/// malformed input, or a num_symbols different from the stream's, throws lwc::Error.
void decode(std::span<const uint8_t> stream, uint32_t num_symbols, std::span<uint32_t> out);

/// Validates header, tables and stream size without decoding the payload (for `lwc info`).
StreamInfo inspect(std::span<const uint8_t> stream);

/// Optimal prefix-code lengths for the given frequencies with no length above max_length
/// (package-merge). Unused symbols (frequency 0) get 0; a single used symbol gets 1.
/// Requires 2^max_length >= the number of used symbols and max_length <= 32.
std::vector<uint8_t> limitedCodeLengths(std::span<const uint64_t> freqs, int max_length);

}  // namespace lwc::huffman
