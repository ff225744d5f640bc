// NCCL collectives on CUDA memory, with NCCL loaded at run time: dlopen("libnccl.so.2") on first use, so the
// module has no link-time dependency on NCCL and one build serves machines with and without it. Only the handful
// of NCCL's C entry points used here are declared (nccl.cc), from NCCL's documented ABI.
//
// A communicator is made collectively: rank 0 asks NCCL for a unique id (128 opaque bytes) and posts it in the
// process group's TCP store, every rank reads it and joins. Collectives run on a CUDA stream of the communicator's
// own, on the calling (worker) thread, which waits for the stream with a deadline: a peer that never joins gives an
// error after the timeout instead of a hang (the communicator is unusable afterwards).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "collectives.h"

namespace weightnorm::distributed {

class TcpStoreClient;

// Whether libnccl.so.2 loads and has every entry point used here, and this module was built with CUDA and sees a
// device. `reason` says why not (naming libnccl.so.2 when the library is the cause).
bool nccl_usable(std::string* reason);

class NcclCommunicator {
 public:
  // Collective: every rank of the group constructs one with the same store. Throws a std::runtime_error when NCCL
  // is not usable (nccl_usable's reason) or the id exchange / ncclCommInitRank fails.
  NcclCommunicator(TcpStoreClient& store, int rank, int world_size, std::chrono::milliseconds timeout);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // data[0..count) (device memory) becomes the reduction over ranks. The caller makes sure the data is ready (the
  // library stream has finished writing it); returns once the result is in place.
  void all_reduce(void* device_data, size_t count, ElementType type, ReduceOp op);
  // data[0..bytes) (device memory) becomes root's.
  void broadcast(void* device_data, size_t bytes, int root);

 private:
  struct State;  // the communicator and stream: NCCL and CUDA types stay out of this header
  std::unique_ptr<State> state_;
  std::chrono::milliseconds timeout_;
};

}  // namespace weightnorm::distributed
