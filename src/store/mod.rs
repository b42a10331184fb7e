//! retentiond's own tables (`retention_*`), one module a table, each owning its statements and
//! decoding its rows by column name into types (the report search's keyed index is [`terms`];
//! the tables' migrations, [`migrate`]); and beside them [`listing`], the one query that joins a
//! report's items to the customers table the configuration names. The customer database's
//! other SQL, built from the configuration, is in [`crate::customers`]; the backends'
//! differences are in [`crate::db`].

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
