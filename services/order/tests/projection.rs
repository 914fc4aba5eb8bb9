//! The order projection is derived data: it can be thrown away and rebuilt from the event
//! log, on PostgreSQL and in memory alike.

use contracts::{
    Address, PaymentMethod, SagaRef,
    order::{OrderDetails, RejectOrder},
    pricing::PricingArm,
};
use messaging::{Envelope, MessageContext};
use order::{Order, OrderEvent, OrderStatus, OrderStore, Placement};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A `Placed` event for `customer`, priced by `pricing_arm`.
fn placed(customer: &str, pricing_arm: PricingArm, express: bool) -> OrderEvent {
    OrderEvent::Placed {
        saga_id: Uuid::now_v7(),
        order: OrderDetails {
            order_id: Uuid::now_v7(),
            customer_id: customer.into(),
            pet_id: "goldfish-004".into(),
            amount: pricing_arm.price(Decimal::new(2500, 2)),
            currency: "USD".into(),
            shipping_address: Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "1".into(),
                country: "US".into(),
            },
            payment_method: PaymentMethod::CreditCard,
            special_instructions: None,
            pricing_arm,
            express,
        },
    }
}

async fn place(store: &OrderStore, customer: &str, pricing_arm: PricingArm, express: bool) -> Order {
    let event = placed(customer, pricing_arm, express);
    match store.place(event, &MessageContext::correlated("test"), None, None).await.expect("place") {
        Placement::Placed(order) => order,
        other => panic!("an order without a key is always placed, got {other:?}"),
    }
}

async fn rebuild_gives_back_the_same_orders(store: OrderStore, wipe: impl AsyncFnOnce()) {
    let ctx = MessageContext::correlated("test");
    let kept = place(&store, "a", PricingArm::Discount10, true).await;
    let cancelled = place(&store, "b", PricingArm::Control, false).await;
    let reject = RejectOrder {
        saga: SagaRef { saga_id: cancelled.saga_id, order_id: cancelled.details.order_id },
        reason: "declined".into(),
    };
    let message = Envelope::from_message("/test", &reject, &ctx).expect("envelope");
    store.handle(&message, cancelled.details.order_id, |o| o.reject("declined")).await.expect("reject");
    // A redelivered command changes nothing.
    store.handle(&message, cancelled.details.order_id, |o| o.reject("declined")).await.expect("redelivery");
    let before = (
        store.get(kept.details.order_id).await.expect("get"),
        store.get(cancelled.details.order_id).await.expect("get"),
    );
    assert_eq!(before.1.as_ref().map(|o| o.status), Some(OrderStatus::Cancelled));
    let kept_details = before.0.as_ref().map(|o| (o.details.pricing_arm, o.details.amount, o.details.express));
    assert_eq!(
        kept_details,
        Some((PricingArm::Discount10, Decimal::new(2250, 2), true)),
        "the flags' decisions are kept"
    );
    assert_eq!(store.history(cancelled.details.order_id).await.expect("history").len(), 2);

    wipe().await;
    assert_eq!(store.rebuild_projection().await.expect("rebuild"), 2);
    let after = (
        store.get(kept.details.order_id).await.expect("get"),
        store.get(cancelled.details.order_id).await.expect("get"),
    );
    assert_eq!(after, before);
}

#[tokio::test]
async fn postgres_projection_is_rebuilt_from_the_event_log() {
    let (ctx, url) = kit::testing::postgres_context("").await;
    let (_, store) = order::start_with_store(&ctx).await.expect("start");
    rebuild_gives_back_the_same_orders(store, async || {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        sqlx::query("DELETE FROM orders.orders").execute(&pool).await.expect("wipe projection");
    })
    .await;
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn memory_projection_is_rebuilt_from_the_event_log() {
    let ctx = kit::testing::context("").await;
    let (_, store) = order::start_with_store(&ctx).await.expect("start");
    rebuild_gives_back_the_same_orders(store, async || {}).await;
    ctx.shutdown.cancel();
}
