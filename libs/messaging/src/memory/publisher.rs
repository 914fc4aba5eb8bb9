use std::sync::Arc;

use super::{Channel, lock};
use crate::Envelope;

impl Channel {
    /// Appends to the log and to every group's queue, waking one waiting consumer per group.
    pub(super) fn publish(&self, envelope: Arc<Envelope>, retention: usize) {
        let mut state = lock(&self.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.log.push_back((seq, envelope.clone()));
        while state.log.len() > retention {
            state.log.pop_front();
        }
        for group in state.groups.values() {
            lock(&group.state).pending.push_back((seq, envelope.clone()));
            group.notify.notify_one();
        }
    }
}
