//! Bus names → SNS topic, SQS queue and FIFO message-group names (see the module docs).

use uuid::Uuid;

use crate::Envelope;

/// Suffix every FIFO topic and queue name must end with.
const FIFO: &str = ".fifo";
/// Longest SNS topic name, `.fifo` included.
const MAX_TOPIC: usize = 256;
/// Longest SQS queue name, `.fifo` included.
const MAX_QUEUE: usize = 80;
/// Longest FIFO message group id.
const MAX_GROUP_ID: usize = 128;
/// Length of `-<hash>`.
const HASH_PART: usize = 17;
/// Readable characters kept of the channel and of the group in a group queue's name (28).
const QUEUE_PART: usize = (MAX_QUEUE - FIFO.len() - HASH_PART - "--".len()) / 2;
/// Readable characters kept of the channel in a private queue's name (42).
const PRIVATE_PART: usize = MAX_QUEUE - FIFO.len() - "-".len() - 32;

/// `name` in the characters SNS and SQS allow (`A-Z a-z 0-9 _ -`): dots become `_`, any
/// other character `-`. Readable, not unique: a hash of the original goes next to it.
fn readable(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            '.' => '_',
            _ => '-',
        })
        .collect()
}

/// The last `n` characters of an ASCII string (the distinguishing end of a prefixed name).
fn tail(s: &str, n: usize) -> &str {
    &s[s.len().saturating_sub(n)..]
}

/// 64-bit FNV-1a of the parts, each preceded by its length so that no two part lists hash
/// the same input: stable across builds and platforms, unlike `std`'s hasher.
fn hash(parts: &[&str]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.as_bytes()) {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:016x}")
}

/// The FIFO topic of `channel`: `<readable channel>-<hash of channel>.fifo`.
pub(super) fn topic(channel: &str) -> String {
    let room = MAX_TOPIC - FIFO.len() - HASH_PART;
    format!("{}-{}{FIFO}", tail(&readable(channel), room), hash(&[channel]))
}

/// The durable queue of `group` on `channel`:
/// `<readable channel tail>--<readable group tail>-<hash of both>.fifo` (at most 80 characters).
pub(super) fn group_queue(channel: &str, group: &str) -> String {
    format!(
        "{}--{}-{}{FIFO}",
        tail(&readable(channel), QUEUE_PART),
        tail(&readable(group), QUEUE_PART),
        hash(&[channel, group])
    )
}

/// A fresh private queue on `channel`: `<readable channel tail>-<random v7 uuid>.fifo`.
pub(super) fn private_queue(channel: &str) -> String {
    format!("{}-{}{FIFO}", tail(&readable(channel), PRIVATE_PART), Uuid::now_v7().simple())
}

/// The FIFO message group of `envelope`: its partition key, so that one key is delivered in
/// order, one message at a time per group; a key SQS would refuse (too long, characters
/// other than printable ASCII) is replaced by `key-<hash>`. Without a key, the envelope id:
/// unkeyed messages promise no order, and a shared group would let only one consumer of a
/// group work at a time.
pub(super) fn message_group(envelope: &Envelope) -> String {
    match &envelope.partition_key {
        Some(key) if is_group_id(key) => key.clone(),
        Some(key) => format!("key-{}", hash(&[key])),
        None => envelope.id.to_string(),
    }
}

fn is_group_id(key: &str) -> bool {
    (1..=MAX_GROUP_ID).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn allowed(name: &str, max: usize) {
        assert!(name.len() <= max, "{name} is {} characters", name.len());
        let stem = name.strip_suffix(FIFO).unwrap_or_else(|| panic!("{name} lacks .fifo"));
        assert!(stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{name}");
    }

    #[test]
    fn names_are_valid_deterministic_and_distinct() {
        let prefix = format!("t{}.", Uuid::now_v7().simple());
        let long = "x".repeat(300);
        let channels = [
            format!("{prefix}events"),
            format!("{prefix}events.dlq"),
            format!("{prefix}replies.order.{}", Uuid::now_v7().simple()),
            "a.b".to_owned(),
            "a_b".to_owned(),
            "a-b".to_owned(),
            "ünïcode channel/1".to_owned(),
            long.clone(),
            format!("{long}y"),
        ];
        let groups = [format!("{prefix}workers"), format!("{prefix}dead-letters"), "g".to_owned(), long.clone()];
        let mut topics = HashSet::new();
        let mut queues = HashSet::new();
        for channel in &channels {
            let t = topic(channel);
            allowed(&t, MAX_TOPIC);
            assert_eq!(t, topic(channel), "deterministic");
            assert!(topics.insert(t), "topic of {channel} collides");
            for group in &groups {
                let q = group_queue(channel, group);
                allowed(&q, MAX_QUEUE);
                assert_eq!(q, group_queue(channel, group), "deterministic");
                assert!(queues.insert(q), "queue of {channel}/{group} collides");
            }
            let p = private_queue(channel);
            allowed(&p, MAX_QUEUE);
            assert!(queues.insert(p), "private queue of {channel} collides");
        }
        // The split between channel and group is part of the hash.
        assert_ne!(group_queue("a.b", "c"), group_queue("a", "b.c"));
    }

    #[test]
    fn names_stay_readable() {
        let q = group_queue("t0199.events", "t0199.group-a");
        assert!(q.starts_with("t0199_events--t0199_group-a-"), "{q}");
        assert!(topic("t0199.events.dlq").starts_with("t0199_events_dlq-"));
    }

    #[test]
    fn message_groups_follow_the_partition_key() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &crate::MessageContext::default(),
        )
        .expect("encode");
        env.partition_key = Some("order-42".into());
        assert_eq!(message_group(&env), "order-42");
        env.partition_key = Some("with space".into());
        let hashed = message_group(&env);
        assert!(hashed.starts_with("key-") && is_group_id(&hashed), "{hashed}");
        env.partition_key = Some("k".repeat(129));
        assert!(is_group_id(&message_group(&env)));
        env.partition_key = None;
        assert_eq!(message_group(&env), env.id.to_string());
    }
}
