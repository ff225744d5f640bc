// The distributed module (build/Release/weightnorm_distributed.node), separate from the core addon so that the core
// never needs Gloo's shared libraries: ts/distributed.ts loads it on first use. N-API only; the collectives are in
// distributed/collectives.cc. Every call that communicates returns a Promise and runs on the group's own
// communication thread, in the order JavaScript called (every rank must run the same collectives in the same order).
// The order is kept here, not by chaining promises in JavaScript, so that a call made while the JavaScript thread
// is busy (a bucket of gradients sent from a hook inside backward()) starts at once instead of when it is free.
#include <napi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "../distributed/collectives.h"
#include "../distributed/nccl.h"

namespace weightnorm::binding {
namespace {

using distributed::ElementType;
using distributed::NcclMode;
using distributed::ProcessGroup;
using distributed::ProcessGroupOptions;
using distributed::ReduceOp;

// Runs `job` off the JavaScript thread and settles `deferred` with `result` (or the job's error): for the one-off
// rendezvous of createProcessGroup.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, Napi::Promise::Deferred deferred, std::function<void()> job,
                std::function<Napi::Value(Napi::Env)> result)
      : Napi::AsyncWorker(env, "weightnorm.distributed"),
        deferred_(deferred),
        job_(std::move(job)),
        result_(std::move(result)) {}

  void Execute() override {
    try {
      job_();
    } catch (const std::exception& error) {
      SetError(std::string("weightnorm.distributed: ") + error.what());
    }
  }
  void OnOK() override { deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined()); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> job_;
  std::function<Napi::Value(Napi::Env)> result_;
};

// A process group's communication thread: runs queued collectives one after another and settles each one's promise
// on the JavaScript thread (through a thread-safe function). Created with the group; stops after destroy() ran.
class CommunicationThread {
 public:
  struct Job {
    std::function<void(ProcessGroup&)> work;
    Napi::Promise::Deferred deferred;
    std::vector<Napi::ObjectReference> kept;  // the JS objects (typed arrays, the group) the work touches
    std::string error;                        // set by the communication thread when the work threw
    bool last = false;                        // destroy(): the thread stops after it
  };

  CommunicationThread(Napi::Env env, std::shared_ptr<ProcessGroup> group) : group_(std::move(group)) {
    settle_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "weightnorm.distributed", 0, 1);
    settle_.Unref(env);  // only queued work keeps the process alive (see enqueue)
    thread_ = std::thread([this] { run(); });
  }

  ~CommunicationThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (Job* job : queue_) delete job;  // never started (the group was dropped without destroy())
    settle_.Release();
  }
  CommunicationThread(const CommunicationThread&) = delete;
  CommunicationThread& operator=(const CommunicationThread&) = delete;

  // On the JavaScript thread. Returns the job's promise.
  Napi::Promise enqueue(Napi::Env env, std::function<void(ProcessGroup&)> work, const std::vector<Napi::Value>& keep,
                        bool last) {
    auto* job = new Job{std::move(work), Napi::Promise::Deferred::New(env), {}, {}, last};
    for (const Napi::Value& value : keep) job->kept.push_back(Napi::Persistent(value.As<Napi::Object>()));
    if (pending_++ == 0) settle_.Ref(env);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(job);
    }
    wake_.notify_one();
    return job->deferred.Promise();
  }

 private:
  void run() {
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping
        job = queue_.front();
        queue_.pop_front();
      }
      try {
        job->work(*group_);
      } catch (const std::exception& error) {
        job->error = std::string("weightnorm.distributed: ") + error.what();
      }
      const bool last = job->last;
      settle_.BlockingCall(job, [this](Napi::Env env, Napi::Function, Job* done) { finish(env, done); });
      if (last) return;
    }
  }

  // On the JavaScript thread.
  void finish(Napi::Env env, Job* job) {
    if (job->error.empty()) {
      job->deferred.Resolve(env.Undefined());
    } else {
      job->deferred.Reject(Napi::Error::New(env, job->error).Value());
    }
    delete job;
    if (--pending_ == 0) settle_.Unref(env);
  }

  std::shared_ptr<ProcessGroup> group_;
  Napi::ThreadSafeFunction settle_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job*> queue_;
  bool stopping_ = false;
  int pending_ = 0;  // jobs queued and not yet settled; touched on the JavaScript thread only
};

class ProcessGroupWrap : public Napi::ObjectWrap<ProcessGroupWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ProcessGroup",
                       {InstanceMethod("allReduce", &ProcessGroupWrap::AllReduce),
                        InstanceMethod("broadcast", &ProcessGroupWrap::Broadcast),
                        InstanceMethod("allReduceDevice", &ProcessGroupWrap::AllReduceDevice),
                        InstanceMethod("broadcastDevice", &ProcessGroupWrap::BroadcastDevice),
                        InstanceAccessor("nccl", &ProcessGroupWrap::HasNccl, nullptr),
                        InstanceMethod("barrier", &ProcessGroupWrap::Barrier),
                        InstanceMethod("destroy", &ProcessGroupWrap::Destroy)});
  }

  explicit ProcessGroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupWrap>(info) {}
  void adopt(Napi::Env env, std::shared_ptr<ProcessGroup> group) {
    group_ = group;
    thread_ = std::make_unique<CommunicationThread>(env, std::move(group));
  }

 private:
  // Queues `job` on the communication thread; `keepAlive` stays referenced until it has run.
  Napi::Value Start(const Napi::CallbackInfo& info, const char* name, std::function<void(ProcessGroup&)> job,
                    std::vector<Napi::Value> keepAlive, bool last = false) {
    Napi::Env env = info.Env();
    if (!group_) throw Napi::Error::New(env, std::string(name) + ": the process group was destroyed");
    keepAlive.push_back(info.This());
    return thread_->enqueue(env, std::move(job), keepAlive, last);
  }

  static Napi::TypedArray typed_array(const Napi::CallbackInfo& info, const char* name) {
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
      throw Napi::TypeError::New(info.Env(), std::string(name) + ": data must be a typed array");
    }
    return info[0].As<Napi::TypedArray>();
  }

  // The reduction named by info[op_index] ('mean' only for float32).
  static ReduceOp reduce_op(const Napi::CallbackInfo& info, size_t op_index, ElementType type) {
    const std::string op_name = info[op_index].IsString() ? info[op_index].As<Napi::String>().Utf8Value() : "";
    ReduceOp op;
    if (op_name == "sum") {
      op = ReduceOp::kSum;
    } else if (op_name == "mean" && type == ElementType::kFloat32) {
      op = ReduceOp::kMean;
    } else if (op_name == "max") {
      op = ReduceOp::kMax;
    } else if (op_name == "min") {
      op = ReduceOp::kMin;
    } else {
      throw Napi::TypeError::New(info.Env(), "allReduce: op must be 'sum', 'mean' (float32 only), 'max' or 'min', got '" +
                                                 op_name + "'");
    }
    return op;
  }

  // A CUDA address, passed as a BigInt (ts/distributed.ts takes it from the core addon's cudaAddress()).
  static void* device_address(const Napi::CallbackInfo& info, const char* name) {
    if (info.Length() < 1 || !info[0].IsBigInt()) {
      throw Napi::TypeError::New(info.Env(), std::string(name) + ": address must be a BigInt");
    }
    bool lossless = false;
    const uint64_t address = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless || address == 0) throw Napi::RangeError::New(info.Env(), std::string(name) + ": not a device address");
    return reinterpret_cast<void*>(static_cast<uintptr_t>(address));
  }

  static size_t size_argument(const Napi::CallbackInfo& info, size_t index, const char* name) {
    if (!info[index].IsNumber() || info[index].As<Napi::Number>().DoubleValue() < 0) {
      throw Napi::TypeError::New(info.Env(), std::string(name) + ": the size must be a non-negative number");
    }
    return static_cast<size_t>(info[index].As<Napi::Number>().Int64Value());
  }

  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::TypedArray array = typed_array(info, "allReduce");
    ElementType type;
    if (array.TypedArrayType() == napi_float32_array) {
      type = ElementType::kFloat32;
    } else if (array.TypedArrayType() == napi_int32_array) {
      type = ElementType::kInt32;
    } else {
      throw Napi::TypeError::New(info.Env(), "allReduce: data must be a Float32Array or an Int32Array");
    }
    const ReduceOp op = reduce_op(info, 1, type);
    void* data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
    const size_t count = array.ElementLength();
    return Start(info, "allReduce", [=](ProcessGroup& group) { group.all_reduce(data, count, type, op); }, {array});
  }

  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::TypedArray array = typed_array(info, "broadcast");
    if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "broadcast: root must be a number");
    const int root = info[1].As<Napi::Number>().Int32Value();
    void* data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
    const size_t bytes = array.ByteLength();
    return Start(info, "broadcast", [=](ProcessGroup& group) { group.broadcast(data, bytes, root); }, {array});
  }

  // allReduceDevice(address, count, 'float32' | 'int32', op): NCCL on CUDA memory, on the worker thread.
  Napi::Value AllReduceDevice(const Napi::CallbackInfo& info) {
    void* data = device_address(info, "allReduceDevice");
    const size_t count = size_argument(info, 1, "allReduceDevice");
    const std::string type_name = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    if (type_name != "float32" && type_name != "int32") {
      throw Napi::TypeError::New(info.Env(), "allReduceDevice: dtype must be 'float32' or 'int32'");
    }
    const ElementType type = type_name == "float32" ? ElementType::kFloat32 : ElementType::kInt32;
    const ReduceOp op = reduce_op(info, 3, type);
    return Start(info, "allReduce", [=](ProcessGroup& group) { group.all_reduce_device(data, count, type, op); }, {});
  }

  // broadcastDevice(address, bytes, root)
  Napi::Value BroadcastDevice(const Napi::CallbackInfo& info) {
    void* data = device_address(info, "broadcastDevice");
    const size_t bytes = size_argument(info, 1, "broadcastDevice");
    if (!info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "broadcastDevice: root must be a number");
    const int root = info[2].As<Napi::Number>().Int32Value();
    return Start(info, "broadcast", [=](ProcessGroup& group) { group.broadcast_device(data, bytes, root); }, {});
  }

  Napi::Value HasNccl(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), group_ && group_->has_nccl());
  }

  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    return Start(info, "barrier", [](ProcessGroup& group) { group.barrier(); }, {});
  }

  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    // The last job: the thread stops after it, and later calls say the group was destroyed.
    Napi::Value promise = Start(info, "destroy", [](ProcessGroup& group) { group.destroy(); }, {}, true);
    group_.reset();
    return promise;
  }

  std::shared_ptr<ProcessGroup> group_;  // null once destroy() was called
  std::unique_ptr<CommunicationThread> thread_;
};

int32_t int_option(const Napi::Object& options, const char* key) {
  const Napi::Value value = options.Get(key);
  if (!value.IsNumber()) throw Napi::TypeError::New(options.Env(), std::string("createProcessGroup: options.") + key + " must be a number");
  return value.As<Napi::Number>().Int32Value();
}

// createProcessGroup({ rank, worldSize, masterAddr, masterPort, timeoutMs, localHost }) -> Promise<ProcessGroup>
Napi::Value CreateProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "createProcessGroup: options must be an object");
  const Napi::Object options = info[0].As<Napi::Object>();
  ProcessGroupOptions group_options;
  group_options.rank = int_option(options, "rank");
  group_options.world_size = int_option(options, "worldSize");
  group_options.master_port = int_option(options, "masterPort");
  group_options.timeout = std::chrono::milliseconds(int_option(options, "timeoutMs"));
  group_options.master_addr = options.Get("masterAddr").ToString().Utf8Value();
  if (options.Get("localHost").IsString()) group_options.local_host = options.Get("localHost").As<Napi::String>().Utf8Value();
  const std::string nccl = options.Get("nccl").IsString() ? options.Get("nccl").As<Napi::String>().Utf8Value() : "off";
  if (nccl == "auto") {
    group_options.nccl = NcclMode::kAuto;
  } else if (nccl == "required") {
    group_options.nccl = NcclMode::kRequired;
  } else if (nccl != "off") {
    throw Napi::TypeError::New(env, "createProcessGroup: options.nccl must be 'off', 'auto' or 'required'");
  }

  auto group = std::make_shared<std::shared_ptr<ProcessGroup>>();
  auto constructor = std::make_shared<Napi::FunctionReference>(Napi::Persistent(ProcessGroupWrap::Define(env)));
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new PromiseWorker(
      env, deferred, [group, group_options] { *group = std::make_shared<ProcessGroup>(group_options); },
      [group, constructor](Napi::Env env) {
        Napi::Object wrap = constructor->New({});
        ProcessGroupWrap::Unwrap(wrap)->adopt(env, *group);
        return wrap;
      });
  worker->Queue();
  return deferred.Promise();
}

// ncclStatus() -> { usable, reason }: whether libnccl.so.2 loads here and CUDA memory can go through it.
Napi::Value NcclStatus(const Napi::CallbackInfo& info) {
  std::string reason;
  const bool usable = distributed::nccl_usable(&reason);
  Napi::Object status = Napi::Object::New(info.Env());
  status.Set("usable", usable);
  status.Set("reason", usable ? info.Env().Null() : Napi::String::New(info.Env(), reason));
  return status;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("createProcessGroup", Napi::Function::New(env, CreateProcessGroup, "createProcessGroup"));
  exports.Set("ncclStatus", Napi::Function::New(env, NcclStatus, "ncclStatus"));
  exports.Set("backend", Napi::String::New(env, "gloo"));
  return exports;
}

}  // namespace
}  // namespace weightnorm::binding

static Napi::Object InitDistributed(Napi::Env env, Napi::Object exports) {
  return weightnorm::binding::Init(env, exports);
}
NODE_API_MODULE(weightnorm_distributed, InitDistributed)
