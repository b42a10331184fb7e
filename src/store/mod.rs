//! retentiond's own tables (`retention_*`), one module a table, each owning its statements and
//! decoding its rows by column name into types. The customer database's SQL, built from the
//! configuration, lives with what builds it ([`crate::selection`], [`crate::erase`]); the
//! backends' differences in [`crate::db`].
//!
//! Moved here so far: the outbox, the approval links (tokens), the ledger and the decisions.
//! Still in their modules: reports and their items (`reports`, `review`), search terms
//! (`search`), journal state (`journal`), migrations (`migrate`).

pub mod decisions;
pub mod items;
pub mod ledger;
pub mod outbox;
pub mod tokens;
