// Reading the native kernel tests' fixtures (test/fixtures/native_reference/, written by
// scripts/make_native_reference.mjs from the TypeScript references): the file's location, a little-endian byte
// reader, and the op families' common format (test/reference/native-op-fixtures.ts documents it). The reference
// maths lives in TypeScript only; a case file draws the same inputs (cpu::fill_normal, the library's randn),
// checks their checksum, runs its kernels and compares with the stored values.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "../../cpu/random.h"
#include "harness.h"

namespace weightnorm::native_test {

class FixtureReader {
 public:
  FixtureReader(std::vector<char> bytes, std::string name) : bytes_(std::move(bytes)), name_(std::move(name)) {}
  template <class T>
  T next() {
    if (at_ + sizeof(T) > bytes_.size()) throw std::runtime_error(name_ + ": truncated");
    T value;
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  std::string ascii(size_t length) {
    if (at_ + length > bytes_.size()) throw std::runtime_error(name_ + ": truncated");
    at_ += length;
    return std::string(bytes_.data() + at_ - length, length);
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  std::vector<char> bytes_;
  std::string name_;
  size_t at_ = 0;
};

// WEIGHTNORM_NATIVE_REFERENCE_DIR from the environment, else the source tree this binary was built from, else the
// checkout around the binary (build/..) or the working directory: a binary carried to another machine finds the
// fixture of the checkout it runs in.
inline std::string fixture_path(const std::string& file) {
  std::vector<std::string> directories;
  if (const char* directory = std::getenv("WEIGHTNORM_NATIVE_REFERENCE_DIR"); directory && *directory)
    directories.push_back(directory);
  directories.push_back(WEIGHTNORM_NATIVE_REFERENCE_DIR);
  char self[4096];
  const ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (length > 0) {
    const std::string binary(self, size_t(length));
    directories.push_back(binary.substr(0, binary.rfind('/')) + "/../test/fixtures/native_reference");
  }
  directories.push_back("test/fixtures/native_reference");
  for (const std::string& directory : directories)
    if (std::ifstream(directory + "/" + file).good()) return directory + "/" + file;
  return directories.front() + "/" + file;
}

inline FixtureReader open_fixture(const std::string& file) {
  const std::string path = fixture_path(file);
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw std::runtime_error("cannot read " + path + " (node scripts/make_native_reference.mjs writes it)");
  return FixtureReader(std::vector<char>(std::istreambuf_iterator<char>(stream), {}), path);
}

// ---------------------------------------------------------------------------------------------------------------
// The op families' format ("WNOPS001").

struct StoredElement {
  int64_t index;
  double want, magnitude;  // the float64 value and the sum of |terms| behind it
};
struct StoredOutput {
  int64_t count;                        // elements of the whole output
  std::vector<StoredElement> elements;  // all of them, or a sample of a large output
};
struct OpInput {
  std::vector<float> values;  // drawn from the stored seed; the checksum was checked on reading
};
struct OpCase {
  std::vector<int64_t> parameters;
  std::vector<OpInput> inputs;
  std::vector<StoredOutput> outputs;
};

// The sum opInputChecksum (native-op-fixtures.ts) computes, in the same order.
inline double op_input_checksum(const std::vector<float>& values) {
  double sum = 0.0;
  for (size_t i = 0; i < values.size(); ++i) sum += double(values[i]) * double(1 + i % 7);
  return sum;
}

// A float parameter, stored as the int64 of its float32 bit pattern (f32Bits in native-kernel-fixtures.ts).
inline float float_parameter(int64_t bits) {
  const uint32_t word = uint32_t(bits);
  float value;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

// `got` against a stored output: each stored element's |got - want| over relative * its magnitude (the scale the
// fixture's writer chose for that output); a size that differs from the output's counts as infinitely wrong.
inline NormalizedError compare_stored(const std::vector<float>& got, const StoredOutput& want, double relative) {
  NormalizedError error;
  if (int64_t(got.size()) != want.count) {
    error.add(NAN, 0.0, 1.0);
    return error;
  }
  for (const StoredElement& e : want.elements) error.add(got[size_t(e.index)], e.want, relative * e.magnitude);
  return error;
}

// Every case of `file`, with its inputs drawn; throws when an input's checksum differs (the generator changed,
// or the fixture is stale).
inline std::vector<OpCase> read_op_fixture(const std::string& file) {
  FixtureReader in = open_fixture(file);
  if (in.ascii(8) != "WNOPS001") throw std::runtime_error(file + ": not a WNOPS001 file");
  std::vector<OpCase> cases(in.next<uint32_t>());
  for (size_t c = 0; c < cases.size(); ++c) {
    OpCase& op = cases[c];
    op.parameters.resize(in.next<uint32_t>());
    for (int64_t& p : op.parameters) p = in.next<int64_t>();
    op.inputs.resize(in.next<uint32_t>());
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const uint64_t seed = in.next<uint64_t>();
      const uint64_t count = in.next<uint64_t>();
      const double checksum = in.next<double>();
      std::vector<float>& values = op.inputs[i].values;
      values.resize(count);
      if (count > 0) cpu::fill_normal(values.data(), int64_t(count), seed, 0.0f, 1.0f);
      if (op_input_checksum(values) != checksum)
        throw std::runtime_error(file + ": case " + std::to_string(c) + " input " + std::to_string(i) +
                                 ": checksum differs from the fixture's (regenerate it)");
    }
    op.outputs.resize(in.next<uint32_t>());
    for (StoredOutput& output : op.outputs) {
      output.count = int64_t(in.next<uint64_t>());
      output.elements.resize(in.next<uint32_t>());
      for (StoredElement& e : output.elements) {
        e.index = in.next<uint32_t>();
        e.want = in.next<double>();
        e.magnitude = in.next<double>();
      }
    }
  }
  if (!in.done()) throw std::runtime_error(file + ": bytes after the last case");
  return cases;
}

}  // namespace weightnorm::native_test
