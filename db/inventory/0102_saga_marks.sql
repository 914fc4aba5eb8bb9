-- What each saga's commands decided about its pet: its ReservePet succeeded or was refused
-- (and why), or it released the pet. A late ReservePet of the saga — a re-sent copy handled
-- after the saga was answered, or one overtaken by the saga's ReleasePet — repeats that
-- decision instead of reserving a pet that may be available again by then.
CREATE TABLE saga_marks (
    saga_id    UUID PRIMARY KEY,
    pet_id     TEXT NOT NULL REFERENCES pets (pet_id),
    mark       TEXT NOT NULL CHECK (mark IN ('reserved', 'refused', 'released')),
    reason     TEXT,
    marked_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT saga_marks_reason_iff_refused CHECK ((mark = 'refused') = (reason IS NOT NULL))
);
