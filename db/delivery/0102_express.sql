-- Express orders (the `express_order_processing` flag) are delivered the next day; the
-- booking records that it was one. Deliveries booked before were all standard.
ALTER TABLE deliveries ADD COLUMN express BOOLEAN NOT NULL DEFAULT false;
