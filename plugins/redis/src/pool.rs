//! Pooled connections to one Redis server, with bounded waits everywhere.
//!
//! - A pool ([r2d2]) of at most `pool_size` connections, made lazily: building a pool never
//!   touches the network, so a client is cheap to make and a Redis that is down at start is an
//!   error of the first operation, not of construction.
//! - Getting a connection gives up after `connect_timeout` (r2d2 keeps retrying the connect until
//!   then) with [`RedisStoreError::Unreachable`]; every command has `io_timeout` as its read and
//!   write timeout ([`RedisStoreError::Timeout`]).
//! - **Failure epoch.** When a command fails with an I/O error or a timeout, the server has most
//!   likely gone away (killed, restarted, partitioned), and every idle pooled connection is as dead
//!   as the one that failed. The pool bumps an epoch; a connection made in an older epoch is refused
//!   at checkout (without a round trip) and dropped on return, so the next operation connects
//!   afresh instead of failing once per stale connection.
//! - **One retry.** An operation whose *reused* connection turns out to have been dropped by the
//!   server (EOF, reset, broken pipe) is retried once on a new connection. The server closed that
//!   connection before our command reached it (it died, restarted, or killed idle clients), so the
//!   command did not run there; the one case where it could have (a server that executed it and
//!   then died with persistence on) is documented in `docs/redis.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{Connection, ConnectionLike, RedisError};

use crate::settings::RedisSettings;
use crate::RedisStoreError;

/// A connection and the epoch it was made in.
pub struct PooledConnection {
    conn: Connection,
    epoch: u64,
    /// Operations run on it so far (0: fresh, so a failure is not a stale-connection failure).
    uses: u64,
}

/// Makes connections for r2d2.
pub struct Connector {
    client: redis::Client,
    connect_timeout: Duration,
    io_timeout: Duration,
    epoch: Arc<AtomicU64>,
}

impl r2d2::ManageConnection for Connector {
    type Connection = PooledConnection;
    type Error = RedisError;

    fn connect(&self) -> Result<PooledConnection, RedisError> {
        // Relaxed: the epoch is a hint about liveness, it publishes no data.
        let epoch = self.epoch.load(Ordering::Relaxed);
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.io_timeout))?;
        conn.set_write_timeout(Some(self.io_timeout))?;
        Ok(PooledConnection {
            conn,
            epoch,
            uses: 0,
        })
    }

    /// Checkout test without a round trip: open and made in the current epoch.
    fn is_valid(&self, c: &mut PooledConnection) -> Result<(), RedisError> {
        if self.has_broken(c) {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection retired after a failure",
            )));
        }
        Ok(())
    }

    fn has_broken(&self, c: &mut PooledConnection) -> bool {
        !c.conn.is_open() || c.epoch != self.epoch.load(Ordering::Relaxed)
    }
}

/// The pool of one store (one per [`Node`](crate::node::Node)).
pub struct Pool {
    pool: r2d2::Pool<Connector>,
    epoch: Arc<AtomicU64>,
    client: redis::Client,
    /// The URL without credentials, for messages.
    url: String,
    connect_timeout: Duration,
    io_timeout: Duration,
}

/// `url` without a password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Pool {
    /// A pool for `settings.url`; connects nothing yet.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a URL the client refuses.
    pub fn new(settings: &RedisSettings) -> Result<Pool, RedisStoreError> {
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| RedisStoreError::Config {
                key: "url",
                value: settings.url.clone(),
                reason: e.to_string(),
            })?;
        let epoch = Arc::new(AtomicU64::new(0));
        let connector = Connector {
            client: client.clone(),
            connect_timeout: settings.connect_timeout,
            io_timeout: settings.io_timeout,
            epoch: epoch.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(true)
            .connection_timeout(settings.connect_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(connector);
        Ok(Pool {
            pool,
            epoch,
            client,
            url: redact(&settings.url),
            connect_timeout: settings.connect_timeout,
            io_timeout: settings.io_timeout,
        })
    }

    /// The URL for messages (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying client (the seal waiter makes its own subscriber connection from it).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// Retires every connection made so far (they are refused at checkout from now on).
    pub fn retire_connections(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `op` on a pooled connection (module docs: timeouts, epoch, one retry).
    ///
    /// # Errors
    /// [`RedisStoreError::Unreachable`] when no connection can be had within `connect_timeout`;
    /// otherwise `op`'s failure, classified by [`Pool::classify`].
    pub fn run<T>(
        &self,
        mut op: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisStoreError> {
        let mut retried = false;
        loop {
            let mut pooled = self.pool.get().map_err(|e| {
                self.retire_connections();
                RedisStoreError::Unreachable {
                    url: self.url.clone(),
                    message: format!(
                        "no connection within {} ms: {e}",
                        self.connect_timeout.as_millis()
                    ),
                }
            })?;
            let reused = pooled.uses > 0;
            pooled.uses += 1;
            match op(&mut pooled.conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let stale = reused && e.is_connection_dropped();
                    let err = self.classify(e);
                    if stale && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Maps a client error to a [`RedisStoreError`], retiring the pool's connections when the
    /// failure says the server went away.
    pub fn classify(&self, e: RedisError) -> RedisStoreError {
        let url = self.url.clone();
        if e.is_timeout() {
            self.retire_connections();
            return RedisStoreError::Timeout {
                url,
                timeout_ms: self.io_timeout.as_millis() as u64,
                message: e.to_string(),
            };
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.retire_connections();
            return RedisStoreError::Io {
                url,
                message: e.to_string(),
            };
        }
        let message = e.to_string();
        if e.code() == Some("OOM") || message.contains("OOM command not allowed") {
            return RedisStoreError::ServerFull { url, message };
        }
        RedisStoreError::Server { url, message }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
