// gismo_plugin.hpp — the object-store plugin proposal's C++ interfaces
// (ObjectStoreClientInterface, ObjectStoreRunnerInterface) over the C ABI of gismo_plugin.h.
//
// AbiClient and AbiRunner wrap a handle + table returned by a plugin's CreateClient /
// CreateRunner (found with dlsym by the host) and own the handle: the destructor calls destroy.
// Errors are reported as Status {code, message} with Ray's codes.
#ifndef GISMO_PLUGIN_HPP
#define GISMO_PLUGIN_HPP

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gismo_plugin.h"

namespace gismo {

using ObjectID = std::array<uint8_t, GISMO_ID_LEN>;

struct Status {
  GismoStatus code = GISMO_STATUS_OK;
  std::string message;
  bool ok() const { return code == GISMO_STATUS_OK; }
};

// One get() result; valid until Release(id).
struct ObjectBuffer {
  const uint8_t *data = nullptr;
  uint64_t data_size = 0;
  const uint8_t *metadata = nullptr;
  uint64_t metadata_size = 0;
  bool present() const { return data != nullptr || metadata != nullptr; }
};

class ObjectStoreClientInterface {
 public:
  virtual ~ObjectStoreClientInterface() = default;
  virtual Status CreateAndSpillIfNeeded(const ObjectID &id, const GismoOwner &owner,
                                        bool is_mutable, uint64_t data_size,
                                        const uint8_t *metadata, uint64_t metadata_size,
                                        uint8_t **data, uint8_t source) = 0;
  virtual Status TryCreateImmediately(const ObjectID &id, const GismoOwner &owner,
                                      uint64_t data_size, const uint8_t *metadata,
                                      uint64_t metadata_size, uint8_t **data,
                                      uint8_t source) = 0;
  virtual Status Seal(const ObjectID &id) = 0;
  virtual Status Abort(const ObjectID &id) = 0;
  virtual Status Get(const std::vector<ObjectID> &ids, int64_t timeout_ms,
                     std::vector<ObjectBuffer> *buffers) = 0;
  virtual Status Release(const ObjectID &id) = 0;
  virtual Status Contains(const ObjectID &id, bool *has_object) = 0;
  virtual Status Delete(const std::vector<ObjectID> &ids) = 0;
  virtual Status Disconnect() = 0;
  virtual std::string GetMemoryUsage() = 0;
  // The proposal's MemoryCopy: copies into an object so that other hosts see it.
  virtual void MemoryCopy(void *dest, const void *src, size_t len) = 0;
  // Whether every node sees every object (no raylet-to-raylet pull).
  virtual bool IsGlobal() = 0;
};

class ObjectStoreRunnerInterface {
 public:
  using SpillObjectsCallback = std::function<bool()>;
  using ObjectStoreFullCallback = std::function<void()>;
  using AddObjectCallback = std::function<void(const GismoObjectInfo &)>;
  using DeleteObjectCallback = std::function<void(const ObjectID &)>;

  virtual ~ObjectStoreRunnerInterface() = default;
  virtual Status Start(const std::map<std::string, std::string> &params,
                       SpillObjectsCallback spill_objects_callback,
                       ObjectStoreFullCallback object_store_full_callback,
                       AddObjectCallback add_object_callback,
                       DeleteObjectCallback delete_object_callback) = 0;
  virtual void Stop() = 0;
  virtual bool IsObjectSpillable(const ObjectID &id) = 0;
  virtual int64_t GetConsumedBytes() = 0;
  virtual int64_t GetFallbackAllocated() const = 0;
  virtual int64_t GetAvailableMemory() const = 0;
  virtual int64_t GetTotalMemorySize() const = 0;
  virtual int64_t GetMaxMemorySize() const = 0;
};

namespace detail {
inline Status ToStatus(GismoStatus code, const GismoError &err) {
  Status s;
  s.code = code;
  if (code != GISMO_STATUS_OK) s.message = err.message;
  return s;
}
}  // namespace detail

// Checks a table returned by a factory: the version this header speaks, a large enough table.
template <typename Table>
inline Status CheckTable(const Table *api) {
  Status s;
  if (api == nullptr) {
    s.code = GISMO_STATUS_INVALID;
    s.message = "no function table";
  } else if (api->abi_version != GISMO_PLUGIN_ABI_VERSION) {
    s.code = GISMO_STATUS_INVALID;
    s.message = "plugin ABI version " + std::to_string(api->abi_version) + ", host speaks " +
                std::to_string(GISMO_PLUGIN_ABI_VERSION);
  } else if (api->struct_size < sizeof(Table)) {
    s.code = GISMO_STATUS_INVALID;
    s.message = "plugin function table too small: " + std::to_string(api->struct_size);
  }
  return s;
}

class AbiClient final : public ObjectStoreClientInterface {
 public:
  AbiClient(GismoClientHandle *h, const GismoClientApi *api) : h_(h), api_(api) {}
  ~AbiClient() override { api_->destroy(h_); }
  AbiClient(const AbiClient &) = delete;
  AbiClient &operator=(const AbiClient &) = delete;

  Status CreateAndSpillIfNeeded(const ObjectID &id, const GismoOwner &owner, bool is_mutable,
                                uint64_t data_size, const uint8_t *metadata,
                                uint64_t metadata_size, uint8_t **data,
                                uint8_t source) override {
    GismoError e{};
    return detail::ToStatus(api_->create(h_, id.data(), &owner, is_mutable ? 1 : 0, data_size,
                                         metadata, metadata_size, source, data, &e),
                            e);
  }
  Status TryCreateImmediately(const ObjectID &id, const GismoOwner &owner, uint64_t data_size,
                              const uint8_t *metadata, uint64_t metadata_size, uint8_t **data,
                              uint8_t source) override {
    GismoError e{};
    return detail::ToStatus(api_->try_create_immediately(h_, id.data(), &owner, data_size,
                                                         metadata, metadata_size, source, data,
                                                         &e),
                            e);
  }
  Status Seal(const ObjectID &id) override {
    GismoError e{};
    return detail::ToStatus(api_->seal(h_, id.data(), &e), e);
  }
  Status Abort(const ObjectID &id) override {
    GismoError e{};
    return detail::ToStatus(api_->abort(h_, id.data(), &e), e);
  }
  Status Get(const std::vector<ObjectID> &ids, int64_t timeout_ms,
             std::vector<ObjectBuffer> *buffers) override {
    std::vector<uint8_t> flat;
    flat.reserve(ids.size() * GISMO_ID_LEN);
    for (const auto &id : ids) flat.insert(flat.end(), id.begin(), id.end());
    std::vector<GismoObjectBuffer> out(ids.size());
    GismoError e{};
    Status s = detail::ToStatus(
        api_->get(h_, flat.data(), ids.size(), timeout_ms, out.data(), &e), e);
    buffers->clear();
    if (!s.ok()) return s;
    for (const auto &b : out) {
      buffers->push_back(ObjectBuffer{b.data, b.data_len, b.metadata, b.metadata_len});
    }
    return s;
  }
  Status Release(const ObjectID &id) override {
    GismoError e{};
    return detail::ToStatus(api_->release(h_, id.data(), &e), e);
  }
  Status Contains(const ObjectID &id, bool *has_object) override {
    GismoError e{};
    uint8_t found = 0;
    Status s = detail::ToStatus(api_->contains(h_, id.data(), &found, &e), e);
    *has_object = found != 0;
    return s;
  }
  Status Delete(const std::vector<ObjectID> &ids) override {
    std::vector<uint8_t> flat;
    for (const auto &id : ids) flat.insert(flat.end(), id.begin(), id.end());
    GismoError e{};
    return detail::ToStatus(api_->delete_objects(h_, flat.data(), ids.size(), &e), e);
  }
  Status Disconnect() override {
    GismoError e{};
    return detail::ToStatus(api_->disconnect(h_, &e), e);
  }
  std::string GetMemoryUsage() override {
    char *s = nullptr;
    GismoError e{};
    if (api_->get_memory_usage(h_, &s, &e) != GISMO_STATUS_OK || s == nullptr) return "";
    std::string out(s);
    api_->free_string(s);
    return out;
  }
  void MemoryCopy(void *dest, const void *src, size_t len) override {
    api_->memory_copy(h_, dest, src, len);
  }
  bool IsGlobal() override { return api_->is_global(h_) != 0; }

 private:
  GismoClientHandle *h_;
  const GismoClientApi *api_;
};

class AbiRunner final : public ObjectStoreRunnerInterface {
 public:
  AbiRunner(GismoRunnerHandle *h, const GismoRunnerApi *api) : h_(h), api_(api) {}
  ~AbiRunner() override {
    api_->destroy(h_);  // stops first; the callbacks below outlive it
  }
  AbiRunner(const AbiRunner &) = delete;
  AbiRunner &operator=(const AbiRunner &) = delete;

  Status Start(const std::map<std::string, std::string> &params, SpillObjectsCallback spill,
               ObjectStoreFullCallback full, AddObjectCallback add,
               DeleteObjectCallback del) override {
    // Kept only if the start succeeds: a refused second start leaves the running callbacks.
    std::unique_ptr<Callbacks> cb(
        new Callbacks{std::move(spill), std::move(full), std::move(add), std::move(del)});
    std::vector<const char *> keys, values;
    for (const auto &kv : params) {
      keys.push_back(kv.first.c_str());
      values.push_back(kv.second.c_str());
    }
    GismoRunnerCallbacks c{};
    c.user_data = cb.get();
    c.spill_objects = [](void *u) -> uint8_t {
      auto *cb = static_cast<Callbacks *>(u);
      return cb->spill && cb->spill() ? 1 : 0;
    };
    c.object_store_full = [](void *u) {
      auto *cb = static_cast<Callbacks *>(u);
      if (cb->full) cb->full();
    };
    c.add_object = [](void *u, const GismoObjectInfo *info) {
      auto *cb = static_cast<Callbacks *>(u);
      if (cb->add) cb->add(*info);
    };
    c.delete_object = [](void *u, const uint8_t *id) {
      auto *cb = static_cast<Callbacks *>(u);
      ObjectID oid;
      for (size_t i = 0; i < oid.size(); i++) oid[i] = id[i];
      if (cb->del) cb->del(oid);
    };
    GismoError e{};
    Status s = detail::ToStatus(
        api_->start(h_, keys.data(), values.data(), keys.size(), &c, &e), e);
    if (s.ok()) {
      cb_ = std::move(cb);
    }
    return s;
  }
  void Stop() override { api_->stop(h_); }
  bool IsObjectSpillable(const ObjectID &id) override {
    return api_->is_object_spillable(h_, id.data()) != 0;
  }
  int64_t GetConsumedBytes() override { return api_->consumed_bytes(h_); }
  int64_t GetFallbackAllocated() const override { return api_->fallback_allocated(h_); }
  int64_t GetAvailableMemory() const override { return api_->available_memory(h_); }
  int64_t GetTotalMemorySize() const override { return api_->total_memory_size(h_); }
  int64_t GetMaxMemorySize() const override { return api_->max_memory_size(h_); }

 private:
  struct Callbacks {
    SpillObjectsCallback spill;
    ObjectStoreFullCallback full;
    AddObjectCallback add;
    DeleteObjectCallback del;
  };
  GismoRunnerHandle *h_;
  const GismoRunnerApi *api_;
  std::unique_ptr<Callbacks> cb_;
};

}  // namespace gismo

#endif  // GISMO_PLUGIN_HPP
