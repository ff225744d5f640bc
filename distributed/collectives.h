// Collective communication for data-parallel training, on Gloo's TCP transport: a process group (one process per
// rank) formed by a rendezvous at rank 0's TCP store, then in-place all-reduce, broadcast and barrier on host
// memory. Plain C++: the N-API layer (binding/distributed.cc) runs these calls on a worker thread, one at a time,
// in the order JavaScript issued them; every rank must issue the same collectives in the same order.
//
// Failures never hang: the rendezvous, every collective and destroy() give up after `timeout`. A collective that
// fails (a peer exited, or did not take part in time) leaves the group broken: later calls throw at once, naming
// the first failure. The error names the ranks that exited when the store (rank 0) saw their connection close.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace gloo {
class Context;
}

namespace weightnorm::distributed {

class TcpStoreServer;
class TcpStoreClient;
class NcclCommunicator;

enum class ReduceOp { kSum, kMean, kMax, kMin };
enum class ElementType { kFloat32, kInt32 };
// Whether the group also gets an NCCL communicator for CUDA memory (nccl.h): never; when every rank can use NCCL
// (the ranks tell each other through the store, so that all decide alike); or always (the group fails without it).
enum class NcclMode { kOff, kAuto, kRequired };

struct ProcessGroupOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";  // where rank 0 hosts the store
  int master_port = 29500;
  std::chrono::milliseconds timeout{30000};
  // The address other ranks reach this one at (Gloo's pairs listen there). Empty: 127.0.0.1 when master_addr is a
  // loopback address, else this machine's host name.
  std::string local_host;
  NcclMode nccl = NcclMode::kOff;
};

class ProcessGroup {
 public:
  // The rendezvous: rank 0 starts the store, every rank joins, and Gloo connects a full mesh. Throws (a
  // std::runtime_error whose text names the missing ranks) when not all arrive within the timeout.
  explicit ProcessGroup(const ProcessGroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // data[0..count) becomes the reduction over ranks of every rank's data (kMean: the sum divided by world_size,
  // float32 only).
  void all_reduce(void* data, size_t count, ElementType type, ReduceOp op);
  // data[0..bytes) becomes root's.
  void broadcast(void* data, size_t bytes, int root);
  void barrier();

  // Whether CUDA memory goes through NCCL (the group has a communicator).
  bool has_nccl() const { return nccl_ != nullptr; }
  // all_reduce and broadcast on CUDA memory, through NCCL; the data must be ready (the caller waited for the stream
  // that wrote it). Throws when the group has no NCCL communicator.
  void all_reduce_device(void* device_data, size_t count, ElementType type, ReduceOp op);
  void broadcast_device(void* device_data, size_t bytes, int root);
  // A final barrier (so rank 0 keeps the store up until every rank is done with it), then the connections close.
  void destroy();

 private:
  template <typename Collective>
  void run_collective(const char* name, Collective&& collective);
  [[noreturn]] void fail(const char* name, const std::string& cause);
  void join_nccl();

  ProcessGroupOptions options_;
  std::unique_ptr<TcpStoreServer> server_;  // rank 0 only
  std::unique_ptr<TcpStoreClient> store_;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<NcclCommunicator> nccl_;
  uint32_t next_tag_ = 1;
  std::string broken_;  // the first failure's message; empty while healthy
  bool destroyed_ = false;
};

}  // namespace weightnorm::distributed
