// Compiled by plugins/builtins/tests/plugin_headers.rs: the C++ header compiles warning-free and
// its classes are complete (instantiable over a table).
#include "gismo_plugin.hpp"

int main() {
  const GismoClientApi *capi = nullptr;
  const GismoRunnerApi *rapi = nullptr;
  gismo::Status s = gismo::CheckTable(capi);
  gismo::Status r = gismo::CheckTable(rapi);
  std::unique_ptr<gismo::ObjectStoreClientInterface> c;
  std::unique_ptr<gismo::ObjectStoreRunnerInterface> run;
  if (capi != nullptr) c.reset(new gismo::AbiClient(nullptr, capi));
  if (rapi != nullptr) run.reset(new gismo::AbiRunner(nullptr, rapi));
  return (s.ok() || r.ok()) ? 1 : 0;
}
