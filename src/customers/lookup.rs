//! One person's rows, by email address or by id: the statements of an erasure request and an
//! export (SPEC 13) and of `replay` (which of a journal's customers are still here).

use crate::config::{Reference, SchemaConfig};
use crate::customers::selection::push_venue_filter;
use crate::db::{Backend, Ident, Query};

/// The ids (at most three) of `venue_id`'s customers whose email address is `address`, compared
/// in lower case.
pub fn by_email(schema: &SchemaConfig, email: &Ident, venue_id: i64, address: &str) -> Query {
    let mut q = Query::new(&format!(
        "SELECT {id} FROM {customers} WHERE LOWER({email}) = ",
        id = schema.customer_id.q(),
        customers = schema.customers.q(),
        email = email.q()
    ));
    q.bind(address.trim().to_lowercase());
    push_venue_filter(&mut q, schema, "", venue_id);
    q.push(" LIMIT 3");
    q
}

/// The customer `id`'s row: `columns`, each as text.
pub fn customer_row(backend: Backend, schema: &SchemaConfig, columns: &[Ident], id: i64) -> Query {
    let mut q = Query::new(&format!(
        "SELECT {} FROM {} WHERE {} = ",
        columns
            .iter()
            .map(|c| backend.cast_text(&c.q()))
            .collect::<Vec<_>>()
            .join(", "),
        schema.customers.q(),
        schema.customer_id.q()
    ));
    q.bind(id);
    q
}

/// `SELECT <select> FROM <reference> x [JOIN parent p] WHERE <row belongs to customer id>`.
pub fn rows_of(schema: &SchemaConfig, r: &Reference, id: i64, select: &str) -> Query {
    let mut q = match &r.via {
        None => Query::new(&format!(
            "SELECT {select} FROM {} x WHERE x.{} = ",
            r.table.q(),
            r.column.q()
        )),
        Some(via) => {
            let parent_column = schema
                .references
                .iter()
                .find(|p| p.table == via.table && p.via.is_none())
                .map_or_else(|| schema.order_customer.clone(), |p| p.column.clone());
            Query::new(&format!(
                "SELECT {select} FROM {} x JOIN {} p ON x.{} = p.{} WHERE p.{} = ",
                r.table.q(),
                via.table.q(),
                r.column.q(),
                via.key.q(),
                parent_column.q()
            ))
        }
    };
    q.bind(id);
    q
}

/// Those of `ids` that are customers of `venue_id` and not anonymised yet, in id order.
pub fn still_personal(
    backend: Backend,
    schema: &SchemaConfig,
    venue_id: i64,
    ids: &[i64],
) -> Query {
    let mut q = Query::new(&format!(
        "SELECT c.{} FROM {} c WHERE 1 = 1",
        schema.customer_id.q(),
        schema.customers.q(),
    ));
    push_venue_filter(&mut q, schema, "c.", venue_id);
    q.push(&format!(" AND c.{}", schema.customer_id.q()));
    backend.push_in_ids(&mut q, ids);
    q.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM retention_anonymised a WHERE a.customer_id = c.{}) ORDER BY c.{}",
        schema.customer_id.q(),
        schema.customer_id.q()
    ));
    q
}

/// How many of `ids` still have a customers row (of any venue).
pub fn count_existing(backend: Backend, schema: &SchemaConfig, ids: &[i64]) -> Query {
    let mut q = Query::new(&format!(
        "SELECT COUNT(*) FROM {} WHERE {}",
        schema.customers.q(),
        schema.customer_id.q()
    ));
    backend.push_in_ids(&mut q, ids);
    q
}
