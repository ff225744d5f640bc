// Gloo process group: rendezvous through the TCP store, then collectives with timeouts (see collectives.h).
#include "collectives.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <thread>
#include <stdexcept>

#include "nccl.h"
#include "tcp_store.h"

namespace weightnorm::distributed {
namespace {

// Gloo's rendezvous talks to a gloo::rendezvous::Store; this one forwards to our TCP store under a "gloo/" prefix
// and turns the base class's untimed wait into one bounded by the group's timeout.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(TcpStoreClient& store, std::chrono::milliseconds timeout) : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override { store_.set(kPrefix + key, data); }
  std::vector<char> get(const std::string& key) override { return store_.get(kPrefix + key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> prefixed;
    for (const std::string& key : keys) prefixed.push_back(kPrefix + key);
    const std::vector<std::string> missing = store_.wait(prefixed, timeout);
    if (!missing.empty()) {
      throw std::runtime_error("Gloo's connection setup waited " + std::to_string(timeout.count()) +
                               " ms for key '" + missing.front() + "' in the rendezvous store");
    }
  }

 private:
  static inline const std::string kPrefix = "gloo/";
  TcpStoreClient& store_;
  std::chrono::milliseconds timeout_;
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string local_host_for(const ProcessGroupOptions& options) {
  if (!options.local_host.empty()) return options.local_host;
  if (is_loopback(options.master_addr)) return "127.0.0.1";
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "127.0.0.1";
  return name;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::ostringstream text;
  for (size_t i = 0; i < ranks.size(); ++i) text << (i ? ", " : "") << ranks[i];
  return text.str();
}

using ReduceFunction = void (*)(void*, const void*, const void*, size_t);

template <typename T>
ReduceFunction reduce_function(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return static_cast<ReduceFunction>(&gloo::max<T>);
    case ReduceOp::kMin:
      return static_cast<ReduceFunction>(&gloo::min<T>);
    case ReduceOp::kSum:
    case ReduceOp::kMean:
      break;
  }
  return static_cast<ReduceFunction>(&gloo::sum<T>);
}

}  // namespace

ProcessGroup::ProcessGroup(const ProcessGroupOptions& options) : options_(options) {
  const int rank = options.rank;
  const int size = options.world_size;
  if (size < 1 || rank < 0 || rank >= size) {
    throw std::runtime_error("rank " + std::to_string(rank) + " is outside a world of size " + std::to_string(size));
  }
  // Rank 0 listens on every interface, so that other nodes reach it at whatever address they were given.
  if (rank == 0) server_ = std::make_unique<TcpStoreServer>("", options.master_port);
  store_ = std::make_unique<TcpStoreClient>(options.master_addr, options.master_port, rank, options.timeout);

  // Arrival first, so that a missing rank is named here rather than as a missing Gloo key.
  store_->set("arrived/" + std::to_string(rank), {});
  std::vector<std::string> expected;
  for (int r = 0; r < size; ++r) expected.push_back("arrived/" + std::to_string(r));
  // Rank 0 decides when the rendezvous failed and posts why, so that every rank reports the same missing ranks
  // (the others started their clocks later, and lose the store when rank 0 gives up).
  const std::string failed_key = "rendezvous/failed";
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  std::vector<std::string> missing;
  try {
    for (;;) {
      missing = store_->wait(expected, std::chrono::milliseconds(50));
      if (missing.empty()) break;
      if (rank != 0 && store_->wait({failed_key}, std::chrono::milliseconds(0)).empty()) {
        const std::vector<char> why = store_->get(failed_key, std::chrono::milliseconds(0));
        throw std::runtime_error(std::string(why.begin(), why.end()));
      }
      if (rank == 0 && std::chrono::steady_clock::now() >= deadline) break;
    }
  } catch (const std::runtime_error& error) {
    if (std::string(error.what()).find("lost the connection") == std::string::npos) throw;
    throw std::runtime_error("rank 0 ended the rendezvous at " + store_->address() +
                             " before every rank joined (it gave up or exited)");
  }
  if (!missing.empty()) {
    std::vector<int> absent;
    for (const std::string& key : missing) absent.push_back(std::stoi(key.substr(8)));
    const std::string why = std::string(absent.size() == 1 ? "rank " : "ranks ") + rank_list(absent) + " of " +
                            std::to_string(size) + " did not join the rendezvous at " + store_->address() +
                            " within " + std::to_string(options.timeout.count()) + " ms";
    store_->set(failed_key, std::vector<char>(why.begin(), why.end()));
    // Long enough for the others' next poll (every 50 ms) to read why before the store closes.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    throw std::runtime_error(why);
  }

  gloo::transport::tcp::attr attr;
  attr.hostname = local_host_for(options);
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
  context->setTimeout(options.timeout);
  GlooStoreAdapter adapter(*store_, options.timeout);
  try {
    context->connectFullMesh(adapter, device);
  } catch (const std::exception& error) {
    throw std::runtime_error("rank " + std::to_string(rank) + " could not connect to its peers (at " + attr.hostname +
                             "; set WEIGHTNORM_DISTRIBUTED_HOST to the address others reach this node at): " +
                             error.what());
  }
  context_ = context;
  if (options.nccl != NcclMode::kOff) join_nccl();
}

void ProcessGroup::join_nccl() {
  // Creating a communicator is collective (ncclCommInitRank waits for every rank), so every rank must decide
  // alike: each posts whether it can use NCCL ("" if so, else why not), and NCCL is used only if all can.
  std::string reason;
  nccl_usable(&reason);
  store_->set("nccl/unusable/" + std::to_string(options_.rank), std::vector<char>(reason.begin(), reason.end()));
  for (int r = 0; r < options_.world_size; ++r) {
    const std::vector<char> why = store_->get("nccl/unusable/" + std::to_string(r), options_.timeout);
    if (why.empty()) continue;
    if (options_.nccl == NcclMode::kAuto) return;  // Gloo for everything, on every rank
    throw std::runtime_error("backend 'nccl': rank " + std::to_string(r) + " cannot use NCCL: " +
                             std::string(why.begin(), why.end()));
  }
  nccl_ = std::make_unique<NcclCommunicator>(*store_, options_.rank, options_.world_size, options_.timeout);
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::fail(const char* name, const std::string& cause) {
  std::string who;
  try {
    // A peer's socket may close here before rank 0's store has seen that process's connection close: ask again
    // for up to a second (bounded by the timeout) before concluding that no rank exited.
    std::vector<int> departed = store_->departed_ranks();
    const auto patience = std::min(options_.timeout, std::chrono::milliseconds(1000));
    const auto give_up = std::chrono::steady_clock::now() + patience;
    while (departed.empty() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      departed = store_->departed_ranks();
    }
    who = departed.empty() ? "no rank has exited (one may be stuck, or slower than the timeout of " +
                                 std::to_string(options_.timeout.count()) + " ms)"
                           : "rank " + std::to_string(departed.front()) + " exited" +
                                 (departed.size() == 1 ? std::string()
                                                       : " (then also " + rank_list({departed.begin() + 1, departed.end()}) + ")");
  } catch (const std::exception&) {
    who = "rank 0 exited (its rendezvous store at " + store_->address() + " is gone)";
  }
  broken_ = std::string(name) + " failed on rank " + std::to_string(options_.rank) + ": " + who + " [" + cause + "]";
  throw std::runtime_error(broken_);
}

template <typename Collective>
void ProcessGroup::run_collective(const char* name, Collective&& collective) {
  if (destroyed_) throw std::runtime_error(std::string(name) + ": the process group was destroyed");
  if (!broken_.empty()) {
    throw std::runtime_error(std::string(name) + ": the process group is broken by an earlier failure (" + broken_ +
                             "); destroy() it and init() again");
  }
  try {
    collective(next_tag_++);
  } catch (const std::exception& error) {
    fail(name, error.what());
  }
}

void ProcessGroup::all_reduce(void* data, size_t count, ElementType type, ReduceOp op) {
  if (count == 0 || options_.world_size == 1) return;  // the mean of one rank is its value
  run_collective("allReduce", [&](uint32_t tag) {
    gloo::AllreduceOptions gloo_options(context_);
    gloo_options.setTag(tag);
    gloo_options.setTimeout(options_.timeout);
    if (type == ElementType::kFloat32) {
      gloo_options.setOutput(static_cast<float*>(data), count);
      gloo_options.setReduceFunction(reduce_function<float>(op));
    } else {
      gloo_options.setOutput(static_cast<int32_t*>(data), count);
      gloo_options.setReduceFunction(reduce_function<int32_t>(op));
    }
    gloo::allreduce(gloo_options);
  });
  if (op == ReduceOp::kMean && type == ElementType::kFloat32) {
    // A division, not a multiply by 1/world_size: the same rounding as torch's sum / world_size.
    float* values = static_cast<float*>(data);
    const float ranks = static_cast<float>(options_.world_size);
    for (size_t i = 0; i < count; ++i) values[i] /= ranks;
  }
}

void ProcessGroup::all_reduce_device(void* device_data, size_t count, ElementType type, ReduceOp op) {
  if (!nccl_) throw std::runtime_error("allReduce: this process group has no NCCL communicator for CUDA memory");
  if (count == 0) return;
  run_collective("allReduce (NCCL)", [&](uint32_t) { nccl_->all_reduce(device_data, count, type, op); });
}

void ProcessGroup::broadcast_device(void* device_data, size_t bytes, int root) {
  if (!nccl_) throw std::runtime_error("broadcast: this process group has no NCCL communicator for CUDA memory");
  if (root < 0 || root >= options_.world_size) {
    throw std::runtime_error("broadcast: root " + std::to_string(root) + " is outside a world of size " +
                             std::to_string(options_.world_size));
  }
  if (bytes == 0) return;
  run_collective("broadcast (NCCL)", [&](uint32_t) { nccl_->broadcast(device_data, bytes, root); });
}

void ProcessGroup::broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= options_.world_size) {
    throw std::runtime_error("broadcast: root " + std::to_string(root) + " is outside a world of size " +
                             std::to_string(options_.world_size));
  }
  if (bytes == 0 || options_.world_size == 1) return;
  run_collective("broadcast", [&](uint32_t tag) {
    gloo::BroadcastOptions gloo_options(context_);
    gloo_options.setTag(tag);
    gloo_options.setTimeout(options_.timeout);
    gloo_options.setRoot(root);
    gloo_options.setOutput(static_cast<uint8_t*>(data), bytes);
    gloo::broadcast(gloo_options);
  });
}

void ProcessGroup::barrier() {
  if (options_.world_size == 1) return;
  run_collective("barrier", [&](uint32_t tag) {
    gloo::BarrierOptions gloo_options(context_);
    gloo_options.setTag(tag);
    gloo_options.setTimeout(options_.timeout);
    gloo::barrier(gloo_options);
  });
}

void ProcessGroup::destroy() {
  if (destroyed_) return;
  std::string barrier_error;
  if (broken_.empty()) {
    try {
      barrier();
    } catch (const std::exception& error) {
      barrier_error = error.what();
    }
  }
  destroyed_ = true;
  nccl_.reset();
  context_.reset();
  store_.reset();  // says goodbye
  server_.reset();
  if (!barrier_error.empty()) throw std::runtime_error("destroy: " + barrier_error);
}

}  // namespace weightnorm::distributed
