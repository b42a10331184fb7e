//! The proof-of-disposal ledger: report events (who decided what, when) in `retention_audit` and
//! `retention_decisions`, and each customer id's outcome in `retention_report_items`. It holds
//! ids, counts and approvers' addresses, never a customer's personal data. The statements are
//! the store's ([`crate::store::ledger`], [`crate::store::items`]).

pub use crate::policy::EventKind;
pub use crate::store::items::{customer_outcomes, CustomerOutcome};
pub use crate::store::ledger::{events, record, Event};
