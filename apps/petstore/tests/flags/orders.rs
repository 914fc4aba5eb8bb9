//! The order flags act through the whole saga, on PostgreSQL: with `express_order_processing`
//! on for a customer, their order is an express order and its delivery is booked for the next
//! day (off: after `delivery_days`); with `pricing_experiment` serving `discount_10`, the order
//! records that arm and charges — and the payment service charges — 90 % of the list price;
//! with the project's rollout, what a customer sees in the catalog is what their order charges.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use crate::{FlagFile, flags_for_everyone, flags_with, project_flags, support::stack::Stack};

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
    let file = FlagFile::new(&flags_with("express_order_processing", "on"));
    let stack = Stack::start(&file.setting()).await;
    let delivery_days = i32::try_from(stack.ctx.settings.services.delivery.delivery_days).expect("days");
    assert!(delivery_days > 1, "the default transit is longer than express: {delivery_days}");

    let order_id = stack.completed_order("hasty", "beagle-008").await;
    let order = confirmed(&stack, "hasty", &order_id).await;
    assert_eq!(order["express"], true, "{order}");
    assert_eq!(delivery(&stack, &order_id).await, (true, 1), "booked for tomorrow");
    // The saga carried the decision from the order to the delivery.
    let (_, saga) = stack.get("orchestrator", &format!("/orders/{order_id}/status"), &stack.customer("hasty")).await;
    assert_eq!(saga["order"]["express"], true, "{saga}");

    file.write(&flags_with("express_order_processing", "off"));
    stack.ctx.flags.reload().expect("the edit is valid");
    let order_id = stack.completed_order("patient", "koi-022").await;
    let order = confirmed(&stack, "patient", &order_id).await;
    assert_eq!(order["express"], false, "{order}");
    assert_eq!(delivery(&stack, &order_id).await, (false, delivery_days), "booked after the delivery days");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discount_arm_charges_ninety_percent_of_the_list_price_and_the_payment_charges_the_same() {
    let file = FlagFile::new(&flags_for_everyone("pricing_experiment", "discount_10"));
    let stack = Stack::start(&file.setting()).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_price_a_customer_sees_in_the_catalog_is_what_their_order_charges() {
    let stack = Stack::start("").await;
    // Customers of every arm of the project's rollout, found as the services bucket them.
    let flags = kit::flags::Flags::from_json(&project_flags().to_string()).expect("project flags");
    let mut customers = std::collections::BTreeMap::new();
    for n in 0..200 {
        let id = format!("shopper-{n}");
        let context = kit::flags::EvaluationContext::for_key(&id);
        let arm = flags.evaluate("pricing_experiment", &context).expect("evaluates").variant;
        customers.entry(arm).or_insert(id);
    }
    assert_eq!(customers.len(), 3, "all three arms: {customers:?}");
    let pets = ["golden-retriever-001", "beagle-008", "koi-022"];
    for ((arm, customer), pet) in customers.iter().zip(pets) {
        let token = stack.customer(customer);
        let (status, headers, shown) =
            stack.send(stack.http.get(stack.url("inventory", &format!("/pets/{pet}"))).bearer_auth(&token)).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(headers.get("x-pricing-arm").and_then(|v| v.to_str().ok()), Some(arm.as_str()), "{customer}");
        let (_, _, anonymous) = stack.send(stack.http.get(stack.url("inventory", &format!("/pets/{pet}")))).await;
        if arm != "control" {
            assert_ne!(shown["price"], anonymous["price"], "{arm} sees its own price: {shown} vs {anonymous}");
        }

        let order_id = stack.completed_order(customer, pet).await;
        let order = confirmed(&stack, customer, &order_id).await;
        assert_eq!(order["pricing_arm"], arm.as_str(), "{order}");
        assert_eq!(decimal(&order["amount"]), decimal(&shown["price"]), "{arm}: charged what was shown: {order}");
        // Sticky: the same customer sees the same arm again.
        let (_, headers, _) =
            stack.send(stack.http.get(stack.url("inventory", "/pets?limit=1")).bearer_auth(&token)).await;
        assert_eq!(headers.get("x-pricing-arm").and_then(|v| v.to_str().ok()), Some(arm.as_str()));
    }
}
