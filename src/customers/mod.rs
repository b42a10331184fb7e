//! The customer database's SQL, built from the configuration (`[schema]`, `[[schema.linked]]`,
//! `[[schema.activity]]`, `[[holds]]`, each venue's policy): the tables a venue owns and
//! retentiond reads and changes, beside [`crate::store`] (retentiond's own tables) and above
//! [`crate::db`] (the backends' differences).
//!
//! - [`selection`]: who is a candidate (the counts, the frozen report, the re-check at apply).
//! - [`erase`]: what erasing a customer does to their row and linked tables.
//! - [`lookup`]: one person by email or by id (erasure requests, `replay`, the demo's seed).
//! - [`introspect`]: the live layout (`check`, `suggest`).
//! - [`whatif`]: the years of last activity (`whatif`).
//! - [`reference`](mod@reference): the reference schema and its configuration; [`demo_data`], the demo's customers in it.

pub mod demo_data;
pub mod erase;
pub mod introspect;
pub mod lookup;
pub mod reference;
pub mod selection;
pub mod whatif;
