#include <catch2/catch.hpp>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "lwc/model_io.h"
#include "lwc/tensor.h"

using namespace lwc;

TEST_CASE("float16 conversion", "[tensor]") {
  SECTION("exact values round trip") {
    for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f /*min normal*/, 5.960464477539063e-08f /*min subnormal*/}) {
      CHECK(halfToFloat(floatToHalf(f)) == f);
    }
  }
  SECTION("known bit patterns") {
    CHECK(floatToHalf(1.0f) == 0x3c00);
    CHECK(floatToHalf(-2.0f) == 0xc000);
    CHECK(floatToHalf(65504.0f) == 0x7bff);
    CHECK(floatToHalf(1e6f) == 0x7c00);  // overflow -> inf
    CHECK(halfToFloat(0x0001) == Approx(5.960464477539063e-08f));
  }
  SECTION("round to nearest even") {
    // 1 + 2^-11 is exactly between two halves: rounds to even (1.0)
    CHECK(floatToHalf(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
    // 1 + 3*2^-11 is between 1+2^-10 and 1+2^-9: rounds to even (1+2^-9 = 0x3c02)
    CHECK(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  }
  SECTION("nan and inf") {
    CHECK(std::isnan(halfToFloat(floatToHalf(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isinf(halfToFloat(floatToHalf(std::numeric_limits<float>::infinity()))));
  }
}

TEST_CASE("tensor basics", "[tensor]") {
  Tensor t = Tensor::fromVector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(t.numel() == 6);
  CHECK(t.nbytes() == 24);
  CHECK(reinterpret_cast<uintptr_t>(t.raw()) % 64 == 0);
  Tensor r = t.reshaped({3, 2});
  CHECK(r.raw() == t.raw());
  Tensor c = t.clone();
  CHECK(c.raw() != t.raw());
  CHECK(c.bitEqual(t));
  c.data<float>()[0] = 9;
  CHECK_FALSE(c.bitEqual(t));
  CHECK_THROWS_AS(t.data<int32_t>(), InternalError);
  CHECK_THROWS_AS(t.reshaped({4}), InternalError);
  CHECK(Tensor(DType::Int8, {0, 5}).numel() == 0);
  CHECK_THROWS_AS(Tensor(DType::Float32, {-1}), Error);
}

// A BufferPool hands a freed buffer to the next request it fits without wasting more than half of
// it, smallest first; buffers come back when the last tensor sharing them goes, from any thread, and
// tensors may outlive their pool.
TEST_CASE("BufferPool reuses the smallest fitting buffer, from any thread, and may go first", "[tensor]") {
  auto pool = std::make_unique<BufferPool>();
  auto alloc = [&](int64_t floats) {
    BufferPool::Scope scope(*pool);
    return Tensor::uninitialized(DType::Float32, {floats});
  };
  SECTION("the smallest free buffer that fits, and none more than twice too large") {
    Tensor a = alloc(1024), b = alloc(512), c = alloc(256);  // 4096, 2048 and 1024 bytes
    const void *p4096 = a.raw(), *p2048 = b.raw(), *p1024 = c.raw();
    b = Tensor();  // all three back in the pool, in neither size order
    a = Tensor();
    c = Tensor();
    const Tensor d = alloc(400);  // 1600 bytes: 2048 is the smallest that fits
    CHECK(d.raw() == p2048);
    const Tensor e = alloc(200);  // 800 bytes: 1024 fits
    CHECK(e.raw() == p1024);
    const Tensor f = alloc(100);  // 400 bytes: 4096 fits but is more than twice too large
    CHECK(f.raw() != p4096);
    const Tensor g = alloc(1024);
    CHECK(g.raw() == p4096);
    const Tensor h = alloc(1024);  // nothing left: a fresh buffer
    CHECK(h.raw() != p4096);
    CHECK(reinterpret_cast<uintptr_t>(h.raw()) % 64 == 0);
  }
#if defined(__SANITIZE_ADDRESS__)
  SECTION("under AddressSanitizer a buffer in the pool, and the unrequested rest of a reused one, are poisoned") {
    Tensor a = alloc(1024);  // 4096 bytes
    // void*, as the ASan interface takes; a char* would be printed by Catch as a string.
    void* p = const_cast<void*>(a.raw());
    auto at = [&](size_t offset) -> void* { return static_cast<char*>(p) + offset; };
    CHECK(__asan_region_is_poisoned(p, 4096) == nullptr);
    a = Tensor();
    CHECK(__asan_address_is_poisoned(p));  // a use after release is reported
    CHECK(__asan_address_is_poisoned(at(4095)));
    const Tensor b = alloc(600);  // 2400 bytes, rounded to 2432: the 4096-byte buffer again
    REQUIRE(b.raw() == p);
    CHECK(__asan_region_is_poisoned(p, 2432) == nullptr);
    CHECK(__asan_address_is_poisoned(at(2432)));  // a read past the tensor's end is reported
    CHECK(__asan_address_is_poisoned(at(4095)));
  }
#endif
  SECTION("a buffer shared by copies returns once, when the last copy goes") {
    const void* p;
    Tensor keep;
    {
      const Tensor a = alloc(64);
      p = a.raw();
      keep = a.reshaped({8, 8});
    }
    const Tensor other = alloc(64);
    CHECK(other.raw() != p);  // still held by `keep`
    keep = Tensor();
    CHECK(alloc(64).raw() == p);
  }
  SECTION("tensors freed on other threads return to the pool, and survive the pool") {
    std::vector<Tensor> made;
    for (int i = 0; i < 64; ++i) {
      made.push_back(alloc(16 + i));
      made.back().data<float>()[0] = static_cast<float>(i);
    }
    std::vector<const void*> addresses;
    for (const Tensor& t : made) addresses.push_back(t.raw());
    std::thread([&] { made.clear(); }).join();  // the reference blocks are freed on that thread
    int reused = 0;
    std::vector<Tensor> again;
    for (int i = 0; i < 64; ++i) {
      again.push_back(alloc(16 + i));
      reused += std::find(addresses.begin(), addresses.end(), again.back().raw()) != addresses.end();
    }
    CHECK(reused == 64);
    for (int i = 0; i < 64; ++i) again[i].data<float>()[0] = static_cast<float>(i);
    pool.reset();  // the pool goes first; the tensors still own valid buffers, freed to the system later
    bool intact = true;
    for (int i = 0; i < 64; ++i) intact = intact && again[i].data<float>()[0] == static_cast<float>(i);
    CHECK(intact);
    std::thread([&] { again.clear(); }).join();
  }
}

TEST_CASE("tensor cast", "[tensor]") {
  Tensor f = Tensor::fromVector<float>({4}, {-1.7f, 0.0f, 2.9f, 1e10f});
  Tensor i = f.cast(DType::Int32);
  CHECK(i.data<int32_t>()[0] == -1);
  CHECK(i.data<int32_t>()[2] == 2);
  CHECK(i.data<int32_t>()[3] == std::numeric_limits<int32_t>::max());
  Tensor b = f.cast(DType::Bool);
  CHECK(b.data<bool>()[0]);
  CHECK_FALSE(b.data<bool>()[1]);
  Tensor h = f.cast(DType::Float16);
  CHECK(h.dtype() == DType::Float16);
  CHECK(h.at(2) == Approx(2.9).epsilon(1e-3));
}

namespace {
template <typename T>
void roundTrip(DType dt, std::vector<T> vals) {
  Tensor t = Tensor::fromVector<T>({static_cast<int64_t>(vals.size())}, vals);
  REQUIRE(t.dtype() == dt);
  auto p = tensorToProto(t, "x");
  CHECK(p.has_raw_data());
  Tensor back = tensorFromProto(p, {}, "x");
  CHECK(back.bitEqual(t));
}
}  // namespace

TEST_CASE("TensorProto conversion", "[tensor][io]") {
  SECTION("raw_data round trip for every dtype") {
    roundTrip<float>(DType::Float32, {1.5f, -2.0f, 0.0f});
    roundTrip<int8_t>(DType::Int8, {-128, 0, 127});
    roundTrip<uint8_t>(DType::UInt8, {0, 255});
    roundTrip<int32_t>(DType::Int32, {-5, 7});
    roundTrip<int64_t>(DType::Int64, {int64_t(1) << 40, -3});
    roundTrip<bool>(DType::Bool, {true, false, true});
    roundTrip<double>(DType::Float64, {1e300});
    Tensor h(DType::Float16, {2});
    static_cast<uint16_t*>(h.raw())[0] = 0x3c00;
    Tensor back = tensorFromProto(tensorToProto(h, "h"), {}, "h");
    CHECK(back.bitEqual(h));
    CHECK(back.at(0) == 1.0);
  }
  SECTION("typed fields") {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::FLOAT16);
    p.add_dims(2);
    p.add_int32_data(0x3c00);
    p.add_int32_data(0xc000);
    Tensor t = tensorFromProto(p, {}, "h");
    CHECK(t.at(0) == 1.0);
    CHECK(t.at(1) == -2.0);

    onnx::TensorProto q;
    q.set_data_type(onnx::TensorProto::INT8);
    q.add_dims(3);
    for (int v : {-3, 0, 100}) q.add_int32_data(v);
    Tensor u = tensorFromProto(q, {}, "q");
    CHECK(u.data<int8_t>()[0] == -3);
    CHECK(u.data<int8_t>()[2] == 100);

    onnx::TensorProto r;
    r.set_data_type(onnx::TensorProto::INT64);
    r.add_dims(1);
    r.add_int64_data(-9);
    CHECK(tensorFromProto(r, {}, "r").data<int64_t>()[0] == -9);

    onnx::TensorProto s;
    s.set_data_type(onnx::TensorProto::BOOL);
    s.add_dims(2);
    s.add_int32_data(1);
    s.add_int32_data(0);
    Tensor b = tensorFromProto(s, {}, "s");
    CHECK(b.data<bool>()[0]);
    CHECK_FALSE(b.data<bool>()[1]);
  }
  SECTION("data length that does not match the shape is an error naming the tensor") {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::FLOAT);
    p.add_dims(4);
    p.set_raw_data(std::string(12, '\0'));
    CHECK_THROWS_WITH(tensorFromProto(p, {}, "initializer 'w'"), Catch::Contains("initializer 'w'") && Catch::Contains("16"));
    onnx::TensorProto q;
    q.set_data_type(onnx::TensorProto::FLOAT);
    q.add_dims(3);
    q.add_float_data(1);
    CHECK_THROWS_WITH(tensorFromProto(q, {}, "w"), Catch::Contains("float_data holds 1 values"));
  }
  SECTION("unsupported and absurd tensors are errors") {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::STRING);
    CHECK_THROWS_AS(tensorFromProto(p, {}, "s"), Error);
    onnx::TensorProto q;
    q.set_data_type(onnx::TensorProto::FLOAT);
    q.add_dims(int64_t(1) << 40);
    q.add_dims(int64_t(1) << 40);
    CHECK_THROWS_WITH(tensorFromProto(q, {}, "big"), Catch::Contains("implausibly large"));
  }
}

#include "lwc/npy.h"

TEST_CASE(".npy round trip and errors", "[tensor][npy]") {
  Tensor t = Tensor::fromVector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const std::string b = toNpy(t);
  CHECK(b.size() % 64 == 6 * 4 % 64);  // header padded to a multiple of 64
  CHECK(parseNpy(b, "x").bitEqual(t));
  Tensor s = Tensor::fromVector<int64_t>({3}, {7, 8, 9});
  CHECK(parseNpy(toNpy(s), "s").bitEqual(s));
  CHECK_THROWS_WITH(parseNpy("garbage", "g.npy"), Catch::Contains("g.npy") && Catch::Contains("magic"));
  CHECK_THROWS_WITH(parseNpy(b.substr(0, b.size() - 4), "short.npy"), Catch::Contains("short.npy") && Catch::Contains("data bytes"));
  std::string big = b;
  const auto pos = big.find("(2, 3)");
  big.replace(pos, 6, "(2, 9)");
  CHECK_THROWS_AS(parseNpy(big, "lie.npy"), Error);
  // A bool array's bytes other than 0 and 1 read as True, as NumPy reads them (a bool holding any
  // other byte was undefined behaviour, found by fuzz_dataset on 2026-12-05).
  std::string flags = toNpy(Tensor::fromVector<bool>({4}, {false, true, false, true}));
  flags[flags.size() - 3] = '\x20';
  flags[flags.size() - 1] = '\xff';
  const Tensor fl = parseNpy(flags, "flags.npy");
  REQUIRE(fl.dtype() == DType::Bool);
  const auto* fb = static_cast<const uint8_t*>(fl.raw());
  CHECK(std::vector<int>(fb, fb + 4) == std::vector<int>{0, 1, 0, 1});
  flags[flags.size() - 4] = '\x07';
  CHECK(parseNpy(flags, "flags.npy").at(0) == 1.0);
}
