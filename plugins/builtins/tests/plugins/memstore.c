/* memstore: a small in-memory object store implementing the plugin ABI (gismo_plugin.h) in C,
 * for plugins/builtins/tests/plugin_load.rs. Objects are heap copies (data then metadata in one
 * allocation), so is_global() is 0. Config keys: store (stores are shared by name within the
 * process) and capacity (bytes). One mutex per store; the runner thread delivers callbacks outside
 * it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gismo_plugin.h"

typedef struct Object {
  uint8_t id[GISMO_ID_LEN];
  uint8_t *bytes;
  uint64_t data_size, metadata_size;
  int sealed, delete_pending, is_mutable;
  int64_t refcount;
  uint64_t lru;
  void *creator;
  uint8_t owner_raylet[GISMO_ID_LEN], owner_worker[GISMO_ID_LEN];
  char owner_ip[64];
  int32_t owner_port;
  struct Object *next;
} Object;

typedef struct Event {
  int is_add;
  GismoObjectInfo info;
  char ip[64];
  struct Event *next;
} Event;

typedef struct Store {
  char name[64];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Object *objects;
  uint64_t capacity, used, consumed, tick, full_events;
  int runner_active;
  Event *events_head, *events_tail;
  struct Store *next;
} Store;

typedef struct Held {
  uint8_t id[GISMO_ID_LEN];
  struct Held *next;
} Held;

typedef struct Client {
  Store *store;
  Held *held;
} Client;

typedef struct Runner {
  Store *store;
  pthread_t thread;
  int running, stop;
  double threshold;
  GismoRunnerCallbacks cb;
} Runner;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static Store *registry;

static void set_err(GismoError *err, const char *msg) {
  if (err != NULL) snprintf(err->message, sizeof err->message, "memstore: %s", msg);
}

static int parse_config(const char *const *keys, const char *const *values, uint64_t n,
                        const char **name, uint64_t *capacity, GismoError *err) {
  *name = "default";
  *capacity = 64u << 20;
  for (uint64_t i = 0; i < n; i++) {
    if (strcmp(keys[i], "store") == 0) {
      *name = values[i];
    } else if (strcmp(keys[i], "capacity") == 0) {
      *capacity = strtoull(values[i], NULL, 10);
    } else {
      char m[200];
      snprintf(m, sizeof m, "unknown key \"%s\" (known: store,capacity)", keys[i]);
      set_err(err, m);
      return 0;
    }
  }
  return 1;
}

static Store *store_named(const char *name, uint64_t capacity) {
  pthread_mutex_lock(&registry_mu);
  Store *s = registry;
  while (s != NULL && strcmp(s->name, name) != 0) s = s->next;
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s != NULL) {
      snprintf(s->name, sizeof s->name, "%s", name);
      pthread_mutex_init(&s->mu, NULL);
      pthread_cond_init(&s->cv, NULL);
      s->capacity = capacity;
      s->next = registry;
      registry = s;
    }
  }
  pthread_mutex_unlock(&registry_mu);
  return s;
}

static Object *find(Store *s, const uint8_t *id) {
  for (Object *o = s->objects; o != NULL; o = o->next)
    if (memcmp(o->id, id, GISMO_ID_LEN) == 0) return o;
  return NULL;
}

/* Called with the lock held. */
static void push_event(Store *s, const Object *o, int is_add) {
  if (!s->runner_active) return;
  Event *e = calloc(1, sizeof *e);
  if (e == NULL) return;
  e->is_add = is_add;
  memcpy(e->info.object_id, o->id, GISMO_ID_LEN);
  e->info.is_mutable = (uint8_t)o->is_mutable;
  e->info.data_size = (int64_t)o->data_size;
  e->info.metadata_size = (int64_t)o->metadata_size;
  memcpy(e->info.owner_raylet_id, o->owner_raylet, GISMO_ID_LEN);
  memcpy(e->info.owner_worker_id, o->owner_worker, GISMO_ID_LEN);
  memcpy(e->ip, o->owner_ip, sizeof e->ip);
  e->info.owner_port = o->owner_port;
  if (s->events_tail != NULL) s->events_tail->next = e; else s->events_head = e;
  s->events_tail = e;
}

/* Unlinks and frees `o`; reports a delete when it was sealed. Lock held. */
static void remove_object(Store *s, Object *o) {
  Object **p = &s->objects;
  while (*p != o) p = &(*p)->next;
  *p = o->next;
  s->used -= o->data_size + o->metadata_size;
  if (o->sealed) push_event(s, o, 0);
  free(o->bytes);
  free(o);
}

static void drop_ref(Store *s, Object *o) {
  if (--o->refcount == 0 && o->sealed && o->delete_pending) remove_object(s, o);
}

static void hold(Client *c, const uint8_t *id) {
  Held *h = malloc(sizeof *h);
  if (h == NULL) abort();
  memcpy(h->id, id, GISMO_ID_LEN);
  h->next = c->held;
  c->held = h;
}

/* Removes one held entry for `id`; 1 if there was one. */
static int unhold(Client *c, const uint8_t *id) {
  for (Held **p = &c->held; *p != NULL; p = &(*p)->next) {
    if (memcmp((*p)->id, id, GISMO_ID_LEN) == 0) {
      Held *h = *p;
      *p = h->next;
      free(h);
      return 1;
    }
  }
  return 0;
}

static GismoStatus create_common(GismoClientHandle *h, const uint8_t *id, const GismoOwner *owner,
                                 int is_mutable, uint64_t data_size, const uint8_t *metadata,
                                 uint64_t metadata_len, int evict, uint8_t **data,
                                 GismoError *err) {
  Client *c = (Client *)h;
  Store *s = c->store;
  uint64_t need = data_size + metadata_len;
  pthread_mutex_lock(&s->mu);
  if (find(s, id) != NULL) {
    pthread_mutex_unlock(&s->mu);
    set_err(err, "object exists");
    return GISMO_STATUS_OBJECT_EXISTS;
  }
  if (s->used + need > s->capacity) {
    uint64_t evictable = 0;
    for (Object *o = s->objects; o != NULL; o = o->next)
      if (o->sealed && o->refcount == 0) evictable += o->data_size + o->metadata_size;
    if (!evict || s->used - evictable + need > s->capacity) {
      if (evict) s->full_events++;
      pthread_mutex_unlock(&s->mu);
      set_err(err, "store full");
      return GISMO_STATUS_OBJECT_STORE_FULL;
    }
    while (s->used + need > s->capacity) { /* evict least recently used, unreferenced */
      Object *victim = NULL;
      for (Object *o = s->objects; o != NULL; o = o->next)
        if (o->sealed && o->refcount == 0 && (victim == NULL || o->lru < victim->lru)) victim = o;
      remove_object(s, victim);
    }
  }
  Object *o = calloc(1, sizeof *o);
  uint8_t *bytes = malloc(need > 0 ? need : 1);
  if (o == NULL || bytes == NULL) {
    free(o);
    free(bytes);
    pthread_mutex_unlock(&s->mu);
    set_err(err, "malloc failed");
    return GISMO_STATUS_OUT_OF_MEMORY;
  }
  memcpy(o->id, id, GISMO_ID_LEN);
  o->bytes = bytes;
  o->data_size = data_size;
  o->metadata_size = metadata_len;
  if (metadata_len > 0) memcpy(bytes + data_size, metadata, metadata_len);
  o->is_mutable = is_mutable;
  o->refcount = 1;
  o->lru = ++s->tick;
  o->creator = c;
  if (owner != NULL) {
    memcpy(o->owner_raylet, owner->raylet_id, GISMO_ID_LEN);
    memcpy(o->owner_worker, owner->worker_id, GISMO_ID_LEN);
    snprintf(o->owner_ip, sizeof o->owner_ip, "%s", owner->ip != NULL ? owner->ip : "");
    o->owner_port = owner->port;
  }
  o->next = s->objects;
  s->objects = o;
  s->used += need;
  s->consumed += need;
  hold(c, id);
  *data = bytes;
  pthread_mutex_unlock(&s->mu);
  return GISMO_STATUS_OK;
}

static GismoStatus m_create(GismoClientHandle *h, const uint8_t *id, const GismoOwner *owner,
                            uint8_t is_mutable, uint64_t data_size, const uint8_t *metadata,
                            uint64_t metadata_len, uint8_t source, uint8_t **data,
                            GismoError *err) {
  (void)source;
  return create_common(h, id, owner, is_mutable, data_size, metadata, metadata_len, 1, data, err);
}

static GismoStatus m_try_create(GismoClientHandle *h, const uint8_t *id, const GismoOwner *owner,
                                uint64_t data_size, const uint8_t *metadata,
                                uint64_t metadata_len, uint8_t source, uint8_t **data,
                                GismoError *err) {
  (void)source;
  return create_common(h, id, owner, 0, data_size, metadata, metadata_len, 0, data, err);
}

static GismoStatus m_seal(GismoClientHandle *h, const uint8_t *id, GismoError *err) {
  Store *s = ((Client *)h)->store;
  GismoStatus st = GISMO_STATUS_OK;
  pthread_mutex_lock(&s->mu);
  Object *o = find(s, id);
  if (o == NULL) {
    st = GISMO_STATUS_OBJECT_NOT_FOUND;
    set_err(err, "seal: no such object");
  } else if (o->sealed) {
    st = GISMO_STATUS_OBJECT_ALREADY_SEALED;
    set_err(err, "seal: already sealed");
  } else {
    o->sealed = 1;
    push_event(s, o, 1);
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return st;
}

static GismoStatus m_abort(GismoClientHandle *h, const uint8_t *id, GismoError *err) {
  Client *c = (Client *)h;
  Store *s = c->store;
  GismoStatus st = GISMO_STATUS_OK;
  pthread_mutex_lock(&s->mu);
  Object *o = find(s, id);
  if (o == NULL) {
    st = GISMO_STATUS_OBJECT_NOT_FOUND;
    set_err(err, "abort: no such object");
  } else if (o->sealed || o->creator != c) {
    st = GISMO_STATUS_INVALID;
    set_err(err, o->sealed ? "abort: sealed" : "abort: not the creator");
  } else {
    while (unhold(c, id)) {
    }
    remove_object(s, o);
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return st;
}

static GismoStatus m_get(GismoClientHandle *h, const uint8_t *ids, uint64_t n, int64_t timeout_ms,
                         GismoObjectBuffer *out, GismoError *err) {
  (void)err;
  Client *c = (Client *)h;
  Store *s = c->store;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  if (timeout_ms > 0) {
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&s->mu);
  for (;;) {
    uint64_t ready = 0;
    for (uint64_t i = 0; i < n; i++) {
      Object *o = find(s, ids + i * GISMO_ID_LEN);
      if (o != NULL && o->sealed) ready++;
    }
    if (ready == n || timeout_ms == 0) break;
    if (timeout_ms < 0) {
      pthread_cond_wait(&s->cv, &s->mu);
    } else if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) {
      break;
    }
  }
  for (uint64_t i = 0; i < n; i++) {
    Object *o = find(s, ids + i * GISMO_ID_LEN);
    memset(&out[i], 0, sizeof out[i]);
    if (o != NULL && o->sealed) {
      o->refcount++;
      o->lru = ++s->tick;
      hold(c, o->id);
      out[i].data = o->bytes;
      out[i].data_len = o->data_size;
      out[i].metadata = o->bytes + o->data_size;
      out[i].metadata_len = o->metadata_size;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return GISMO_STATUS_OK;
}

static GismoStatus m_release(GismoClientHandle *h, const uint8_t *id, GismoError *err) {
  Client *c = (Client *)h;
  Store *s = c->store;
  GismoStatus st = GISMO_STATUS_OK;
  pthread_mutex_lock(&s->mu);
  Object *o = find(s, id);
  if (o == NULL || !unhold(c, id)) {
    st = GISMO_STATUS_INVALID;
    set_err(err, "release: no reference held");
  } else {
    drop_ref(s, o);
  }
  pthread_mutex_unlock(&s->mu);
  return st;
}

static GismoStatus m_contains(GismoClientHandle *h, const uint8_t *id, uint8_t *out,
                              GismoError *err) {
  (void)err;
  Store *s = ((Client *)h)->store;
  pthread_mutex_lock(&s->mu);
  Object *o = find(s, id);
  *out = (uint8_t)(o != NULL && o->sealed);
  pthread_mutex_unlock(&s->mu);
  return GISMO_STATUS_OK;
}

static GismoStatus m_delete(GismoClientHandle *h, const uint8_t *ids, uint64_t n,
                            GismoError *err) {
  (void)err;
  Store *s = ((Client *)h)->store;
  pthread_mutex_lock(&s->mu);
  for (uint64_t i = 0; i < n; i++) {
    Object *o = find(s, ids + i * GISMO_ID_LEN);
    if (o == NULL) continue;
    if (o->sealed && o->refcount == 0) remove_object(s, o);
    else o->delete_pending = 1;
  }
  pthread_mutex_unlock(&s->mu);
  return GISMO_STATUS_OK;
}

static GismoStatus m_disconnect(GismoClientHandle *h, GismoError *err) {
  (void)err;
  Client *c = (Client *)h;
  Store *s = c->store;
  pthread_mutex_lock(&s->mu);
  while (c->held != NULL) {
    Held *held = c->held;
    c->held = held->next;
    Object *o = find(s, held->id);
    free(held);
    if (o != NULL) drop_ref(s, o);
  }
  for (Object *o = s->objects, *next; o != NULL; o = next) {
    next = o->next;
    if (!o->sealed && o->creator == c) remove_object(s, o);
  }
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return GISMO_STATUS_OK;
}

static GismoStatus m_get_memory_usage(GismoClientHandle *h, char **out, GismoError *err) {
  Store *s = ((Client *)h)->store;
  char *buf = malloc(128);
  if (buf == NULL) {
    set_err(err, "malloc failed");
    return GISMO_STATUS_OUT_OF_MEMORY;
  }
  pthread_mutex_lock(&s->mu);
  snprintf(buf, 128, "memstore %s: %llu of %llu bytes used", s->name,
           (unsigned long long)s->used, (unsigned long long)s->capacity);
  pthread_mutex_unlock(&s->mu);
  *out = buf;
  return GISMO_STATUS_OK;
}

static void m_free_string(char *str) { free(str); }

static void m_memory_copy(GismoClientHandle *h, void *dst, const void *src, uint64_t len) {
  (void)h;
  memcpy(dst, src, len);
}

static uint8_t m_is_global(GismoClientHandle *h) {
  (void)h;
  return 0;
}

static void m_client_destroy(GismoClientHandle *h) {
  m_disconnect(h, NULL);
  free(h);
}

static const GismoClientApi client_api = {
    GISMO_PLUGIN_ABI_VERSION, (uint32_t)sizeof(GismoClientApi), m_create, m_try_create, m_seal,
    m_abort, m_get, m_release, m_contains, m_delete, m_disconnect, m_get_memory_usage,
    m_free_string, m_memory_copy, m_is_global, m_client_destroy};

GismoClientHandle *CreateClient(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoClientApi **api, GismoError *err) {
  const char *name;
  uint64_t capacity;
  if (!parse_config(keys, values, n, &name, &capacity, err)) return NULL;
  Client *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->store = store_named(name, capacity);
  *api = &client_api;
  return (GismoClientHandle *)c;
}

/* ---- runner ---- */

static void sleep_ms(long ms) {
  struct timespec t = {0, ms * 1000000L};
  nanosleep(&t, NULL);
}

static void *runner_main(void *arg) {
  Runner *r = arg;
  Store *s = r->store;
  uint64_t seen_full;
  pthread_mutex_lock(&s->mu);
  seen_full = s->full_events;
  pthread_mutex_unlock(&s->mu);
  for (int round = 0;; round++) {
    pthread_mutex_lock(&s->mu);
    int stop = r->stop;
    Event *events = s->events_head;
    s->events_head = s->events_tail = NULL;
    uint64_t full = s->full_events;
    int over = (double)s->used > r->threshold * (double)s->capacity;
    pthread_mutex_unlock(&s->mu);
    while (events != NULL) {
      Event *e = events;
      events = e->next;
      e->info.owner_ip_address = e->ip;
      if (e->is_add && r->cb.add_object != NULL) r->cb.add_object(r->cb.user_data, &e->info);
      if (!e->is_add && r->cb.delete_object != NULL)
        r->cb.delete_object(r->cb.user_data, e->info.object_id);
      free(e);
    }
    if (stop) break;
    if (round % 10 == 0) {
      if (full != seen_full) {
        seen_full = full;
        if (r->cb.object_store_full != NULL) r->cb.object_store_full(r->cb.user_data);
        if (r->cb.spill_objects != NULL) r->cb.spill_objects(r->cb.user_data);
      } else if (over && r->cb.spill_objects != NULL) {
        r->cb.spill_objects(r->cb.user_data);
      }
    }
    sleep_ms(1);
  }
  return NULL;
}

static GismoStatus r_start(GismoRunnerHandle *h, const char *const *keys,
                           const char *const *values, uint64_t n,
                           const GismoRunnerCallbacks *callbacks, GismoError *err) {
  Runner *r = (Runner *)h;
  if (r->running) {
    set_err(err, "runner already started");
    return GISMO_STATUS_INVALID;
  }
  r->threshold = 0.8;
  for (uint64_t i = 0; i < n; i++)
    if (strcmp(keys[i], "object_spilling_threshold") == 0) r->threshold = atof(values[i]);
  r->cb = *callbacks;
  r->stop = 0;
  pthread_mutex_lock(&r->store->mu);
  r->store->runner_active = 1;
  pthread_mutex_unlock(&r->store->mu);
  if (pthread_create(&r->thread, NULL, runner_main, r) != 0) {
    set_err(err, "pthread_create failed");
    return GISMO_STATUS_IO_ERROR;
  }
  r->running = 1;
  return GISMO_STATUS_OK;
}

static void r_stop(GismoRunnerHandle *h) {
  Runner *r = (Runner *)h;
  if (!r->running) return;
  pthread_mutex_lock(&r->store->mu);
  r->stop = 1;
  r->store->runner_active = 0;
  pthread_mutex_unlock(&r->store->mu);
  pthread_join(r->thread, NULL);
  r->running = 0;
}

static uint8_t r_is_object_spillable(GismoRunnerHandle *h, const uint8_t *id) {
  Store *s = ((Runner *)h)->store;
  pthread_mutex_lock(&s->mu);
  Object *o = find(s, id);
  uint8_t yes = (uint8_t)(o != NULL && o->sealed && o->refcount == 1);
  pthread_mutex_unlock(&s->mu);
  return yes;
}

static int64_t r_consumed(GismoRunnerHandle *h) {
  Store *s = ((Runner *)h)->store;
  pthread_mutex_lock(&s->mu);
  int64_t c = (int64_t)s->consumed;
  pthread_mutex_unlock(&s->mu);
  return c;
}
static int64_t r_fallback(GismoRunnerHandle *h) {
  (void)h;
  return 0;
}
static int64_t r_available(GismoRunnerHandle *h) {
  Store *s = ((Runner *)h)->store;
  pthread_mutex_lock(&s->mu);
  int64_t a = (int64_t)(s->capacity - s->used);
  pthread_mutex_unlock(&s->mu);
  return a;
}
static int64_t r_total(GismoRunnerHandle *h) { return (int64_t)((Runner *)h)->store->capacity; }

static void r_destroy(GismoRunnerHandle *h) {
  r_stop(h);
  free(h);
}

static const GismoRunnerApi runner_api = {
    GISMO_PLUGIN_ABI_VERSION, (uint32_t)sizeof(GismoRunnerApi), r_start, r_stop,
    r_is_object_spillable, r_consumed, r_fallback, r_available, r_total, r_total, r_destroy};

GismoRunnerHandle *CreateRunner(const char *const *keys, const char *const *values, uint64_t n,
                                const GismoRunnerApi **api, GismoError *err) {
  const char *name;
  uint64_t capacity;
  if (!parse_config(keys, values, n, &name, &capacity, err)) return NULL;
  Runner *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->store = store_named(name, capacity);
  *api = &runner_api;
  return (GismoRunnerHandle *)r;
}
