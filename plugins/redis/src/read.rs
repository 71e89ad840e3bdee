//! The read path of [`RedisClient`](super::client::RedisClient): `get` (one pipelined round trip
//! per pass, waiting through the [seal waiter](super::waiter)) and `contains`.
//!
//! A pass sends, for each wanted id, the `acquire` script (a reference on a sealed object with
//! data) followed by `HMGET data metadata`; Redis runs a connection's commands in order, and the
//! reference taken first keeps a plugin delete from removing the hash before the read. An entry
//! whose acquire found nothing is dropped (whatever the HMGET returned).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind, Value};

use crate::client::ClientInner;
use crate::interface::{ObjectBuffer, ReleaseObject, Status};
use crate::schema::STATE_SEALED;
use crate::store::ObjectId;
use crate::RedisStoreError;

/// An object read by `get` (data, metadata), with a reference taken on it.
type Fetched = Option<(Vec<u8>, Vec<u8>)>;

impl ClientInner {
    /// Takes a reference on each sealed object of `ids` and reads it: one pipelined round trip.
    fn fetch(&self, ids: &[ObjectId]) -> Result<Vec<Fetched>, RedisStoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let node = &self.node;
        let sha = node.scripts.acquire.get_hash();
        let (held, live) = (node.keys.held(&self.me), node.keys.live(&self.me));
        let lease = node.lease_ms();
        let mut pipe = redis::pipe();
        for id in ids {
            let key = node.keys.object(id);
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(3)
                .arg(&key)
                .arg(&held)
                .arg(&live)
                .arg(id.to_string())
                .arg(lease);
            pipe.cmd("HMGET").arg(&key).arg("data").arg("metadata");
        }
        let values: Vec<Value> = node.pool.run(|c| match pipe.query(c) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                node.scripts.acquire.load(c)?;
                pipe.query(c)
            }
            r => r,
        })?;
        if values.len() != ids.len() * 2 {
            return Err(RedisStoreError::Server {
                url: node.pool.url().to_string(),
                message: format!("{} replies to {} commands", values.len(), ids.len() * 2),
            });
        }
        let mut values = values.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        while let (Some(refs), Some(fields)) = (values.next(), values.next()) {
            let acquired = matches!(refs, Value::Int(n) if n > 0);
            let bytes = |v: Value| match v {
                Value::BulkString(b) => Some(b),
                Value::SimpleString(s) => Some(s.into_bytes()),
                _ => None,
            };
            out.push(match fields {
                Value::Array(mut f) if acquired && f.len() == 2 => {
                    let metadata = f.pop().and_then(bytes).unwrap_or_default();
                    f.pop().and_then(bytes).map(|data| (data, metadata))
                }
                _ => None,
            });
        }
        Ok(out)
    }

    /// Turns fetched objects into buffers (each holding one reference) in `out`.
    fn collect(
        self: &Arc<Self>,
        ids: &[ObjectId],
        fetched: Vec<Fetched>,
        out: &mut [Option<ObjectBuffer>],
        slots: &[usize],
    ) {
        for ((id, got), &slot) in ids.iter().zip(fetched).zip(slots) {
            let Some((mut data, metadata)) = got else {
                continue;
            };
            *self.ledger().refs.entry(*id).or_insert(0) += 1;
            let data_len = data.len();
            data.extend_from_slice(&metadata);
            let owner: Arc<dyn ReleaseObject> = self.clone();
            out[slot] = Some(ObjectBuffer::from_copy(
                *id,
                data.into_boxed_slice(),
                data_len,
                Some(owner),
            ));
        }
    }

    pub(super) fn get(
        self: &Arc<Self>,
        ids: &[ObjectId],
        timeout_ms: i64,
    ) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut out: Vec<Option<ObjectBuffer>> = ids.iter().map(|_| None).collect();
        let all: Vec<usize> = (0..ids.len()).collect();
        let fetched = self.fetch(ids).map_err(|e| self.fail(e))?;
        self.collect(ids, fetched, &mut out, &all);
        if timeout_ms == 0 {
            return Ok(out);
        }
        let missing_slots = |out: &[Option<ObjectBuffer>]| -> Vec<usize> {
            (0..out.len()).filter(|&i| out[i].is_none()).collect()
        };
        let mut slots = missing_slots(&out);
        if slots.is_empty() {
            return Ok(out);
        }
        let missing: Vec<ObjectId> = slots.iter().map(|&i| ids[i]).collect();
        let watch = self.node.waiter.watch(&missing);
        let recheck = self.wait_recheck;
        loop {
            // Read the event counter before re-reading Redis (waiter module: no lost wakeup).
            let seen = watch.events();
            let wanted: Vec<ObjectId> = slots.iter().map(|&i| ids[i]).collect();
            let fetched = self.fetch(&wanted).map_err(|e| self.fail(e))?;
            self.collect(&wanted, fetched, &mut out, &slots);
            slots = missing_slots(&out);
            let now = Instant::now();
            if slots.is_empty() || deadline.is_some_and(|d| now >= d) {
                return Ok(out);
            }
            let until = deadline.map_or(now + recheck, |d| d.min(now + recheck));
            watch.wait(seen, until);
        }
    }

    pub(super) fn contains(&self, id: &ObjectId) -> Result<bool, Status> {
        let node = &self.node;
        let key = node.keys.object(id);
        let (state, has_data): (Option<String>, bool) = node
            .pool
            .run(|c| {
                redis::pipe()
                    .cmd("HGET")
                    .arg(&key)
                    .arg("state")
                    .cmd("HEXISTS")
                    .arg(&key)
                    .arg("data")
                    .query(c)
            })
            .map_err(|e| self.fail(e))?;
        Ok(has_data && state.as_deref() == Some(STATE_SEALED))
    }
}
