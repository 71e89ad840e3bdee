// A stand-in for a raylet using an object-store plugin through include/gismo_plugin.hpp: reads
// RAY_object_store_plugin_{name,path,config}, dlopens the plugin, starts its runner with four
// callbacks and makes a client. Then, by the first argument:
//   put <hex id> <text>   creates and seals an object, waits for add_object, prints "added"
//   get <hex id>          waits (5 s) for the object and prints "got <text> global=<0|1>"
// The config string here is parsed only for the simple case (no escapes): k=v,k=v.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "gismo_plugin.hpp"

static std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v != nullptr ? v : "";
}

static gismo::ObjectID parse_id(const std::string &hex) {
  gismo::ObjectID id{};
  for (size_t i = 0; i < id.size() && 2 * i + 1 < hex.size(); i++) {
    id[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return id;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: raylet_harness put|get <hex id> [text]\n");
    return 2;
  }
  std::string mode = argv[1];
  gismo::ObjectID id = parse_id(argv[2]);
  std::string path = env("RAY_object_store_plugin_path");
  std::map<std::string, std::string> config;
  std::string cfg = env("RAY_object_store_plugin_config");
  size_t pos = 0;
  while (pos < cfg.size()) {
    size_t comma = cfg.find(',', pos);
    std::string pair = cfg.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t eq = pair.find('=');
    if (eq != std::string::npos) config[pair.substr(0, eq)] = pair.substr(eq + 1);
    pos = comma == std::string::npos ? cfg.size() : comma + 1;
  }
  std::vector<const char *> keys, values;
  for (const auto &kv : config) {
    keys.push_back(kv.first.c_str());
    values.push_back(kv.second.c_str());
  }

  void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "dlopen %s: %s\n", path.c_str(), dlerror());
    return 1;
  }
  auto create_runner = reinterpret_cast<GismoCreateRunnerFn>(dlsym(lib, "CreateRunner"));
  auto create_client = reinterpret_cast<GismoCreateClientFn>(dlsym(lib, "CreateClient"));
  if (create_runner == nullptr || create_client == nullptr) {
    std::fprintf(stderr, "%s: missing CreateRunner/CreateClient\n", path.c_str());
    return 1;
  }
  GismoError err{};
  const GismoRunnerApi *rapi = nullptr;
  GismoRunnerHandle *rh = create_runner(keys.data(), values.data(), keys.size(), &rapi, &err);
  gismo::Status s = gismo::CheckTable(rapi);
  if (rh == nullptr || !s.ok()) {
    std::fprintf(stderr, "CreateRunner: %s %s\n", err.message, s.message.c_str());
    return 1;
  }
  gismo::AbiRunner runner(rh, rapi);
  std::atomic<bool> added{false};
  s = runner.Start(
      {}, [] { return false; }, [] {},
      [&](const GismoObjectInfo &info) {
        if (std::memcmp(info.object_id, id.data(), id.size()) == 0) added = true;
      },
      [](const gismo::ObjectID &) {});
  if (!s.ok()) {
    std::fprintf(stderr, "Start: %s\n", s.message.c_str());
    return 1;
  }
  const GismoClientApi *capi = nullptr;
  GismoClientHandle *ch = create_client(keys.data(), values.data(), keys.size(), &capi, &err);
  s = gismo::CheckTable(capi);
  if (ch == nullptr || !s.ok()) {
    std::fprintf(stderr, "CreateClient: %s %s\n", err.message, s.message.c_str());
    return 1;
  }
  gismo::AbiClient client(ch, capi);

  if (mode == "put") {
    std::string text = argc > 3 ? argv[3] : "";
    GismoOwner owner{};
    owner.ip = "127.0.0.1";
    uint8_t *data = nullptr;
    s = client.CreateAndSpillIfNeeded(id, owner, false, text.size(), nullptr, 0, &data,
                                      GISMO_SOURCE_CREATED_BY_WORKER);
    if (!s.ok()) {
      std::fprintf(stderr, "Create: %s\n", s.message.c_str());
      return 1;
    }
    client.MemoryCopy(data, text.data(), text.size());
    s = client.Seal(id);
    if (!s.ok()) return 1;
    client.Release(id);
    for (int i = 0; i < 5000 && !added; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::printf(added ? "added\n" : "no add_object callback\n");
    return added ? 0 : 1;
  }
  std::vector<gismo::ObjectBuffer> got;
  s = client.Get({id}, 5000, &got);
  if (!s.ok() || got.empty() || !got[0].present()) {
    std::fprintf(stderr, "Get: not found %s\n", s.message.c_str());
    return 1;
  }
  std::printf("got %.*s global=%d\n", static_cast<int>(got[0].data_size),
              reinterpret_cast<const char *>(got[0].data), client.IsGlobal() ? 1 : 0);
  client.Release(id);
  return 0;
}
