-- A reservation records until when it holds and which order its saga is for: past
-- `reserved_until` the inventory's sweeper releases the pet and answers the saga with
-- `PetReleased` (whose saga reference carries the order id).
ALTER TABLE pets
    ADD COLUMN held_for_order UUID,
    ADD COLUMN reserved_until TIMESTAMPTZ;

-- Reservations made before this migration: the default lifetime (15 minutes) from when they
-- were made. Their order is unknown: the nil UUID says so (the saga is what replies are keyed by).
UPDATE pets
   SET reserved_until = status_changed_at + interval '15 minutes',
       held_for_order = '00000000-0000-0000-0000-000000000000'
 WHERE status = 'reserved';
UPDATE pets SET held_for_order = '00000000-0000-0000-0000-000000000000' WHERE status = 'sold';

ALTER TABLE pets
    ADD CONSTRAINT pets_order_iff_held CHECK ((held_by_saga IS NULL) = (held_for_order IS NULL)),
    ADD CONSTRAINT pets_until_iff_reserved CHECK ((status = 'reserved') = (reserved_until IS NOT NULL));

-- The sweeper's query: reservations in the order they expire.
CREATE INDEX pets_reserved_until ON pets (reserved_until) WHERE status = 'reserved';
