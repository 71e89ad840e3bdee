//! The on-Redis format: one hash per object, one pub/sub channel, and the Lua scripts that move an
//! object through Plasma's lifecycle atomically. `docs/redis.md` is the same schema written for
//! people and for programs that are not Ray.
//!
//! ```text
//! <prefix>obj:<56 hex digits of the ObjectID>   a hash:
//!     state            "created" while the creator writes it, "sealed" once readable
//!     creator          the creating client's id (only while "created")
//!     data, metadata   the object's bytes (written by the seal)
//!     data_size, metadata_size, is_mutable, owner_ip, owner_port,
//!     owner_raylet_id, owner_worker_id (hex)      Ray's ObjectInfo (written by the seal)
//!     refs             references held through the plugin (creation counts as one)
//!     delete_pending   "1": deleted while referenced; the last release removes the key
//! <prefix>sealed      the channel a seal publishes the hex id on
//! <prefix>held:<client>  a hash: what one client holds, kept by the same scripts —
//!     <hex id>         references it holds on that object (creation counts as one)
//!     c:<hex id>       present while it is creating that object (unsealed)
//! <prefix>live:<client>  a string with a TTL (the lease), refreshed while the client's process
//!                        lives; a `held` hash without it is a dead client's, and any node reaps
//!                        it (the `reap` script): references given back, creations aborted
//! ```
//!
//! Readers need only `state == "sealed"` and `data`; every other field is optional, so a writer
//! outside Ray may `HSET <key> state sealed data <bytes> [metadata <bytes>]` and then
//! `PUBLISH <prefix>sealed <hex id>`.
//!
//! Every script touches one key (cluster-safe hash slots are not a goal, but nothing precludes
//! them) and returns a small integer; the meaning of each is documented on the script.

use redis::Script;

use crate::store::ObjectId;

/// Redis's cap on a single value (`proto-max-bulk-len` and the string limit): 512 MiB.
pub const MAX_VALUE_BYTES: u64 = 512 << 20;

pub const STATE_CREATED: &str = "created";
pub const STATE_SEALED: &str = "sealed";

/// Names of the keys and channel of one store (a prefix).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>obj:<hex id>`.
    pub fn object(&self, id: &ObjectId) -> String {
        format!("{}obj:{id}", self.prefix)
    }

    /// The `SCAN MATCH` pattern of every object key.
    pub fn object_pattern(&self) -> String {
        format!("{}obj:*", self.prefix)
    }

    /// `<prefix>held:<client>`: what `client` holds.
    pub fn held(&self, client: &str) -> String {
        format!("{}held:{client}", self.prefix)
    }

    /// The `SCAN MATCH` pattern of every client's `held` hash.
    pub fn held_pattern(&self) -> String {
        format!("{}held:*", self.prefix)
    }

    /// The client id of a `held` key (`None` for another key).
    pub fn held_client<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("held:")
    }

    /// `<prefix>live:<client>`: present while `client`'s process lives (a TTL it refreshes).
    pub fn live(&self, client: &str) -> String {
        format!("{}live:{client}", self.prefix)
    }

    /// `<prefix>obj:`, what the `reap` script prepends to the hex ids it finds.
    pub fn object_prefix(&self) -> String {
        format!("{}obj:", self.prefix)
    }

    /// `<prefix>sealed`: the channel seals publish the hex id on.
    pub fn sealed_channel(&self) -> String {
        format!("{}sealed", self.prefix)
    }
}

/// Hex of a 28-byte Ray id (raylet or worker id).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lifecycle scripts, hashed once; `EVALSHA` with a fallback to `SCRIPT LOAD` on `NOSCRIPT`.
pub struct Scripts {
    /// `KEYS[1]` object, `KEYS[2]` the creator's held hash, `KEYS[3]` its live key; ARGV
    /// creator, hex id, lease ms. 1 reserved (state created, refs 1, recorded as held and as a
    /// creation, lease refreshed); 0 the key exists.
    pub create: Script,
    /// `KEYS[1]` object, `KEYS[2]` the creator's held hash; ARGV creator, channel, hex id, data,
    /// metadata, is_mutable, owner_ip,
    /// owner_port, owner_raylet_id, owner_worker_id. 1 sealed and published; 2 sealed, published
    /// and deleted at once (a delete was pending and nothing holds it); 0 no such object; -1 not
    /// in state created (already sealed); -2 created by another client.
    pub seal: Script,
    /// `KEYS[1]` object, `KEYS[2]` the client's held hash, `KEYS[3]` its live key; ARGV hex id,
    /// lease ms. The new reference count (>= 1) if the object is sealed with data (recorded as
    /// held, lease refreshed); 0 if it is not (missing or not yet sealed). Pipelined with
    /// `HMGET data metadata`.
    pub acquire: Script,
    /// `KEYS[1]` object, `KEYS[2]` the client's held hash; ARGV count, hex id. 1 released; 2
    /// released and deleted (the last reference of a pending delete); -1 no such object; 3
    /// nothing to give back (the client's references were reaped while it was presumed dead: the
    /// object's count is not touched, so other holders keep theirs).
    pub release: Script,
    /// `KEYS[1]` object, `KEYS[2]` the creator's held hash; ARGV creator, hex id. 1 removed; 0
    /// no such object; -1 not in state created; -2 created by another client.
    pub abort: Script,
    /// `KEYS[1]` object. 1 deleted; 2 marked delete_pending (referenced or not sealed); 0 missing.
    pub delete: Script,
    /// `KEYS[1]` a client's held hash, `KEYS[2]` its live key; ARGV object key prefix, client.
    /// If the live key is gone (the client's process died or hung past its lease): aborts the
    /// objects it was creating, gives back the references it held (completing pending deletes),
    /// removes the hash, and returns the hex ids of the objects deleted. An empty list otherwise.
    pub reap: Script,
}

const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'created', 'creator', ARGV[1], 'refs', 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[2], 'c:' .. ARGV[2], 1)
redis.call('SET', KEYS[3], 1, 'PX', ARGV[3])
return 1
";

const SEAL: &str = r"
local st = redis.call('HMGET', KEYS[1], 'state', 'creator', 'refs', 'delete_pending')
if not st[1] then return 0 end
if st[1] ~= 'created' then return -1 end
if st[2] ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'state', 'sealed', 'data', ARGV[4], 'metadata', ARGV[5],
  'data_size', string.len(ARGV[4]), 'metadata_size', string.len(ARGV[5]),
  'is_mutable', ARGV[6], 'owner_ip', ARGV[7], 'owner_port', ARGV[8],
  'owner_raylet_id', ARGV[9], 'owner_worker_id', ARGV[10])
redis.call('HDEL', KEYS[1], 'creator')
redis.call('HDEL', KEYS[2], 'c:' .. ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if st[4] and (tonumber(st[3]) or 0) <= 0 then
  redis.call('DEL', KEYS[1])
  return 2
end
return 1
";

const ACQUIRE: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'sealed' and redis.call('HEXISTS', KEYS[1], 'data') == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('SET', KEYS[3], 1, 'PX', ARGV[2])
  return redis.call('HINCRBY', KEYS[1], 'refs', 1)
end
return 0
";

const RELEASE: &str = r"
local n = tonumber(ARGV[1])
local h = redis.call('HINCRBY', KEYS[2], ARGV[2], -n)
if h <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
local give = math.min(n, h + n)
if give <= 0 then return 3 end
local st = redis.call('HMGET', KEYS[1], 'state', 'delete_pending')
if not st[1] then return -1 end
local r = redis.call('HINCRBY', KEYS[1], 'refs', -give)
if r <= 0 then
  if r < 0 then redis.call('HSET', KEYS[1], 'refs', 0) end
  if st[2] and st[1] == 'sealed' then
    redis.call('DEL', KEYS[1])
    return 2
  end
end
return 1
";

const ABORT: &str = r"
local st = redis.call('HMGET', KEYS[1], 'state', 'creator')
if not st[1] then return 0 end
if st[1] ~= 'created' then return -1 end
if st[2] ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2], 'c:' .. ARGV[2])
return 1
";

const DELETE: &str = r"
local st = redis.call('HMGET', KEYS[1], 'state', 'refs')
if not st[1] then return 0 end
if st[1] == 'sealed' and (tonumber(st[2]) or 0) <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'delete_pending', '1')
return 2
";

const REAP: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local held = redis.call('HGETALL', KEYS[1])
local deleted = {}
for i = 1, #held, 2 do
  local f = held[i]
  if string.sub(f, 1, 2) == 'c:' then
    local k = ARGV[1] .. string.sub(f, 3)
    local st = redis.call('HMGET', k, 'state', 'creator')
    if st[1] == 'created' and st[2] == ARGV[2] then redis.call('DEL', k) end
  end
end
for i = 1, #held, 2 do
  local f = held[i]
  if string.sub(f, 1, 2) ~= 'c:' then
    local k = ARGV[1] .. f
    local st = redis.call('HMGET', k, 'state', 'delete_pending')
    if st[1] then
      local r = redis.call('HINCRBY', k, 'refs', -(tonumber(held[i + 1]) or 0))
      if r <= 0 then
        if r < 0 then redis.call('HSET', k, 'refs', 0) end
        if st[2] and st[1] == 'sealed' then
          redis.call('DEL', k)
          table.insert(deleted, f)
        end
      end
    end
  end
end
redis.call('DEL', KEYS[1])
return deleted
";

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            create: Script::new(CREATE),
            seal: Script::new(SEAL),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            abort: Script::new(ABORT),
            delete: Script::new(DELETE),
            reap: Script::new(REAP),
        }
    }

    /// Every script, for `SCRIPT LOAD` after a `NOSCRIPT` reply.
    pub fn all(&self) -> [&Script; 7] {
        [
            &self.create,
            &self.seal,
            &self.acquire,
            &self.release,
            &self.abort,
            &self.delete,
            &self.reap,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
