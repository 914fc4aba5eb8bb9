-- What the feature flags decided for an order when it was placed (recorded in its `placed`
-- event, projected here): the customer's arm of `pricing_experiment`, which priced `amount`,
-- and whether `express_order_processing` made it an express order. Orders placed before
-- were all charged the catalog price and delivered as usual, which the defaults say; a
-- rebuild of the projection gives the same, since old events read with the same defaults.
ALTER TABLE orders
    ADD COLUMN pricing_arm TEXT NOT NULL DEFAULT 'control',
    ADD COLUMN express BOOLEAN NOT NULL DEFAULT false;
