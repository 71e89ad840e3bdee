/*
 * gismo_plugin.h — the stable C ABI between a raylet (or any host) and an object-store plugin.
 *
 * A plugin is a shared library exporting CreateClient and CreateRunner. Each returns an opaque
 * handle (NULL on failure, with *err filled) and points *api at a static, versioned table of
 * functions taking that handle. A host must check api->abi_version == GISMO_PLUGIN_ABI_VERSION
 * and api->struct_size >= sizeof(the table it knows) before calling anything else in it.
 *
 * Ownership:
 *  - Everything passed to the plugin is borrowed for the call only, except the runner
 *    callbacks and their user_data, which must stay valid until stop() (or destroy()) returns.
 *  - A successful create() or try_create_immediately() gives the caller one reference and a
 *    writable payload of data_size bytes; a present get() entry gives one reference and readable
 *    data + metadata. The memory stays valid until the matching release() (or disconnect() /
 *    destroy(), which drop every reference the handle holds).
 *  - get_memory_usage() returns a string the caller frees with the same table's free_string().
 *  - destroy() frees a handle; nothing of it may be used afterwards.
 *
 * Status codes are Ray's (GISMO_STATUS_*). Ids are 28 bytes; arrays of ids are consecutive.
 * Every function may be called from any thread. See docs/plugin-abi.md for the full contract.
 */
#ifndef GISMO_PLUGIN_H
#define GISMO_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GISMO_PLUGIN_ABI_VERSION 2u
#define GISMO_ID_LEN 28
#define GISMO_ERROR_MESSAGE_LEN 256

/* Ray's StatusCode numbering. */
#define GISMO_STATUS_OK 0
#define GISMO_STATUS_OUT_OF_MEMORY 1
#define GISMO_STATUS_KEY_ERROR 2
#define GISMO_STATUS_TYPE_ERROR 3
#define GISMO_STATUS_INVALID 4
#define GISMO_STATUS_IO_ERROR 5
#define GISMO_STATUS_UNKNOWN_ERROR 9
#define GISMO_STATUS_NOT_IMPLEMENTED 10
#define GISMO_STATUS_OBJECT_EXISTS 21
#define GISMO_STATUS_OBJECT_NOT_FOUND 22
#define GISMO_STATUS_OBJECT_ALREADY_SEALED 23
#define GISMO_STATUS_OBJECT_STORE_FULL 24
#define GISMO_STATUS_TRANSIENT_OBJECT_STORE_FULL 25
#define GISMO_STATUS_TIMED_OUT 12
#define GISMO_STATUS_OUT_OF_DISK 28

/* Ray's ObjectSource. */
#define GISMO_SOURCE_CREATED_BY_WORKER 0
#define GISMO_SOURCE_RESTORED_FROM_STORAGE 1
#define GISMO_SOURCE_RECEIVED_FROM_REMOTE_RAYLET 2
#define GISMO_SOURCE_ERROR_STORED_BY_RAYLET 3

typedef int32_t GismoStatus;
typedef struct GismoClientHandle GismoClientHandle;
typedef struct GismoRunnerHandle GismoRunnerHandle;

/* A message the plugin writes on failure: NUL-terminated, truncated to fit. */
typedef struct GismoError {
  char message[GISMO_ERROR_MESSAGE_LEN];
} GismoError;

typedef struct GismoOwner {
  uint8_t raylet_id[GISMO_ID_LEN];
  const char *ip; /* NUL-terminated, or NULL for "" */
  int32_t port;
  uint8_t worker_id[GISMO_ID_LEN];
} GismoOwner;

/* One get() result; data == NULL for a missing object (no reference taken). */
typedef struct GismoObjectBuffer {
  const uint8_t *data;
  uint64_t data_len;
  const uint8_t *metadata;
  uint64_t metadata_len;
} GismoObjectBuffer;

/* Ray's ObjectInfo; valid during the add_object call. */
typedef struct GismoObjectInfo {
  uint8_t object_id[GISMO_ID_LEN];
  uint8_t is_mutable;
  int64_t data_size;
  int64_t metadata_size;
  uint8_t owner_raylet_id[GISMO_ID_LEN];
  const char *owner_ip_address;
  int32_t owner_port;
  uint8_t owner_worker_id[GISMO_ID_LEN];
} GismoObjectInfo;

/* The raylet's four callbacks, each given user_data; any may be NULL. */
typedef struct GismoRunnerCallbacks {
  void *user_data;
  uint8_t (*spill_objects)(void *user_data); /* nonzero: spilling in progress */
  void (*object_store_full)(void *user_data);
  void (*add_object)(void *user_data, const GismoObjectInfo *info);
  void (*delete_object)(void *user_data, const uint8_t *id);
} GismoRunnerCallbacks;

/* Version 1 client table. Every function pointer is non-NULL. */
typedef struct GismoClientApi {
  uint32_t abi_version; /* GISMO_PLUGIN_ABI_VERSION */
  uint32_t struct_size; /* sizeof(GismoClientApi) as the plugin was built */
  GismoStatus (*create)(GismoClientHandle *h, const uint8_t *id, const GismoOwner *owner,
                        uint8_t is_mutable, uint64_t data_size, const uint8_t *metadata,
                        uint64_t metadata_len, uint8_t source, uint8_t **data, GismoError *err);
  GismoStatus (*try_create_immediately)(GismoClientHandle *h, const uint8_t *id,
                                        const GismoOwner *owner, uint64_t data_size,
                                        const uint8_t *metadata, uint64_t metadata_len,
                                        uint8_t source, uint8_t **data, GismoError *err);
  GismoStatus (*seal)(GismoClientHandle *h, const uint8_t *id, GismoError *err);
  GismoStatus (*abort)(GismoClientHandle *h, const uint8_t *id, GismoError *err);
  GismoStatus (*get)(GismoClientHandle *h, const uint8_t *ids, uint64_t n, int64_t timeout_ms,
                     GismoObjectBuffer *out, GismoError *err);
  GismoStatus (*release)(GismoClientHandle *h, const uint8_t *id, GismoError *err);
  GismoStatus (*contains)(GismoClientHandle *h, const uint8_t *id, uint8_t *out, GismoError *err);
  GismoStatus (*delete_objects)(GismoClientHandle *h, const uint8_t *ids, uint64_t n,
                                GismoError *err);
  GismoStatus (*disconnect)(GismoClientHandle *h, GismoError *err);
  GismoStatus (*get_memory_usage)(GismoClientHandle *h, char **out, GismoError *err);
  void (*free_string)(char *s);
  void (*memory_copy)(GismoClientHandle *h, void *dst, const void *src, uint64_t len);
  uint8_t (*is_global)(GismoClientHandle *h);
  void (*destroy)(GismoClientHandle *h);
} GismoClientApi;

/* Version 1 runner table. Every function pointer is non-NULL. */
typedef struct GismoRunnerApi {
  uint32_t abi_version;
  uint32_t struct_size;
  GismoStatus (*start)(GismoRunnerHandle *h, const char *const *keys, const char *const *values,
                       uint64_t n, const GismoRunnerCallbacks *callbacks, GismoError *err);
  void (*stop)(GismoRunnerHandle *h);
  uint8_t (*is_object_spillable)(GismoRunnerHandle *h, const uint8_t *id);
  int64_t (*consumed_bytes)(GismoRunnerHandle *h);
  int64_t (*fallback_allocated)(GismoRunnerHandle *h);
  int64_t (*available_memory)(GismoRunnerHandle *h);
  int64_t (*total_memory_size)(GismoRunnerHandle *h);
  int64_t (*max_memory_size)(GismoRunnerHandle *h);
  void (*destroy)(GismoRunnerHandle *h);
} GismoRunnerApi;

/* The two exported entry points. keys/values: n NUL-terminated strings each (the plugin's
 * configuration). On success: a handle, *api set. On failure: NULL, *err filled (err may be
 * NULL). */
typedef GismoClientHandle *(*GismoCreateClientFn)(const char *const *keys,
                                                  const char *const *values, uint64_t n,
                                                  const GismoClientApi **api, GismoError *err);
typedef GismoRunnerHandle *(*GismoCreateRunnerFn)(const char *const *keys,
                                                  const char *const *values, uint64_t n,
                                                  const GismoRunnerApi **api, GismoError *err);

GismoClientHandle *CreateClient(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoClientApi **api, GismoError *err);
GismoRunnerHandle *CreateRunner(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoRunnerApi **api, GismoError *err);

#ifdef __cplusplus
}
#endif

#endif /* GISMO_PLUGIN_H */
