// NCCL loaded with dlopen (see nccl.h). The declarations below are this file's own, written from NCCL's documented
// C API (NCCL 2.x): the entry points' signatures, the values of the data-type and reduction enums, and the 128-byte
// unique id are its stable ABI, which is what lets one build load whichever libnccl.so.2 a machine has.
#include "nccl.h"

#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tcp_store.h"

#ifdef WEIGHTNORM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace weightnorm::distributed {
namespace {

// ncclResult_t: 0 is success; other values are described by ncclGetErrorString.
using NcclResult = int;
constexpr NcclResult kNcclSuccess = 0;
// ncclUniqueId: opaque bytes made by ncclGetUniqueId on one rank and passed by value to ncclCommInitRank on all.
struct NcclUniqueId {
  char internal[128];
};
struct NcclComm;  // opaque; ncclComm_t is a pointer to it
using NcclCommHandle = NcclComm*;
// ncclDataType_t values used here.
enum NcclDataType : int { kNcclUint8 = 1, kNcclInt32 = 2, kNcclFloat32 = 7 };
// ncclRedOp_t values used here. ncclAvg exists since NCCL 2.10.
enum NcclRedOp : int { kNcclSum = 0, kNcclMax = 2, kNcclMin = 3, kNcclAvg = 4 };
using CudaStream = struct CUstream_st*;  // cudaStream_t

constexpr const char* kLibrary = "libnccl.so.2";

struct NcclApi {
  NcclResult (*get_unique_id)(NcclUniqueId* id) = nullptr;
  NcclResult (*comm_init_rank)(NcclCommHandle* comm, int world_size, NcclUniqueId id, int rank) = nullptr;
  NcclResult (*all_reduce)(const void* send, void* receive, size_t count, NcclDataType type, NcclRedOp op,
                           NcclCommHandle comm, CudaStream stream) = nullptr;
  NcclResult (*broadcast)(const void* send, void* receive, size_t count, NcclDataType type, int root,
                          NcclCommHandle comm, CudaStream stream) = nullptr;
  NcclResult (*comm_destroy)(NcclCommHandle comm) = nullptr;
  const char* (*get_error_string)(NcclResult result) = nullptr;
  std::string error;  // why the library is unusable; empty when every entry point was found
};

template <typename Function>
bool bind(void* library, const char* name, Function& function, std::string& error) {
  // dlsym returns void*; POSIX guarantees it converts to a function pointer.
  function = reinterpret_cast<Function>(dlsym(library, name));
  if (function) return true;
  error = std::string(kLibrary) + " has no " + name + " (NCCL 2.x is needed)";
  return false;
}

// Loaded once per process and never unloaded (communicators may outlive any one caller).
const NcclApi& api() {
  static NcclApi loaded;
  static std::once_flag once;
  std::call_once(once, [] {
    void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      const char* why = dlerror();
      loaded.error = std::string(kLibrary) + " could not be loaded (" + (why ? why : "unknown reason") +
                     "): install NCCL (e.g. the libnccl2 package) or add its directory to LD_LIBRARY_PATH";
      return;
    }
    bind(library, "ncclGetUniqueId", loaded.get_unique_id, loaded.error) &&
        bind(library, "ncclCommInitRank", loaded.comm_init_rank, loaded.error) &&
        bind(library, "ncclAllReduce", loaded.all_reduce, loaded.error) &&
        bind(library, "ncclBroadcast", loaded.broadcast, loaded.error) &&
        bind(library, "ncclCommDestroy", loaded.comm_destroy, loaded.error) &&
        bind(library, "ncclGetErrorString", loaded.get_error_string, loaded.error);
  });
  return loaded;
}

#ifdef WEIGHTNORM_WITH_CUDA
void check_nccl(NcclResult result, const char* what) {
  if (result == kNcclSuccess) return;
  throw std::runtime_error(std::string(what) + " failed: " + api().get_error_string(result) + " (NCCL error " +
                           std::to_string(result) + ")");
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(status));
}
#endif

}  // namespace

bool nccl_usable(std::string* reason) {
  const NcclApi& nccl = api();
  std::string why = nccl.error;
#ifdef WEIGHTNORM_WITH_CUDA
  if (why.empty()) {
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess) {
      why = std::string(kLibrary) + " loaded, but CUDA is unusable: " + cudaGetErrorString(status);
    } else if (devices == 0) {
      why = std::string(kLibrary) + " loaded, but no CUDA device is visible";
    }
  }
#else
  if (why.empty()) {
    why = std::string(kLibrary) + " loaded, but this weightnorm_distributed.node was built without CUDA (rebuild with "
                                  "the CUDA toolkit installed)";
  }
#endif
  if (reason) *reason = why;
  return why.empty();
}

#ifdef WEIGHTNORM_WITH_CUDA

struct NcclCommunicator::State {
  NcclCommHandle comm = nullptr;
  cudaStream_t stream = nullptr;
};

NcclCommunicator::NcclCommunicator(TcpStoreClient& store, int rank, int world_size, std::chrono::milliseconds timeout)
    : state_(std::make_unique<State>()), timeout_(timeout) {
  std::string reason;
  if (!nccl_usable(&reason)) throw std::runtime_error(reason);
  const std::string key = "nccl/unique_id";
  NcclUniqueId id{};
  if (rank == 0) {
    check_nccl(api().get_unique_id(&id), "ncclGetUniqueId");
    store.set(key, std::vector<char>(id.internal, id.internal + sizeof id.internal));
  } else {
    const std::vector<char> bytes = store.get(key, timeout);
    if (bytes.size() != sizeof id.internal) {
      throw std::runtime_error("the NCCL unique id from rank 0 has " + std::to_string(bytes.size()) + " bytes, not " +
                               std::to_string(sizeof id.internal));
    }
    std::copy(bytes.begin(), bytes.end(), id.internal);
  }
  // The library's kernels use device 0 (weightnorm's CUDA device); each rank sees its own GPU as device 0 when the
  // launcher gives it one (CUDA_VISIBLE_DEVICES).
  check_cuda(cudaSetDevice(0), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  const NcclResult result = api().comm_init_rank(&state_->comm, world_size, id, rank);
  if (result != kNcclSuccess) {
    cudaStreamDestroy(state_->stream);
    check_nccl(result, "ncclCommInitRank");
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (state_->comm) api().comm_destroy(state_->comm);
  if (state_->stream) cudaStreamDestroy(state_->stream);
}

namespace {

// Waits for the stream, polling, until `timeout`: NCCL blocks a collective on the device until every rank joins it.
void wait_for(cudaStream_t stream, std::chrono::milliseconds timeout, const char* name) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const cudaError_t status = cudaStreamQuery(stream);
    if (status == cudaSuccess) return;
    if (status != cudaErrorNotReady) check_cuda(status, name);
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(std::string(name) + " did not finish within " + std::to_string(timeout.count()) +
                               " ms (a rank did not take part); the NCCL communicator is unusable now");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace

void NcclCommunicator::all_reduce(void* device_data, size_t count, ElementType type, ReduceOp op) {
  const NcclDataType nccl_type = type == ElementType::kFloat32 ? kNcclFloat32 : kNcclInt32;
  NcclRedOp nccl_op = kNcclSum;
  switch (op) {
    case ReduceOp::kSum:
      nccl_op = kNcclSum;
      break;
    case ReduceOp::kMean:
      nccl_op = kNcclAvg;
      break;
    case ReduceOp::kMax:
      nccl_op = kNcclMax;
      break;
    case ReduceOp::kMin:
      nccl_op = kNcclMin;
      break;
  }
  check_nccl(api().all_reduce(device_data, device_data, count, nccl_type, nccl_op, state_->comm, state_->stream),
             "ncclAllReduce");
  wait_for(state_->stream, timeout_, "ncclAllReduce");
}

void NcclCommunicator::broadcast(void* device_data, size_t bytes, int root) {
  check_nccl(api().broadcast(device_data, device_data, bytes, kNcclUint8, root, state_->comm, state_->stream),
             "ncclBroadcast");
  wait_for(state_->stream, timeout_, "ncclBroadcast");
}

#else  // without CUDA there is no device memory to reduce: construction fails with nccl_usable's reason

struct NcclCommunicator::State {};

NcclCommunicator::NcclCommunicator(TcpStoreClient&, int, int, std::chrono::milliseconds timeout) : timeout_(timeout) {
  std::string reason;
  nccl_usable(&reason);
  throw std::runtime_error(reason);
}

NcclCommunicator::~NcclCommunicator() = default;

void NcclCommunicator::all_reduce(void*, size_t, ElementType, ReduceOp) {
  throw std::logic_error("ncclAllReduce: no communicator (built without CUDA)");
}

void NcclCommunicator::broadcast(void*, size_t, int) {
  throw std::logic_error("ncclBroadcast: no communicator (built without CUDA)");
}

#endif

}  // namespace weightnorm::distributed
