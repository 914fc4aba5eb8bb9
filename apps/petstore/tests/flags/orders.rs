//! The order flags act through the whole saga, on PostgreSQL: with `express_order_processing`
//! on for a customer, their order is an express order and its delivery is booked for the next
//! day (off: after `delivery_days`); with `pricing_experiment` serving `discount_10`, the order
//! records that arm and charges — and the payment service charges — 90 % of the list price.

mod support;

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::stack::Stack;
use uuid::Uuid;

/// The project's flags with `flag` served as `variant`.
fn flags_with(flag: &str, variant: &str) -> String {
    let mut doc: Value = serde_json::from_str(include_str!("../../../config/flags.json")).expect("config/flags.json");
    doc["flags"][flag]["defaultVariant"] = json!(variant);
    doc.to_string()
}

/// The project's flags with `flag` served as `variant` to everyone: its targeting removed.
fn flags_for_everyone(flag: &str, variant: &str) -> String {
    let mut doc: Value = serde_json::from_str(&flags_with(flag, variant)).expect("flags");
    doc["flags"][flag].as_object_mut().expect("a flag").remove("targeting");
    doc.to_string()
}

/// A fresh directory for a flag file.
fn flag_file() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("flags.json");
    (dir, file)
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().and_then(|s| Decimal::from_str(s).ok()).unwrap_or_else(|| panic!("not a decimal: {value}"))
}

/// The order as its customer sees it, once confirmed.
async fn confirmed(stack: &Stack, customer: &str, order_id: &str) -> Value {
    let (status, order) = stack.get("order", &format!("/orders/{order_id}"), &stack.customer(customer)).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "confirmed", "{order}");
    order
}

/// The booked delivery of an order: whether it is express, and how many days after the day
/// it was booked (UTC, as the delivery service counts) it is expected.
async fn delivery(stack: &Stack, order_id: &str) -> (bool, i32) {
    sqlx::query_as(
        "SELECT express, estimated_delivery - (created_at AT TIME ZONE 'UTC')::date \
         FROM delivery.deliveries WHERE order_id = $1 AND status = 'scheduled'",
    )
    .bind(Uuid::parse_str(order_id).expect("an order id"))
    .fetch_one(&stack.db)
    .await
    .expect("a scheduled delivery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_express_order_is_delivered_the_next_day_and_a_standard_one_after_the_delivery_days() {
    let (dir, file) = flag_file();
    std::fs::write(&file, flags_with("express_order_processing", "on")).expect("write flags");
    let stack = Stack::start(&format!("flags: {{ file: \"{}\" }}", file.display())).await;
    let delivery_days = i32::try_from(stack.ctx.settings.services.delivery.delivery_days).expect("days");
    assert!(delivery_days > 1, "the default transit is longer than express: {delivery_days}");

    let order_id = stack.completed_order("hasty", "beagle-008").await;
    let order = confirmed(&stack, "hasty", &order_id).await;
    assert_eq!(order["express"], true, "{order}");
    assert_eq!(delivery(&stack, &order_id).await, (true, 1), "booked for tomorrow");
    // The saga carried the decision from the order to the delivery.
    let (_, saga) = stack.get("orchestrator", &format!("/orders/{order_id}/status"), &stack.customer("hasty")).await;
    assert_eq!(saga["order"]["express"], true, "{saga}");

    std::fs::write(&file, flags_with("express_order_processing", "off")).expect("edit flags");
    stack.ctx.flags.reload().expect("the edit is valid");
    let order_id = stack.completed_order("patient", "koi-022").await;
    let order = confirmed(&stack, "patient", &order_id).await;
    assert_eq!(order["express"], false, "{order}");
    assert_eq!(delivery(&stack, &order_id).await, (false, delivery_days), "booked after the delivery days");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discount_arm_charges_ninety_percent_of_the_list_price_and_the_payment_charges_the_same() {
    let (dir, file) = flag_file();
    std::fs::write(&file, flags_for_everyone("pricing_experiment", "discount_10")).expect("write flags");
    let stack = Stack::start(&format!("flags: {{ file: \"{}\" }}", file.display())).await;
    let pet = "golden-retriever-001";
    let list: Decimal = sqlx::query_scalar("SELECT price FROM inventory.pets WHERE pet_id = $1")
        .bind(pet)
        .fetch_one(&stack.db)
        .await
        .expect("the list price");
    let expected = (list * Decimal::new(90, 2)).round_dp(2);
    assert_ne!(expected, list, "a discount to see");

    let order_id = stack.completed_order("thrifty", pet).await;
    let order = confirmed(&stack, "thrifty", &order_id).await;
    assert_eq!(order["pricing_arm"], "discount_10", "{order}");
    assert_eq!(decimal(&order["amount"]), expected, "{order}");
    assert_eq!(order["express"], false, "{order}");

    let charged: Decimal =
        sqlx::query_scalar("SELECT amount FROM payment.payments WHERE order_id = $1 AND status = 'charged'")
            .bind(Uuid::parse_str(&order_id).expect("an order id"))
            .fetch_one(&stack.db)
            .await
            .expect("a charged payment");
    assert_eq!(charged, expected, "the payment charged the order's amount");
    let _ = std::fs::remove_dir_all(&dir);
}
