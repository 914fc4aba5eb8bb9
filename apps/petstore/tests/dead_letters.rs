//! Dead letters end to end, on the six-process cluster (PostgreSQL, Redis, Kafka): a command
//! the payment service cannot handle is dead-lettered by it, collected by the orchestrator,
//! listed by `GET /admin/dlq` and by `petstore dlq list`, replayed once by `petstore dlq
//! replay` (a second replay sends nothing), and — still unhandleable — dead-lettered again.

mod support;

use std::time::Duration;

use contracts::{channels, inventory::GetPetStatus};
use messaging::{Envelope, MessageContext};
use serde_json::Value;
use support::Cluster;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(90);

/// Runs `petstore dlq <args>` with an admin token in `PETSTORE_TOKEN`; its exit success,
/// stdout and stderr.
async fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_petstore"))
        .arg("dlq")
        .args(args)
        .env_remove("PETSTORE_CONFIG")
        .env("PETSTORE_TOKEN", cluster.token("e2e-operator", &["admin"]))
        .output()
        .await
        .expect("run petstore dlq");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// The orchestrator's `GET /admin/dlq/{id}`: status and body.
async fn letter(cluster: &Cluster, id: Uuid) -> (u16, Value) {
    cluster.get_admin_json("orchestrator", &format!("/admin/dlq/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_payment_service_rejects_is_listed_and_replayed_once_from_the_cli() {
    let mut cluster = Cluster::start().await;
    let (bus, ctx) = cluster.bus("e2e-operator").await;

    // Well-formed, but no command the payment service knows: it gives up at once (fatal).
    let command = Envelope::from_message(
        bus.source(),
        &GetPetStatus { pet_id: "golden-retriever-001".into() },
        &MessageContext::correlated("dlq-e2e"),
    )
    .expect("envelope");
    let id = command.id;
    bus.send(channels::PAYMENT_COMMANDS, &command).await.expect("send");

    let listed = cluster
        .eventually("the dead letter in GET /admin/dlq", PATIENCE, || async {
            let (status, page) = cluster.get_admin_json("orchestrator", "/admin/dlq?channel=payment-commands").await;
            let items = page["items"].as_array().filter(|_| status == 200)?;
            items.iter().find(|l| l["id"] == id.to_string()).cloned()
        })
        .await;
    assert_eq!(listed["group"], "payment", "{listed}");
    assert_eq!(listed["error"], "payment does not handle petstore.inventory.get-pet-status.v1", "{listed}");
    assert_eq!(listed["attempts"], 1, "{listed}");
    assert_eq!(listed["message_type"], "petstore.inventory.get-pet-status.v1");
    assert_eq!(listed["message"]["correlationid"], "dlq-e2e");
    assert!(listed["replayed_at"].is_null(), "{listed}");
    // The gauge is refreshed a moment after the letter is stored.
    cluster.wait_for_metric("orchestrator", "petstore_dead_letters{channel=\"payment-commands\"} 1", PATIENCE).await;

    let url = cluster.url("orchestrator", "");
    let (ok, out, err) = cli(&cluster, &["list", "--url", &url, "--channel", "payment-commands"]).await;
    assert!(ok, "petstore dlq list failed: {err}");
    let row = out.lines().find(|l| l.starts_with(&id.to_string())).unwrap_or_else(|| panic!("{id} not listed:\n{out}"));
    assert!(row.contains("payment-commands") && row.contains("payment does not handle"), "{out}");

    // The payment service is down while the letter is replayed, so that the replay cannot
    // fail again before the second request looks at it.
    cluster.kill("payment").await;
    let id_text = id.to_string();
    let (ok, out, err) = cli(&cluster, &["replay", &id_text, "--url", &url]).await;
    assert!(ok && out.starts_with(&format!("replayed {id}")), "first replay: {out}{err}");
    let (status, replayed) = letter(&cluster, id).await;
    assert_eq!((status, &replayed["replay_count"]), (200, &Value::from(1)), "{replayed}");
    assert!(replayed["replayed_at"].is_string(), "{replayed}");
    let (ok, out, err) = cli(&cluster, &["replay", &id_text, "--url", &url]).await;
    assert!(ok && out.contains("already replayed"), "second replay: {out}{err}");
    let (_, unchanged) = letter(&cluster, id).await;
    assert_eq!((&unchanged["replayed_at"], &unchanged["replay_count"]), (&replayed["replayed_at"], &Value::from(1)));

    // Back, the payment service gets the replayed command, still cannot handle it, and the
    // letter waits again.
    cluster.restart("payment").await;
    let again = cluster
        .eventually("dead-lettered again after the replay", PATIENCE, || async {
            let (_, current) = letter(&cluster, id).await;
            current["replayed_at"].is_null().then_some(current)
        })
        .await;
    assert_eq!(again["replay_count"], 1, "{again}");
    assert_ne!(again["dead_lettered_at"], listed["dead_lettered_at"], "a new dead-lettering: {again}");

    // A letter that does not exist: a clear error and a failing exit status.
    let unknown = Uuid::now_v7().to_string();
    let (ok, _, err) = cli(&cluster, &["replay", &unknown, "--url", &url]).await;
    assert!(!ok && err.contains(&format!("404 Not Found: no dead letter {unknown}")), "{err}");

    ctx.shutdown.cancel();
    bus.close().await;
}
