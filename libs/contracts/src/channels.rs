//! Channel names. Commands go to `<service>-commands` (point-to-point, one consumer group: the
//! service); replies and domain events go to `<service>-events` (pub/sub).

/// Order lifecycle events: OrderCreated starts a saga.
pub const ORDER_EVENTS: &str = "order-events";
/// Commands for the order service (approve or reject an order when its saga ends).
pub const ORDER_COMMANDS: &str = "order-commands";
/// Commands for the inventory service.
pub const INVENTORY_COMMANDS: &str = "inventory-commands";
/// Inventory replies and availability events.
pub const INVENTORY_EVENTS: &str = "inventory-events";
/// Inventory-status queries (request/response).
pub const INVENTORY_QUERIES: &str = "inventory-queries";
/// Commands for the payment service.
pub const PAYMENT_COMMANDS: &str = "payment-commands";
/// Payment replies.
pub const PAYMENT_EVENTS: &str = "payment-events";
/// Commands for the delivery service.
pub const DELIVERY_COMMANDS: &str = "delivery-commands";
/// Delivery replies.
pub const DELIVERY_EVENTS: &str = "delivery-events";
/// Commands for the notification service.
pub const NOTIFICATION_COMMANDS: &str = "notification-commands";
/// Notification replies.
pub const NOTIFICATION_EVENTS: &str = "notification-events";
/// Announcements that an administrator changed a feature flag (pub/sub, read by every
/// instance of every service).
pub const FLAG_EVENTS: &str = "flag-events";

/// Every channel the services use, for declaring them at start-up.
pub const ALL: &[&str] = &[
    ORDER_EVENTS,
    ORDER_COMMANDS,
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    INVENTORY_QUERIES,
    PAYMENT_COMMANDS,
    PAYMENT_EVENTS,
    DELIVERY_COMMANDS,
    DELIVERY_EVENTS,
    NOTIFICATION_COMMANDS,
    NOTIFICATION_EVENTS,
    FLAG_EVENTS,
];
