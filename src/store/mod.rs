//! retentiond's own tables (`retention_*`), one module a table, each owning its statements and
//! decoding its rows by column name into types; and beside them [`listing`], the one query that
//! joins a report's items to the customers table the configuration names. The customer
//! database's other SQL is built from the configuration by what uses it ([`crate::selection`],
//! [`crate::erase`]); the backends' differences are in [`crate::db`].
//!
//! Still outside, to move next: search terms (`search`), journal state (`journal`), the
//! replayed and requested erasures' records (`replay`, `request`), migrations (`migrate`).

pub mod anonymised;
pub mod decisions;
pub mod items;
pub mod ledger;
pub mod listing;
pub mod outbox;
pub mod reports;
pub mod tokens;
