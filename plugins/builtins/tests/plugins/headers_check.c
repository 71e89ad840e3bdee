/* Compiled by plugins/builtins/tests/plugin_headers.rs: the C header compiles warning-free as C11. */
#include "gismo_plugin.h"

int main(void) {
  GismoClientApi c;
  GismoRunnerApi r;
  c.struct_size = (uint32_t)sizeof c;
  r.struct_size = (uint32_t)sizeof r;
  return (int)(c.struct_size == 120u && r.struct_size == 80u) ? 0 : 1;
}
