//! What a bus leaves behind when it closes.

#![cfg(feature = "memory")]

use std::{sync::Arc, time::Duration};

use contracts::inventory::{GetPetStatus, PetStatus};
use messaging::{BackendKind, Backends, Bus, Envelope, MessageContext, MessagingConfig, memory::MemoryBackend};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn closing_a_bus_deletes_its_private_reply_channel() {
    let config: MessagingConfig = serde_json::from_value(serde_json::json!({
        "default_backend": "memory",
        "channels": { "queries": { "pattern": "request_response" } },
    }))
    .expect("config");
    let memory = Arc::new(MemoryBackend::new(100));
    let backends = Backends::default().with(BackendKind::Memory, memory.clone());
    let responder = Bus::new(&backends, &config, "responder", CancellationToken::new()).await.expect("bus");
    let requester = Bus::new(&backends, &config, "requester", CancellationToken::new()).await.expect("bus");
    let source = responder.source().to_owned();
    responder
        .serve("queries", "responder", move |req: Envelope| {
            let source = source.clone();
            async move {
                let q = req.decode::<GetPetStatus>()?;
                Ok(Envelope::from_message(
                    &source,
                    &PetStatus { pet_id: q.pet_id, pet: None },
                    &MessageContext::caused_by(&req),
                )?)
            }
        })
        .await
        .expect("serve");
    let query = Envelope::from_message("/test", &GetPetStatus { pet_id: "p".into() }, &MessageContext::default())
        .expect("encode");
    requester.request("queries", query, Duration::from_secs(5)).await.expect("a reply");
    let replies = |names: Vec<String>| names.into_iter().filter(|n| n.starts_with("replies.requester.")).count();
    assert_eq!(replies(memory.channel_names()), 1, "the requester has a reply channel while open");

    requester.close().await;
    assert_eq!(replies(memory.channel_names()), 0, "and none once closed");
    responder.close().await;
}
