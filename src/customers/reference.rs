//! The reference customer schema (SPEC 8) in one place: its SQL for each backend and the
//! `[schema]` configuration that maps it, shared by the demo, the tests and the benchmark.

use crate::db::{Backend, Spelled};

/// `CREATE TABLE` statements of the reference schema for `backend`.
pub fn sql(backend: Backend) -> &'static str {
    backend.pick(&Spelled {
        sqlite: include_str!("../../config/reference-schema/sqlite.sql"),
        postgres: include_str!("../../config/reference-schema/postgres.sql"),
        mysql: include_str!("../../config/reference-schema/mysql.sql"),
    })
}

/// The `[schema]` table (with its references) that maps the reference schema; the other
/// schema keys take their defaults, which are the reference names.
pub const SCHEMA_TOML: &str = include_str!("../../config/reference-schema/schema.toml");

/// `[[schema.activity]]` and `[[schema.holds]]` for the reference schema's tickets,
/// memberships, Gift Aid declarations and balances (SPEC 12): the demo uses them.
pub const ACTIVITY_TOML: &str = include_str!("../../config/reference-schema/activity.toml");

/// A `[venues.anonymise]` table classifying every reference customers column (names and contact
/// removed, email hashed, postcode district and birth year kept), for the demo and benchmark.
pub const ANONYMISE_TOML: &str = include_str!("../../config/reference-schema/anonymise.toml");

/// A row source `s` with one column `n` holding 1 to `count`, in SQL that every backend runs
/// without recursion (MySQL and MariaDB limit the depth of recursive queries): for filling the
/// reference schema in tests and the benchmark.
pub fn series(count: u64) -> String {
    let digit = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let places = count.max(1).to_string().len();
    let sum: Vec<String> = (0..places)
        .map(|p| format!("{} * d{p}.d", 10u64.pow(p as u32)))
        .collect();
    let from: Vec<String> = (0..places).map(|p| format!("{digit} d{p}")).collect();
    format!(
        "(SELECT n FROM (SELECT {} + 1 AS n FROM {}) x WHERE n <= {count}) s",
        sum.join(" + "),
        from.join(", ")
    )
}
