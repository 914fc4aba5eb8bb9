//! Helpers shared by the backends' own tests.

use std::time::Duration;

use crate::{Consumer, Delivery};

/// Receives (without acknowledging) until `count` deliveries are in hand.
pub(crate) async fn receive_n(consumer: &mut Box<dyn Consumer>, count: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < count {
        let batch = tokio::time::timeout_at(deadline, consumer.receive(count - got.len(), Duration::ZERO))
            .await
            .unwrap_or_else(|_| panic!("{count} messages within 10 s, got {}", got.len()))
            .expect("receive");
        got.extend(batch);
    }
    got
}
