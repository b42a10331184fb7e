//! The reference customer schema (SPEC 8) in one place: its SQL for each backend and the
//! `[schema]` configuration that maps it, shared by the demo, the tests and the benchmark.

use crate::db::{Backend, Spelled};

/// `CREATE TABLE` statements of the reference schema for `backend`.
pub fn sql(backend: Backend) -> &'static str {
    backend.pick(&Spelled {
        sqlite: include_str!("../config/reference-schema/sqlite.sql"),
        postgres: include_str!("../config/reference-schema/postgres.sql"),
        mysql: include_str!("../config/reference-schema/mysql.sql"),
    })
}

/// The `[schema]` table (with its references) that maps the reference schema; the other
/// schema keys take their defaults, which are the reference names.
pub const SCHEMA_TOML: &str = include_str!("../config/reference-schema/schema.toml");

/// A `[venues.anonymise]` table classifying every reference customers column (names and contact
/// removed, email hashed, postcode district and birth year kept), for the demo and benchmark.
pub const ANONYMISE_TOML: &str = include_str!("../config/reference-schema/anonymise.toml");
