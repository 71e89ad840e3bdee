/* Deliberately broken plugins for plugins/builtins/tests/plugin_errors.rs, one per macro:
 *   NO_SYMBOLS    exports neither entry point
 *   NULL_FACTORY  both factories return NULL without a message
 *   BAD_VERSION   tables claim ABI version 99
 *   SMALL_TABLE   tables claim to be 8 bytes
 *   NULL_FUNCTIONS right version and size, every function NULL
 */
#include "gismo_plugin.h"

#ifndef NO_SYMBOLS

#ifndef NULL_FACTORY
static int dummy_handle;
#endif

#if defined(BAD_VERSION)
#define VERSION 99u
#else
#define VERSION GISMO_PLUGIN_ABI_VERSION
#endif

#if defined(SMALL_TABLE)
#define CLIENT_SIZE 8u
#define RUNNER_SIZE 8u
#else
#define CLIENT_SIZE ((uint32_t)sizeof(GismoClientApi))
#define RUNNER_SIZE ((uint32_t)sizeof(GismoRunnerApi))
#endif

static const GismoClientApi client_api = {VERSION, CLIENT_SIZE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const GismoRunnerApi runner_api = {VERSION, RUNNER_SIZE, 0, 0, 0, 0, 0, 0, 0, 0, 0};

GismoClientHandle *CreateClient(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoClientApi **api, GismoError *err) {
  (void)keys; (void)values; (void)n; (void)err;
  *api = &client_api;
#ifdef NULL_FACTORY
  return NULL;
#else
  return (GismoClientHandle *)&dummy_handle;
#endif
}

GismoRunnerHandle *CreateRunner(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoRunnerApi **api, GismoError *err) {
  (void)keys; (void)values; (void)n; (void)err;
  *api = &runner_api;
#ifdef NULL_FACTORY
  return NULL;
#else
  return (GismoRunnerHandle *)&dummy_handle;
#endif
}

#else
int gismo_bad_plugin_nothing_here(void);
int gismo_bad_plugin_nothing_here(void) { return 0; }
#endif
