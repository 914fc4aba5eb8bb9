use std::time::Duration;

use super::*;
use crate::{Delivery, MessageContext};

fn envelope(key: &str, n: u32) -> Envelope {
    let mut env = Envelope::from_message(
        "/test",
        &contracts::inventory::GetPetStatus { pet_id: format!("{key}-{n}") },
        &MessageContext::default(),
    )
    .expect("encode");
    env.partition_key = Some(key.to_owned());
    env
}

fn seq(d: &Delivery) -> String {
    d.envelope.decode::<contracts::inventory::GetPetStatus>().expect("decode").pet_id
}

#[tokio::test]
async fn a_key_held_by_one_consumer_is_not_given_to_another() {
    let backend = MemoryBackend::new(100);
    let opts = || SubscribeOptions { group: Some("g".into()), start: StartFrom::Earliest };
    let mut a = backend.subscribe("c", opts()).await.expect("subscribe");
    let mut b = backend.subscribe("c", opts()).await.expect("subscribe");
    backend.publish("c", &envelope("k", 1)).await.expect("publish");
    backend.publish("c", &envelope("k", 2)).await.expect("publish");
    backend.publish("c", &envelope("other", 1)).await.expect("publish");

    let first = a.receive(1, Duration::ZERO).await.expect("receive");
    assert_eq!(seq(&first[0]), "k-1");
    // b may not take k-2 while a holds key k: it gets the other key.
    let second = b.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(second.iter().map(seq).collect::<Vec<_>>(), ["other-1"]);
    a.ack(&first[0]).await.expect("ack");
    let third = b.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(third.iter().map(seq).collect::<Vec<_>>(), ["k-2"]);
}

#[tokio::test]
async fn unacknowledged_messages_return_to_the_group_in_order_on_close() {
    let backend = MemoryBackend::new(100);
    let opts = || SubscribeOptions { group: Some("g".into()), start: StartFrom::Earliest };
    let mut a = backend.subscribe("c", opts()).await.expect("subscribe");
    for n in 1..=3 {
        backend.publish("c", &envelope("k", n)).await.expect("publish");
    }
    let taken = a.receive(2, Duration::ZERO).await.expect("receive");
    assert_eq!(taken.len(), 2);
    a.close().await;
    let mut b = backend.subscribe("c", opts()).await.expect("subscribe");
    let again = b.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(again.iter().map(seq).collect::<Vec<_>>(), ["k-1", "k-2", "k-3"]);
}

#[tokio::test]
async fn retention_bounds_what_a_late_group_replays() {
    let backend = MemoryBackend::new(2);
    for n in 1..=3 {
        backend.publish("c", &envelope("k", n)).await.expect("publish");
    }
    let mut late = backend
        .subscribe("c", SubscribeOptions { group: Some("late".into()), start: StartFrom::Earliest })
        .await
        .expect("subscribe");
    let got = late.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(got.iter().map(seq).collect::<Vec<_>>(), ["k-2", "k-3"]);
}

#[tokio::test]
async fn the_backlog_counts_taken_messages_until_they_are_acknowledged() {
    let backend = MemoryBackend::new(100);
    let backlog = |group: &'static str| {
        let backend = &backend;
        async move { backend.backlog("c", group).await.expect("backlog") }
    };
    assert_eq!(backlog("g").await, Some(0), "a channel that does not exist holds nothing");
    assert!(backend.channel_names().is_empty(), "measuring created nothing");

    let opts = SubscribeOptions { group: Some("g".into()), start: StartFrom::Earliest };
    let mut a = backend.subscribe("c", opts.clone()).await.expect("subscribe");
    for n in 1..=3 {
        backend.publish("c", &envelope(&format!("k{n}"), n)).await.expect("publish");
    }
    assert_eq!(backlog("g").await, Some(3));
    assert_eq!(backlog("not-joined").await, Some(3), "a group that has not joined would start with the log");

    let taken = a.receive(2, Duration::ZERO).await.expect("receive");
    assert_eq!(backlog("g").await, Some(3), "taken but unacknowledged is still backlog");
    a.ack(&taken[0]).await.expect("ack");
    assert_eq!(backlog("g").await, Some(2));
    a.close().await;
    assert_eq!(backlog("g").await, Some(2), "what a closing consumer gives back stays counted once");

    let mut b = backend.subscribe("c", opts).await.expect("subscribe");
    for d in b.receive(10, Duration::ZERO).await.expect("receive") {
        b.ack(&d).await.expect("ack");
    }
    assert_eq!(backlog("g").await, Some(0));
}
