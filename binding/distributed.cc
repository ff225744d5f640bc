// The distributed module (build/Release/weightnorm_distributed.node), separate from the core addon so that the core
// never needs Gloo's shared libraries: ts/distributed.ts loads it on first use. N-API only; the collectives are in
// distributed/collectives.cc. Every call that communicates runs on a libuv worker thread and returns a Promise;
// ts/distributed.ts issues them one at a time (and the group re-checks), because every rank must run the same
// collectives in the same order.
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "../distributed/collectives.h"
#include "../distributed/nccl.h"

namespace weightnorm::binding {
namespace {

using distributed::ElementType;
using distributed::NcclMode;
using distributed::ProcessGroup;
using distributed::ProcessGroupOptions;
using distributed::ReduceOp;

// Runs `job` off the JavaScript thread and settles `deferred` with `result` (or the job's error). `keepAlive` holds
// the JS objects (typed arrays, the group) that the job touches until it is done.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, Napi::Promise::Deferred deferred, std::function<void()> job,
                std::function<Napi::Value(Napi::Env)> result, std::vector<Napi::Value> keepAlive)
      : Napi::AsyncWorker(env, "weightnorm.distributed"),
        deferred_(deferred),
        job_(std::move(job)),
        result_(std::move(result)) {
    for (const Napi::Value& value : keepAlive) kept_.push_back(Napi::Persistent(value.As<Napi::Object>()));
  }

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
  std::vector<Napi::ObjectReference> kept_;
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
  void adopt(std::shared_ptr<ProcessGroup> group) { group_ = std::move(group); }

 private:
  // One call in flight per group; the TS layer queues, this guards the raw binding.
  Napi::Value Start(const Napi::CallbackInfo& info, const char* name, std::function<void(ProcessGroup&)> job,
                    std::vector<Napi::Value> keepAlive) {
    Napi::Env env = info.Env();
    if (!group_) throw Napi::Error::New(env, std::string(name) + ": the process group was destroyed");
    bool expected = false;
    if (!busy_->compare_exchange_strong(expected, true)) {
      throw Napi::Error::New(env, std::string(name) + ": another collective of this process group is still running; "
                                                      "await it first (every rank must issue them in the same order)");
    }
    keepAlive.push_back(info.This());
    auto deferred = Napi::Promise::Deferred::New(env);
    std::shared_ptr<ProcessGroup> group = group_;
    std::shared_ptr<std::atomic<bool>> busy = busy_;
    auto* worker = new PromiseWorker(
        env, deferred,
        [group, busy, job = std::move(job)] {
          struct Release {
            std::atomic<bool>& flag;
            ~Release() { flag = false; }
          } release{*busy};
          job(*group);
        },
        nullptr, std::move(keepAlive));
    worker->Queue();
    return deferred.Promise();
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
    Napi::Value promise = Start(info, "destroy", [](ProcessGroup& group) { group.destroy(); }, {});
    group_.reset();  // the worker holds the last reference; the group is freed when it finishes
    return promise;
  }

  std::shared_ptr<ProcessGroup> group_;
  std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
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
      [group, constructor](Napi::Env) {
        Napi::Object wrap = constructor->New({});
        ProcessGroupWrap::Unwrap(wrap)->adopt(*group);
        return wrap;
      },
      {});
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
