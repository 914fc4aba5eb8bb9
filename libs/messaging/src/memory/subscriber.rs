use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;

use super::{Group, lock};
use crate::{BusError, Consumer, Delivery, Envelope, backend::Receipt};

/// One consumer of a memory group.
pub(super) struct MemoryConsumer {
    group: Arc<Group>,
    id: u64,
    /// Taken but not yet acknowledged (handed out, or still in `ready`): given back to the
    /// group on close.
    unacked: HashMap<u64, Arc<Envelope>>,
    /// Taken but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
}

impl MemoryConsumer {
    pub(super) fn new(group: Arc<Group>) -> Self {
        let id = {
            let mut state = lock(&group.state);
            state.next_consumer += 1;
            state.next_consumer
        };
        Self { group, id, unacked: HashMap::new(), ready: VecDeque::new() }
    }

    /// Takes messages whose key is free or already held by this consumer into `ready`, until
    /// it holds `max`.
    fn take(&mut self, max: usize) {
        let mut state = lock(&self.group.state);
        let mut i = 0;
        while self.ready.len() < max && i < state.pending.len() {
            let free = match state.pending[i].1.partition_key.as_deref().and_then(|k| state.held_keys.get(k)) {
                Some((holder, _)) => *holder == self.id,
                None => true,
            };
            if !free {
                i += 1;
                continue;
            }
            let Some((seq, envelope)) = state.pending.remove(i) else { break };
            if let Some(key) = envelope.partition_key.as_deref() {
                match state.held_keys.get_mut(key) {
                    Some(held) => held.1 += 1,
                    None => {
                        state.held_keys.insert(key.to_owned(), (self.id, 1));
                    }
                }
            }
            self.unacked.insert(seq, envelope.clone());
            state.unacked += 1;
            self.ready.push_back(Delivery { envelope: (*envelope).clone(), receipt: Receipt::Memory { seq } });
        }
        // Others may be able to take what this consumer skipped or left.
        if !state.pending.is_empty() && self.ready.len() >= max {
            self.group.notify.notify_one();
        }
    }

    fn release(&mut self, seq: u64) -> Option<Arc<Envelope>> {
        let envelope = self.unacked.remove(&seq)?;
        let mut state = lock(&self.group.state);
        state.unacked = state.unacked.saturating_sub(1);
        if let Some(key) = &envelope.partition_key
            && let Some(entry) = state.held_keys.get_mut(key)
        {
            entry.1 -= 1;
            if entry.1 == 0 {
                state.held_keys.remove(key);
                // A message of this key may be waiting for another consumer.
                self.group.notify.notify_one();
            }
        }
        Some(envelope)
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        let group = self.group.clone();
        // What is taken goes to `self.ready` at once, not into a local: a call dropped while
        // it waits leaves it there for the next one.
        loop {
            let notified = group.notify.notified();
            self.take(max);
            if !self.ready.is_empty() {
                break;
            }
            notified.await;
        }
        if self.ready.len() < max && !max_wait.is_zero() {
            let deadline = tokio::time::Instant::now() + max_wait;
            while self.ready.len() < max {
                let notified = group.notify.notified();
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    break;
                }
                self.take(max);
            }
        }
        let n = max.min(self.ready.len());
        Ok(self.ready.drain(..n).collect())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        if let &Receipt::Memory { seq } = &delivery.receipt {
            self.release(seq);
        }
        Ok(())
    }

    async fn close(self: Box<Self>) {
        // Dropping gives everything back (see `Drop`).
        drop(self);
    }
}

impl Drop for MemoryConsumer {
    /// A consumer closed, or dropped without closing (its task killed), gives what it took
    /// and did not acknowledge back to the group, in order, for the group's other consumers.
    fn drop(&mut self) {
        // What is in `ready` is in `unacked` too: given back with the rest.
        self.ready.clear();
        let mut seqs: Vec<u64> = self.unacked.keys().copied().collect();
        seqs.sort_unstable();
        let returned: Vec<(u64, Arc<Envelope>)> =
            seqs.into_iter().filter_map(|seq| self.release(seq).map(|e| (seq, e))).collect();
        let mut state = lock(&self.group.state);
        for (seq, envelope) in returned.into_iter().rev() {
            state.pending.push_front((seq, envelope));
        }
        if !state.pending.is_empty() {
            self.group.notify.notify_one();
        }
    }
}
