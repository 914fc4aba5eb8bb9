//! Where the catalog lives: the `inventory` schema, or memory. Each command runs in one
//! transaction with its inbox entry and its reply; the pet's row is locked while deciding.
//! The sweeper's releases of expired reservations and an administrator's catalog changes lock
//! the same rows, so none of them interleave on one pet: whichever comes second sees what the
//! first did.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
};

use chrono::{DateTime, TimeDelta, Utc};
use messaging::{Envelope, MessageContext};
use persistence::{Outgoing, Records, Storage, StoreError};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    SERVICE,
    catalog::{CatalogChange, Refusal},
    domain::{self, Clock, Cursor, Expiry, HeldFor, InventoryCommand, Pet, PetFilter, PetSort, SagaMark},
};

/// The catalog by pet id (in id order, for keyset paging) and the sagas' marks, for the
/// in-memory store.
#[derive(Debug, Default)]
pub struct CatalogState {
    pets: BTreeMap<String, Pet>,
    marks: HashMap<Uuid, SagaMark>,
}

impl CatalogState {
    /// A catalog holding `pets`.
    pub fn new(pets: impl IntoIterator<Item = Pet>) -> Self {
        Self { pets: pets.into_iter().map(|p| (p.pet_id.clone(), p)).collect(), marks: HashMap::new() }
    }
}

/// The inventory store.
#[derive(Clone)]
pub struct InventoryStore {
    storage: Storage<CatalogState>,
    reservation_ttl: TimeDelta,
}

/// How many expired reservations one sweep releases at most (one transaction); the rest wait
/// for the next sweep.
const SWEEP_BATCH: usize = 100;

/// A pet, with the mark of the saga whose command is decided (key: pet id, saga id). The
/// pet's row lock serializes every command about the pet, and a saga's commands are all about
/// its one pet, so the mark needs no lock of its own.
struct PetsForSaga;

impl Records for PetsForSaga {
    type Key = (String, Uuid);
    type Record = HeldFor;
    type State = CatalogState;

    fn get(state: &CatalogState, (pet_id, saga_id): &(String, Uuid)) -> Option<HeldFor> {
        let pet = state.pets.get(pet_id)?.clone();
        Some(HeldFor { pet, saga_id: *saga_id, mark: state.marks.get(saga_id).cloned(), pet_changed: false })
    }

    fn put(state: &mut CatalogState, held: HeldFor) {
        if let Some(mark) = held.mark {
            state.marks.insert(held.saga_id, mark);
        }
        if held.pet_changed {
            state.pets.insert(held.pet.pet_id.clone(), held.pet);
        }
    }

    async fn load(conn: &mut PgConnection, (pet_id, saga_id): &(String, Uuid)) -> Result<Option<HeldFor>, StoreError> {
        let Some(pet) = load_locked(conn, pet_id).await? else { return Ok(None) };
        let mark = sqlx::query("SELECT mark, reason FROM saga_marks WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| {
                let (mark, reason): (String, Option<String>) = (row.try_get("mark")?, row.try_get("reason")?);
                SagaMark::parse(&mark, reason).ok_or_else(|| StoreError::Codec(format!("unknown saga mark {mark}")))
            })
            .transpose()?;
        Ok(Some(HeldFor { pet, saga_id: *saga_id, mark, pet_changed: false }))
    }

    async fn save(conn: &mut PgConnection, held: &HeldFor) -> Result<(), StoreError> {
        if held.pet_changed {
            save_status(conn, &held.pet).await?;
        }
        if let Some(mark) = &held.mark {
            let reason = match mark {
                SagaMark::Refused(reason) => Some(reason.as_str()),
                SagaMark::Reserved | SagaMark::Released => None,
            };
            sqlx::query(
                "INSERT INTO saga_marks (saga_id, pet_id, mark, reason, marked_at) VALUES ($1, $2, $3, $4, now()) \
                 ON CONFLICT (saga_id) DO UPDATE SET mark = EXCLUDED.mark, reason = EXCLUDED.reason, marked_at = now()",
            )
            .bind(held.saga_id)
            .bind(&held.pet.pet_id)
            .bind(mark.as_str())
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

impl InventoryStore {
    /// Wraps the configured storage; reservations made through it hold for `reservation_ttl`.
    pub fn new(storage: Storage<CatalogState>, reservation_ttl: std::time::Duration) -> Self {
        Self { storage, reservation_ttl: TimeDelta::from_std(reservation_ttl).unwrap_or(TimeDelta::MAX) }
    }

    /// Inserts `pets` when the catalog is empty (PostgreSQL; the memory store starts from its
    /// seed), in one transaction; pets that exist already are left alone. Returns how many
    /// were inserted.
    pub async fn seed_if_empty(&self, pets: &[Pet]) -> Result<u64, StoreError> {
        let Storage::Postgres { pool, .. } = &self.storage else { return Ok(0) };
        let mut tx = pool.begin().await?;
        let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pets)").fetch_one(&mut *tx).await?;
        if !empty {
            return Ok(0);
        }
        let mut inserted = 0;
        for p in pets {
            inserted += u64::from(insert(&mut tx, p).await?);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Handles an inventory command once (a redelivered message is skipped) and queues its
    /// reply. Returns the id of the pet whose availability changed, if one did, so that the
    /// caller can invalidate what caches it.
    pub async fn handle(
        &self,
        message: &Envelope,
        cmd: &InventoryCommand,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<Option<String>, StoreError> {
        let clock = Clock { now: Utc::now(), reservation_ttl: self.reservation_ttl };
        let key = (cmd.pet_id().to_owned(), cmd.saga().saga_id);
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::decide_for_saga(existing, &cmd, clock, &source, &ctx);
        let saved = self.storage.decide_once::<PetsForSaga>(SERVICE, message, &key, decide).await?;
        Ok(saved.filter(|held| held.pet_changed).map(|held| held.pet.pet_id))
    }

    /// Releases reservations that ran out by `now` (at most [`SWEEP_BATCH`]), each with its
    /// `PetReleased` in the outbox, in one transaction. Returns the releases. A pet whose row
    /// a command holds locked is skipped: the next sweep sees what that command did.
    pub(crate) async fn release_expired(&self, now: DateTime<Utc>, source: &str) -> Result<Vec<Expiry>, StoreError> {
        let ctx = MessageContext::default();
        let release = |expired: Vec<Pet>| -> Result<(Vec<Expiry>, Vec<Outgoing>), StoreError> {
            let mut released = Vec::new();
            for pet in expired {
                released.extend(domain::expire(pet, now, source, &ctx).map_err(|e| StoreError::Codec(e.to_string()))?);
            }
            let events = released.iter().map(|e| e.released.clone()).collect();
            Ok((released, events))
        };
        match &self.storage {
            Storage::Memory(memory) => memory.write(|s| {
                let expired = s.pets.values().filter(|p| p.reservation_expired(now)).take(SWEEP_BATCH);
                let (released, events) = release(expired.cloned().collect())?;
                for e in &released {
                    s.pets.insert(e.pet.pet_id.clone(), e.pet.clone());
                }
                Ok((released, events))
            }),
            Storage::Postgres { pool, .. } => {
                persistence::pg::write(pool, async |conn| {
                    let sql = format!(
                        "{SELECT} WHERE status = 'reserved' AND reserved_until <= $1 ORDER BY reserved_until \
                         LIMIT $2 FOR UPDATE SKIP LOCKED"
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(i64::try_from(SWEEP_BATCH).unwrap_or(i64::MAX))
                        .fetch_all(&mut *conn)
                        .await?;
                    let (released, events) = release(rows.iter().map(decode).collect::<Result<_, _>>()?)?;
                    for e in &released {
                        save_status(conn, &e.pet).await?;
                    }
                    Ok((released, events))
                })
                .await
            }
        }
    }

    /// Applies an administrator's change, as [`CatalogChange::decide`] decides it on the pet as
    /// stored (its row locked meanwhile, so no saga command or sweep interleaves), with the
    /// change's event in the outbox, in one transaction. Returns the pet as stored, or the
    /// refusal (and then writes nothing).
    pub(crate) async fn change(
        &self,
        change: &CatalogChange,
        changed_by: &str,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<Result<Pet, Refusal>, StoreError> {
        let now = Utc::now();
        let decide = |existing: Option<Pet>| -> Result<(Result<Pet, Refusal>, Vec<Outgoing>), StoreError> {
            match change.decide(existing, now) {
                Err(refusal) => Ok((Err(refusal), Vec::new())),
                Ok(pet) => {
                    let event =
                        change.announcement(changed_by, source, ctx).map_err(|e| StoreError::Codec(e.to_string()))?;
                    Ok((Ok(pet), vec![event]))
                }
            }
        };
        match &self.storage {
            Storage::Memory(memory) => memory.write(|s| {
                let (decided, events) = decide(s.pets.get(change.pet_id()).cloned())?;
                if let Ok(pet) = &decided {
                    s.pets.insert(pet.pet_id.clone(), pet.clone());
                }
                Ok((decided, events))
            }),
            Storage::Postgres { pool, .. } => {
                persistence::pg::write(pool, async |conn| {
                    let (decided, events) = decide(load_locked(conn, change.pet_id()).await?)?;
                    let Ok(pet) = &decided else { return Ok((decided, events)) };
                    if !change.is_new() {
                        save_details(conn, pet).await?;
                    } else if !insert(conn, pet).await? {
                        // Another request listed the id first (a missing row cannot be locked).
                        return Ok((Err(Refusal::AlreadyListed(pet.pet_id.clone())), Vec::new()));
                    }
                    Ok((decided, events))
                })
                .await
            }
        }
    }

    /// One pet, if it exists.
    pub async fn get(&self, pet_id: &str) -> Result<Option<Pet>, StoreError> {
        match &self.storage {
            Storage::Memory(memory) => Ok(memory.read(|s| s.pets.get(pet_id).cloned())),
            Storage::Postgres { pool, .. } => {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE pet_id = $1")))
                    .bind(pet_id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(decode).transpose()
            }
        }
    }

    /// Up to `limit` pets passing `filter`, in `sort` order, from just after `after` (keyset
    /// pagination by sort key and pet id: stable while pets change, no matter how deep the
    /// page). `after` must be a cursor of `sort`: another sort's is refused.
    pub async fn list(
        &self,
        filter: &PetFilter,
        sort: PetSort,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Pet>, StoreError> {
        if let Some(cursor) = after
            && cursor.sort() != sort
        {
            let (theirs, ours) = (cursor.sort().as_str(), sort.as_str());
            return Err(StoreError::Codec(format!("a cursor of sort `{theirs}` used with sort `{ours}`")));
        }
        match &self.storage {
            Storage::Memory(memory) => Ok(memory.read(|s| {
                // The map is in id order: the id sort reads a range of it, lazily.
                let from = match after {
                    Some(cursor) if sort == PetSort::Id => Bound::Excluded(cursor.pet_id().to_owned()),
                    _ => Bound::Unbounded,
                };
                let passing = s
                    .pets
                    .range((from, Bound::Unbounded))
                    .map(|(_, p)| p)
                    .filter(|p| filter.matches(p) && after.is_none_or(|cursor| cursor.precedes(p)));
                if sort == PetSort::Id {
                    return passing.take(limit).cloned().collect();
                }
                let mut pets: Vec<&Pet> = passing.collect();
                pets.sort_unstable_by(|a, b| sort.compare(a, b));
                pets.into_iter().take(limit).cloned().collect()
            })),
            Storage::Postgres { pool, .. } => {
                let (order, keyset) = match sort {
                    PetSort::Id => ("pet_id", "pet_id > $8"),
                    PetSort::Price => {
                        ("price, pet_id", "(price > $9::numeric OR (price = $9::numeric AND pet_id > $8))")
                    }
                    PetSort::PriceDesc => {
                        ("price DESC, pet_id", "(price < $9::numeric OR (price = $9::numeric AND pet_id > $8))")
                    }
                    PetSort::Age => (
                        "age_months, pet_id",
                        "(age_months > $9::integer OR (age_months = $9::integer AND pet_id > $8))",
                    ),
                    PetSort::AgeDesc => (
                        "age_months DESC, pet_id",
                        "(age_months < $9::integer OR (age_months = $9::integer AND pet_id > $8))",
                    ),
                };
                let keyset = if after.is_some() { format!("AND {keyset}") } else { String::new() };
                let sql = format!(
                    "{SELECT} WHERE ($1::text IS NULL OR category = $1) AND ($2::numeric IS NULL OR price <= $2) \
                     AND ($3::boolean IS NULL OR (status = 'available') = $3) AND ($4::text IS NULL OR breed = $4) \
                     AND ($5::integer IS NULL OR age_months >= $5) AND ($6::integer IS NULL OR age_months <= $6) \
                     {keyset} ORDER BY {order} LIMIT $7"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(filter.category.as_deref())
                    .bind(filter.max_price)
                    .bind(filter.available)
                    .bind(filter.breed.as_deref())
                    .bind(filter.min_age_months)
                    .bind(filter.max_age_months)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
                if let Some(cursor) = after {
                    query = query.bind(cursor.pet_id().to_owned());
                    query = match sort {
                        PetSort::Id => query,
                        PetSort::Price | PetSort::PriceDesc => query.bind(cursor.price()),
                        PetSort::Age | PetSort::AgeDesc => query.bind(cursor.age_months()),
                    };
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter().map(decode).collect()
            }
        }
    }
}

const SELECT: &str = "SELECT pet_id, name, category, breed, age_months, price, currency, description, status, \
                      held_by_saga, held_for_order, reserved_until, status_changed_at, created_at FROM pets";

/// The pet, its row locked until the transaction ends.
async fn load_locked(conn: &mut PgConnection, pet_id: &str) -> Result<Option<Pet>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE pet_id = $1 FOR UPDATE")))
        .bind(pet_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Inserts the pet unless its id is taken; whether it did.
async fn insert(conn: &mut PgConnection, p: &Pet) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO pets (pet_id, name, category, breed, age_months, price, currency, description, status, \
         held_by_saga, held_for_order, reserved_until, status_changed_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (pet_id) DO NOTHING",
    )
    .bind(&p.pet_id)
    .bind(&p.name)
    .bind(&p.category)
    .bind(&p.breed)
    .bind(p.age_months)
    .bind(p.price)
    .bind(&p.currency)
    .bind(&p.description)
    .bind(domain::availability_name(p.status))
    .bind(p.held_by_saga)
    .bind(p.held_for_order)
    .bind(p.reserved_until)
    .bind(p.status_changed_at)
    .bind(p.created_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Saves the pet's catalog fields (what an administrator changes), not its availability.
async fn save_details(conn: &mut PgConnection, p: &Pet) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE pets SET name = $2, category = $3, breed = $4, age_months = $5, price = $6, currency = $7, \
         description = $8 WHERE pet_id = $1",
    )
    .bind(&p.pet_id)
    .bind(&p.name)
    .bind(&p.category)
    .bind(&p.breed)
    .bind(p.age_months)
    .bind(p.price)
    .bind(&p.currency)
    .bind(&p.description)
    .execute(conn)
    .await?;
    Ok(())
}

async fn save_status(conn: &mut PgConnection, p: &Pet) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE pets SET status = $2, held_by_saga = $3, held_for_order = $4, reserved_until = $5, \
         status_changed_at = $6 WHERE pet_id = $1",
    )
    .bind(&p.pet_id)
    .bind(domain::availability_name(p.status))
    .bind(p.held_by_saga)
    .bind(p.held_for_order)
    .bind(p.reserved_until)
    .bind(p.status_changed_at)
    .execute(conn)
    .await?;
    Ok(())
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<Pet, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Pet {
        pet_id: row.try_get("pet_id")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        breed: row.try_get("breed")?,
        age_months: row.try_get("age_months")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        description: row.try_get("description")?,
        status: domain::parse_availability(&status)
            .ok_or_else(|| StoreError::Codec(format!("unknown pet status {status}")))?,
        held_by_saga: row.try_get("held_by_saga")?,
        held_for_order: row.try_get("held_for_order")?,
        reserved_until: row.try_get("reserved_until")?,
        status_changed_at: row.try_get("status_changed_at")?,
        created_at: row.try_get("created_at")?,
    })
}
