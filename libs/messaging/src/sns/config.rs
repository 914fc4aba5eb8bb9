use std::time::Duration;

use serde::Deserialize;

use crate::BusError;

/// The longest long poll SQS allows.
pub(super) const MAX_WAIT_TIME_SECS: u32 = 20;
/// The longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_TIMEOUT_SECS: u32 = 43_200;
/// SQS keeps a message at least one minute and at most 14 days.
const RETENTION_SECS: std::ops::RangeInclusive<u32> = 60..=1_209_600;

/// `messaging.sns`: how to reach SNS and SQS (AWS, or an emulator through `endpoint_url`).
///
/// `Debug` never shows the secret access key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// Endpoint of both services instead of AWS's (moto, LocalStack): `http://127.0.0.1:5055`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Static credentials (emulators), used only together with `secret_access_key`; without
    /// both, the default AWS credential chain applies (environment, profile, web identity,
    /// container or instance role).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Long-poll duration of a consumer waiting for its first message, 1–20 s (each empty
    /// poll is a billed request).
    #[serde(default = "SnsConfig::default_wait_time_secs")]
    pub wait_time_secs: u32,
    /// How long a received, unacknowledged message stays hidden from the other consumers of
    /// its group: the redelivery delay after a consumer crashes. A handler (with its retries)
    /// must finish within it, or the message is delivered a second time.
    #[serde(default = "SnsConfig::default_visibility_timeout_secs")]
    pub visibility_timeout_secs: u32,
    /// How long a group's queue keeps a message nobody consumes (60 s – 14 days).
    #[serde(default = "SnsConfig::default_retention_secs")]
    pub retention_secs: u32,
    /// Timeout of every call but the long poll (which gets `wait_time_secs` more), and of
    /// the reachability check in `connect`.
    #[serde(default = "SnsConfig::default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
}

impl std::fmt::Debug for SnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsConfig")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url.as_deref().map(crate::redact::url))
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("wait_time_secs", &self.wait_time_secs)
            .field("visibility_timeout_secs", &self.visibility_timeout_secs)
            .field("retention_secs", &self.retention_secs)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .finish()
    }
}

impl SnsConfig {
    fn default_wait_time_secs() -> u32 {
        MAX_WAIT_TIME_SECS
    }

    fn default_visibility_timeout_secs() -> u32 {
        30
    }

    fn default_retention_secs() -> u32 {
        *RETENTION_SECS.end()
    }

    fn default_operation_timeout_ms() -> u64 {
        5_000
    }

    /// Settings for `region` with every other field at its default (AWS endpoints, the
    /// default credential chain).
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            wait_time_secs: Self::default_wait_time_secs(),
            visibility_timeout_secs: Self::default_visibility_timeout_secs(),
            retention_secs: Self::default_retention_secs(),
            operation_timeout_ms: Self::default_operation_timeout_ms(),
        }
    }

    /// The timeout of every call but the long poll.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    /// Where the backend talks to, for errors and logs: the endpoint without credentials,
    /// or AWS's regional endpoints.
    pub fn target(&self) -> String {
        match &self.endpoint_url {
            Some(url) => crate::redact::url(url),
            None => format!("AWS {}", self.region),
        }
    }

    /// Checks the values SQS and SNS would reject, naming the key.
    pub(super) fn validate(&self) -> Result<(), BusError> {
        let invalid = |key: &str, why: &str| Err(BusError::Config(format!("messaging.sns.{key}: {why}")));
        if self.region.trim().is_empty() {
            return invalid("region", "must not be empty");
        }
        if !(1..=MAX_WAIT_TIME_SECS).contains(&self.wait_time_secs) {
            return invalid("wait_time_secs", "must be between 1 and 20");
        }
        if self.visibility_timeout_secs > MAX_VISIBILITY_TIMEOUT_SECS {
            return invalid("visibility_timeout_secs", "must be at most 43200 (12 hours)");
        }
        if !RETENTION_SECS.contains(&self.retention_secs) {
            return invalid("retention_secs", "must be between 60 and 1209600 (14 days)");
        }
        if self.operation_timeout_ms == 0 {
            return invalid("operation_timeout_ms", "must be positive");
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return invalid(
                "access_key_id",
                "access_key_id and secret_access_key go together (leave both out for the default AWS credential chain)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> SnsConfig {
        serde_json::from_value(serde_json::json!({
            "region": "us-east-1",
            "endpoint_url": "http://127.0.0.1:5055",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI-very-secret",
        }))
        .expect("valid configuration")
    }

    #[test]
    fn defaults_apply_and_validate() {
        let config = fixture();
        assert_eq!(config.wait_time_secs, 20);
        assert_eq!(config.visibility_timeout_secs, 30);
        assert_eq!(config.retention_secs, 1_209_600);
        config.validate().expect("defaults are valid");
        SnsConfig::new("eu-west-1").validate().expect("defaults are valid");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut config = fixture();
        config.endpoint_url = Some("http://user:hunter2@localhost:4566/".into());
        let debug = format!("{config:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>") && debug.contains("AKIDEXAMPLE"), "{debug}");
        assert_eq!(config.target(), "http://localhost:4566/");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<SnsConfig>(serde_json::json!({ "region": "x", "queue": "y" }))
            .expect_err("unknown key");
        assert!(err.to_string().contains("queue"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        type Breaker = fn(&mut SnsConfig);
        let cases: [(&str, Breaker); 5] = [
            ("wait_time_secs", |c| c.wait_time_secs = 0),
            ("wait_time_secs", |c| c.wait_time_secs = 21),
            ("visibility_timeout_secs", |c| c.visibility_timeout_secs = 43_201),
            ("retention_secs", |c| c.retention_secs = 59),
            ("access_key_id", |c| c.secret_access_key = None),
        ];
        for (key, break_it) in cases {
            let mut config = fixture();
            break_it(&mut config);
            let err = config.validate().expect_err(key);
            assert!(matches!(&err, BusError::Config(m) if m.contains(&format!("messaging.sns.{key}"))), "{key}: {err}");
            assert!(!err.to_string().contains("very-secret"), "{err}");
        }
    }

    #[test]
    fn urls_lose_their_credentials_only() {
        assert_eq!(crate::redact::url("http://127.0.0.1:5055"), "http://127.0.0.1:5055");
        assert_eq!(crate::redact::url("https://a:b@sns.example/x@y"), "https://sns.example/x@y");
        assert_eq!(crate::redact::url("not a url"), "not a url");
    }
}
