use std::time::Duration;

use serde::Deserialize;

use crate::BusError;

/// `messaging.redis`: how to reach Redis and how its streams are trimmed and consumed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://:password@redis:6379/0` (plain TCP or `redis+unix://`; this
    /// build has no TLS).
    pub url: String,
    /// Approximate length a stream is trimmed to on each publish (`XADD … MAXLEN ~`): the
    /// retention of a channel, and so how far a lagging or new group can fall behind. Trimming
    /// ignores consumer groups: a group more than this many messages behind loses the oldest.
    /// `0` keeps everything.
    #[serde(default = "RedisConfig::default_max_len")]
    pub max_len: u64,
    /// How long one blocking read waits on the server before the consumer looks for
    /// abandoned messages again. At least 1.
    #[serde(default = "RedisConfig::default_block_ms")]
    pub block_ms: u64,
    /// A message delivered to a consumer of a group and not acknowledged for this long is
    /// taken over by another consumer of the group (the redelivery of a crashed consumer's
    /// messages). Must exceed the longest handling of a message, retries included, or a slow
    /// message is handled twice. At least 1.
    #[serde(default = "RedisConfig::default_claim_idle_ms")]
    pub claim_idle_ms: u64,
    /// Bound on connecting and on every non-blocking command.
    #[serde(default = "RedisConfig::default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
}

impl RedisConfig {
    fn default_max_len() -> u64 {
        100_000
    }

    fn default_block_ms() -> u64 {
        1_000
    }

    fn default_claim_idle_ms() -> u64 {
        30_000
    }

    fn default_operation_timeout_ms() -> u64 {
        5_000
    }

    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_len: Self::default_max_len(),
            block_ms: Self::default_block_ms(),
            claim_idle_ms: Self::default_claim_idle_ms(),
            operation_timeout_ms: Self::default_operation_timeout_ms(),
        }
    }

    /// Refuses the values the backend cannot work with, naming the key.
    pub(super) fn validate(&self) -> Result<(), BusError> {
        for (key, value) in [
            ("block_ms", self.block_ms),
            ("claim_idle_ms", self.claim_idle_ms),
            ("operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if value == 0 {
                return Err(BusError::Config(format!("messaging.redis.{key}: must be at least 1")));
            }
        }
        Ok(())
    }

    /// How long one blocking read waits.
    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    /// The bound on connecting and on every non-blocking command.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_url_is_required() {
        let config: RedisConfig = serde_json::from_value(serde_json::json!({ "url": "redis://h:6379" }))
            .expect("a config with the url alone");
        assert_eq!(config.max_len, 100_000);
        assert_eq!(config.block(), Duration::from_secs(1));
        assert_eq!(config.claim_idle_ms, 30_000);
        assert_eq!(config.operation_timeout(), Duration::from_secs(5));
        config.validate().expect("the defaults are valid");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<RedisConfig>(serde_json::json!({ "url": "redis://h", "maxlen": 5 }))
            .expect_err("a misspelt key");
        assert!(err.to_string().contains("maxlen"), "{err}");
    }

    #[test]
    fn a_zero_duration_is_refused_by_key() {
        let config = RedisConfig { claim_idle_ms: 0, ..RedisConfig::new("redis://h") };
        let err = config.validate().expect_err("zero claim idle time").to_string();
        assert!(err.contains("messaging.redis.claim_idle_ms"), "{err}");
    }
}
