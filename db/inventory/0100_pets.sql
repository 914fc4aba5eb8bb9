-- The pet catalog and the stock state of each pet. A pet is available, reserved by a running
-- saga (the saga's semantic lock), or sold to a saga; `held_by_saga` names that saga.
CREATE TABLE pets (
    -- Human-readable ids (`golden-retriever-001`) are the contract. Byte order ("C"), so that
    -- keyset pagination orders pets the same way in PostgreSQL and in memory.
    pet_id             TEXT COLLATE "C" PRIMARY KEY CHECK (pet_id <> ''),
    name               TEXT NOT NULL CHECK (name <> ''),
    category           TEXT NOT NULL CHECK (category <> '' AND category = lower(category)),
    breed              TEXT NOT NULL,
    age_months         INT NOT NULL CHECK (age_months >= 0),
    price              NUMERIC(12, 2) NOT NULL CHECK (price >= 0),
    currency           TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description        TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'reserved', 'sold')),
    held_by_saga       UUID,
    status_changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pets_held_iff_not_available CHECK ((status = 'available') = (held_by_saga IS NULL))
);

-- The catalog filters (category, availability, maximum price), each usable with the keyset
-- `pet_id > $cursor ORDER BY pet_id`.
CREATE INDEX pets_category ON pets (category, pet_id);
CREATE INDEX pets_status ON pets (status, pet_id);
CREATE INDEX pets_price ON pets (price);

CREATE TRIGGER pets_audit AFTER INSERT OR UPDATE OR DELETE ON pets
    FOR EACH ROW EXECUTE FUNCTION audit_row();
