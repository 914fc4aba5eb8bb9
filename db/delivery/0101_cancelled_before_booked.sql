-- A cancellation that finds no delivery for its saga leaves a tombstone: a `cancelled`
-- delivery with no booking, so that a ScheduleDelivery arriving later (delayed, re-sent,
-- replayed) books nothing. `deliveries_one_per_saga` arbitrates a booking and a tombstone
-- racing for one saga, as it does for payments and their voids.
ALTER TABLE deliveries
    ALTER COLUMN customer_id DROP NOT NULL,
    ALTER COLUMN pet_id DROP NOT NULL,
    ALTER COLUMN street DROP NOT NULL,
    ALTER COLUMN city DROP NOT NULL,
    ALTER COLUMN postal_code DROP NOT NULL,
    ALTER COLUMN country DROP NOT NULL,
    ALTER COLUMN estimated_delivery DROP NOT NULL;

ALTER TABLE deliveries ADD CONSTRAINT deliveries_booking_unless_tombstone CHECK (
    (customer_id IS NULL AND pet_id IS NULL AND street IS NULL AND city IS NULL AND postal_code IS NULL
        AND country IS NULL AND estimated_delivery IS NULL AND status = 'cancelled')
    OR (customer_id IS NOT NULL AND pet_id IS NOT NULL AND street IS NOT NULL AND city IS NOT NULL
        AND postal_code IS NOT NULL AND country IS NOT NULL AND estimated_delivery IS NOT NULL)
);
