use std::time::Duration;

use serde::Deserialize;

use crate::BusError;

/// `messaging.nats`: how to reach the NATS servers and how channels and groups are kept on
/// them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, or several separated by commas (`nats://nats-1:4222,nats://nats-2:4222`);
    /// credentials may be embedded (`nats://user:password@host:4222`) and are never logged.
    pub url: String,
    /// Retention of each channel's stream: messages older than this are removed, whether or
    /// not every group has read them. 0 keeps them until removed by hand. Default: 7 days.
    #[serde(default = "NatsConfig::default_max_age_secs")]
    pub max_age_secs: u64,
    /// Replicas of each stream: 1 on a single server, 3 in a cluster.
    #[serde(default = "NatsConfig::default_replicas")]
    pub replicas: usize,
    /// How long the server waits for a group member's acknowledgement before it hands the
    /// message to the group again (a consumer that died without closing). Must exceed the
    /// time a batch takes to process, retries included. Default: 30 s.
    #[serde(default = "NatsConfig::default_ack_wait_secs")]
    pub ack_wait_secs: u64,
    /// Messages a group may hold unacknowledged, all its members together; the server stops
    /// delivering to the group when it is reached. Default: 1000.
    #[serde(default = "NatsConfig::default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Window in which a message published again with the same id (a producer retrying after
    /// a lost acknowledgement) is stored once. Capped at `max_age_secs`. Default: 120 s.
    #[serde(default = "NatsConfig::default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// How long connecting may take before the backend reports the server unreachable.
    /// Default: 3 s.
    #[serde(default = "NatsConfig::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of JetStream API calls, publish and ack confirmations and health checks.
    /// Default: 5 s.
    #[serde(default = "NatsConfig::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl NatsConfig {
    fn default_max_age_secs() -> u64 {
        7 * 24 * 3600
    }

    fn default_replicas() -> usize {
        1
    }

    fn default_ack_wait_secs() -> u64 {
        30
    }

    fn default_max_ack_pending() -> i64 {
        1000
    }

    fn default_duplicate_window_secs() -> u64 {
        120
    }

    fn default_connect_timeout_ms() -> u64 {
        3_000
    }

    fn default_request_timeout_ms() -> u64 {
        5_000
    }

    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_age_secs: Self::default_max_age_secs(),
            replicas: Self::default_replicas(),
            ack_wait_secs: Self::default_ack_wait_secs(),
            max_ack_pending: Self::default_max_ack_pending(),
            duplicate_window_secs: Self::default_duplicate_window_secs(),
            connect_timeout_ms: Self::default_connect_timeout_ms(),
            request_timeout_ms: Self::default_request_timeout_ms(),
        }
    }

    /// Rejects values the server would refuse later, naming the key.
    pub(super) fn validate(&self) -> Result<(), BusError> {
        let checks = [
            ("url", !self.url.trim().is_empty(), "must name at least one server"),
            ("replicas", self.replicas >= 1, "must be at least 1"),
            ("ack_wait_secs", self.ack_wait_secs >= 1, "must be at least 1"),
            ("max_ack_pending", self.max_ack_pending >= 1, "must be at least 1"),
            ("connect_timeout_ms", self.connect_timeout_ms >= 1, "must be at least 1"),
            ("request_timeout_ms", self.request_timeout_ms >= 1, "must be at least 1"),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, why)) => Err(BusError::Config(format!("messaging.nats.{key}: {why}"))),
            None => Ok(()),
        }
    }

    /// The server URLs, one per comma-separated entry.
    pub(super) fn urls(&self) -> Vec<String> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
    }

    /// The URL as it may be shown: every entry without its credentials.
    pub(super) fn display_url(&self) -> String {
        self.urls().iter().map(|u| without_credentials(u)).collect::<Vec<_>>().join(",")
    }

    /// `text` with any credentials of the configured URLs masked (client errors may quote
    /// the address they failed on).
    pub(super) fn scrub(&self, text: &str) -> String {
        self.urls()
            .iter()
            .filter_map(|u| credentials(u))
            .filter(|c| !c.is_empty())
            .fold(text.to_owned(), |t, c| t.replace(c, "***"))
    }

    /// Retention of each stream (`Duration::ZERO`: unlimited).
    pub(super) fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    /// The deduplication window, no longer than the retention.
    pub(super) fn duplicate_window(&self) -> Duration {
        let window = Duration::from_secs(self.duplicate_window_secs);
        if self.max_age_secs == 0 { window } else { window.min(self.max_age()) }
    }

    /// The redelivery timeout of group consumers.
    pub(super) fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    /// The connect timeout.
    pub(super) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The timeout of API calls and confirmations.
    pub(super) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The user-info part of `url` (`user:password` in `nats://user:password@host`), if any.
fn credentials(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(user_info, _)| user_info)
}

/// `url` without its user-info part.
fn without_credentials(url: &str) -> String {
    match credentials(url) {
        Some(user_info) => url.replacen(&format!("{user_info}@"), "", 1),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let config = NatsConfig::new("nats://alice:s3cret@nats-1:4222, tls://token@nats-2:4222/,nats-3:4222");
        assert_eq!(config.display_url(), "nats://nats-1:4222,tls://nats-2:4222/,nats-3:4222");
        let scrubbed = config.scrub("failed on nats://alice:s3cret@nats-1:4222 and token@nats-2");
        assert!(!scrubbed.contains("s3cret") && !scrubbed.contains("token"), "{scrubbed}");
        assert_eq!(config.urls().len(), 3);
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let config: NatsConfig = serde_json::from_value(serde_json::json!({ "url": "nats://h:4222" })).expect("config");
        assert_eq!(config.ack_wait(), Duration::from_secs(30));
        assert_eq!(config.max_age(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.duplicate_window(), Duration::from_secs(120));
        config.validate().expect("valid");
        let unknown = serde_json::from_value::<NatsConfig>(serde_json::json!({ "url": "u", "acks": 1 }));
        assert!(unknown.is_err(), "unknown keys are rejected");
    }

    #[test]
    fn the_duplicate_window_fits_in_the_retention() {
        let config = NatsConfig { max_age_secs: 60, ..NatsConfig::new("nats://h") };
        assert_eq!(config.duplicate_window(), Duration::from_secs(60));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let config = NatsConfig { ack_wait_secs: 0, ..NatsConfig::new("nats://h") };
        let err = config.validate().expect_err("must fail");
        assert!(err.to_string().contains("messaging.nats.ack_wait_secs"), "{err}");
    }
}
