// NumPy .npy files (format versions 1-3, little-endian, C order) <-> Tensor.
#pragma once

#include <filesystem>
#include <string>

#include "lwc/tensor.h"

namespace lwc {

/// Reads a .npy file; errors name the file (bad magic, Fortran order, big-endian, unsupported dtype,
/// data shorter than the header says).
Tensor readNpy(const std::filesystem::path& path);
/// Parses .npy bytes (e.g. a member of an .npz archive); `where` names the source in errors.
Tensor parseNpy(const std::string& bytes, const std::string& where);
/// Serialises a tensor as .npy (version 1.0) bytes.
std::string toNpy(const Tensor& t);
/// Writes a .npy file atomically.
void writeNpy(const std::filesystem::path& path, const Tensor& t);

}  // namespace lwc
