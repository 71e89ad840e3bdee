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
    /// `KEYS[1]` object; ARGV creator. 1 reserved (state created, refs 1); 0 the key exists.
    pub create: Script,
    /// `KEYS[1]` object; ARGV creator, channel, hex id, data, metadata, is_mutable, owner_ip,
    /// owner_port, owner_raylet_id, owner_worker_id. 1 sealed and published; 2 sealed, published
    /// and deleted at once (a delete was pending and nothing holds it); 0 no such object; -1 not
    /// in state created (already sealed); -2 created by another client.
    pub seal: Script,
    /// `KEYS[1]` object. The new reference count (>= 1) if the object is sealed with data; 0 if
    /// it is not (missing or not yet sealed). Pipelined with `HMGET data metadata`.
    pub acquire: Script,
    /// `KEYS[1]` object; ARGV count. 1 released; 2 released and deleted (the last reference of a
    /// pending delete); -1 no such object.
    pub release: Script,
    /// `KEYS[1]` object; ARGV creator. 1 removed; 0 no such object; -1 not in state created;
    /// -2 created by another client.
    pub abort: Script,
    /// `KEYS[1]` object. 1 deleted; 2 marked delete_pending (referenced or not sealed); 0 missing.
    pub delete: Script,
}

const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'created', 'creator', ARGV[1], 'refs', 1)
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
redis.call('PUBLISH', ARGV[2], ARGV[3])
if st[4] and (tonumber(st[3]) or 0) <= 0 then
  redis.call('DEL', KEYS[1])
  return 2
end
return 1
";

const ACQUIRE: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'sealed' and redis.call('HEXISTS', KEYS[1], 'data') == 1 then
  return redis.call('HINCRBY', KEYS[1], 'refs', 1)
end
return 0
";

const RELEASE: &str = r"
local st = redis.call('HMGET', KEYS[1], 'state', 'delete_pending')
if not st[1] then return -1 end
local r = redis.call('HINCRBY', KEYS[1], 'refs', -tonumber(ARGV[1]))
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

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            create: Script::new(CREATE),
            seal: Script::new(SEAL),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            abort: Script::new(ABORT),
            delete: Script::new(DELETE),
        }
    }

    /// Every script, for `SCRIPT LOAD` after a `NOSCRIPT` reply.
    pub fn all(&self) -> [&Script; 6] {
        [
            &self.create,
            &self.seal,
            &self.acquire,
            &self.release,
            &self.abort,
            &self.delete,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
