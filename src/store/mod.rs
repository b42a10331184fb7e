//! retentiond's own tables (`retention_*`), one module a table, each owning its statements and
//! decoding its rows by column name into types; and beside them [`listing`], the one query that
//! joins a report's items to the customers table the configuration names. The customer
//! database's other SQL is built from the configuration by what uses it ([`crate::selection`],
//! [`crate::erase`]); the backends' differences are in [`crate::db`].
//!
//! Still outside: the report search's index (`search`, built from the customers table) and the
//! migrations' own ledger (`migrate`). The customer-schema SQL built from the configuration is
//! in `selection` (candidates), `erase` (erasure), `request` and `replay` (one person, a
//! restored database), `check` and `introspect` (the live layout), `whatif`.

pub mod anonymised;
pub mod decisions;
pub mod items;
pub mod ledger;
pub mod listing;
pub mod migrate;
pub mod outbox;
pub mod replays;
pub mod reports;
pub mod terms;
pub mod tokens;
