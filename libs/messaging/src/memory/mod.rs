//! In-process backend: the all-in-one mode's bus, with no external server.
//!
//! Each channel is a bounded log (the last `retention` messages, for groups that join later)
//! plus, per consumer group, a queue of messages the group has not taken yet. Consumers of one
//! group compete for that queue; a key taken by one consumer stays with it until its messages
//! are acknowledged, which keeps per-key order across competing consumers. Nothing survives
//! the process: durable only as long as it runs.

mod publisher;
mod subscriber;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::sync::lock;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, StartFrom, SubscribeOptions};

const NAME: &str = "memory";

/// The in-process backend. Clone-free sharing: wrap it in an `Arc` and hand it to every
/// service's bus.
pub struct MemoryBackend {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    retention: usize,
}

struct Channel {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    log: VecDeque<(u64, Arc<Envelope>)>,
    next_seq: u64,
    groups: HashMap<String, Arc<Group>>,
}

struct Group {
    state: Mutex<GroupState>,
    notify: Notify,
}

#[derive(Default)]
struct GroupState {
    pending: VecDeque<(u64, Arc<Envelope>)>,
    /// Messages taken by a consumer and not acknowledged yet (part of the backlog).
    unacked: usize,
    /// Keys held by a consumer (id) with how many of its messages are unacknowledged.
    held_keys: HashMap<String, (u64, usize)>,
    next_consumer: u64,
}

impl MemoryBackend {
    /// A backend keeping the last `retention` messages of each channel.
    pub fn new(retention: usize) -> Self {
        Self { channels: Mutex::new(HashMap::new()), retention: retention.max(1) }
    }

    /// The channels that exist, sorted (for operators and tests).
    pub fn channel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.channels).keys().cloned().collect();
        names.sort();
        names
    }

    fn channel(&self, name: &str) -> Arc<Channel> {
        let mut channels = lock(&self.channels);
        channels
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    state: Mutex::new(ChannelState { log: VecDeque::new(), next_seq: 0, groups: HashMap::new() }),
                })
            })
            .clone()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: Pattern::ALL, ordering_per_key: true, durable: false, replay: true, backlog: true }
    }

    async fn declare(&self, channel: &str, _partitions: u32) -> Result<(), BusError> {
        self.channel(channel);
        Ok(())
    }

    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        lock(&self.channels).remove(channel);
        Ok(())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.channel(channel).publish(Arc::new(envelope.clone()), self.retention);
        Ok(())
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        let channel = self.channel(channel);
        let group = channel.join(options.group, options.start);
        Ok(Box::new(subscriber::MemoryConsumer::new(group)))
    }

    async fn health(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// The group's queue plus what its consumers hold unacknowledged; for a group that has
    /// not joined, the retained log (what it would start with).
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        let Some(channel) = lock(&self.channels).get(channel).cloned() else {
            return Ok(Some(0));
        };
        let state = lock(&channel.state);
        let count = match state.groups.get(group) {
            Some(group) => {
                let group = lock(&group.state);
                group.pending.len() + group.unacked
            }
            None => state.log.len(),
        };
        Ok(Some(count as u64))
    }
}

impl Channel {
    /// The group's queue, created (from the retained log or empty) on first join; a private
    /// subscription gets a fresh anonymous group.
    fn join(&self, group: Option<String>, start: StartFrom) -> Arc<Group> {
        let mut state = lock(&self.state);
        let name = group.unwrap_or_else(|| format!("private-{}", uuid::Uuid::now_v7()));
        if let Some(existing) = state.groups.get(&name) {
            return existing.clone();
        }
        let pending = match start {
            StartFrom::Earliest => state.log.clone(),
            StartFrom::Latest => VecDeque::new(),
            StartFrom::Time(t) => state.log.iter().filter(|(_, e)| e.time >= t).cloned().collect(),
        };
        let group = Arc::new(Group {
            state: Mutex::new(GroupState { pending, ..GroupState::default() }),
            notify: Notify::new(),
        });
        state.groups.insert(name, group.clone());
        group
    }
}

#[cfg(test)]
mod tests;
