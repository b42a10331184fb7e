//! Words for people, shared by the report page and the emails (SPEC 4: they speak to a venue
//! manager, not a DBA): the venue's name and its times in its own zone ([`VenueWords`]), and
//! what an erasure does to each linked table, with every table and column named by its
//! `[schema.labels]` entry where one is configured.

use crate::config::SchemaConfig;
use crate::policy::Action;
use crate::policy::Strategy;

/// A table or column as a sentence names it: its `[schema.labels]` entry, or its name in
/// lower-case words (`customer_notes` is "customer notes").
pub fn named(schema: &SchemaConfig, name: &str) -> String {
    match schema.labels.get(name) {
        Some(label) => label.clone(),
        None => name.replace('_', " "),
    }
}

/// What an erasure of `action` does to each linked table, one plain sentence per table.
pub fn linked_tables_in_words(schema: &SchemaConfig, action: Action) -> Vec<String> {
    let mut sentences = Vec::new();
    for r in &schema.references {
        let table = named(schema, r.table.name());
        let whose = match &r.via {
            Some(via) => format!("The {table} of those {}", named(schema, via.table.name())),
            None => format!("Their {table}"),
        };
        if !r.rows_stay(action) {
            sentences.push(format!("{whose} are deleted."));
            continue;
        }
        let place = match (action, &r.via) {
            (Action::Delete, None) => "are kept, moved to the venue's Unknown Customer record",
            _ => "are kept",
        };
        let changes: Vec<String> = r
            .columns
            .iter()
            .filter(|(_, st)| *st != Strategy::Keep)
            .map(|(c, st)| format!("{} {}", named(schema, c.name()), st.in_words()))
            .collect();
        if changes.is_empty() {
            sentences.push(format!("{whose} {place}, unchanged."));
        } else {
            sentences.push(format!("{whose} {place}; in them: {}.", changes.join(", ")));
        }
    }
    sentences
}

/// A venue as the report page and the emails present it: its name, and times in its own zone
/// (the schedule's when the venue is no longer configured).
pub struct VenueWords {
    pub name: String,
    pub tz: chrono_tz::Tz,
}

impl VenueWords {
    pub fn of(config: &crate::config::Config, venue_id: i64) -> VenueWords {
        let venue = config.venue(venue_id);
        VenueWords {
            name: venue.map_or_else(|| format!("Venue {venue_id}"), |v| v.name.clone()),
            tz: venue.map_or(config.schedule.timezone, |v| v.timezone),
        }
    }

    /// "4 December 2026, 03:00 GMT".
    pub fn time(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%-d %B %Y, %H:%M %Z")
            .to_string()
    }

    /// "4 December 2026".
    pub fn date(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        t.with_timezone(&self.tz).format("%-d %B %Y").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_config(labels: &str) -> crate::config::Config {
        let toml = format!("[database]\nurl = \"sqlite://x.db\"\n[secrets]\nhash_key = \"{}\"\n{}\n[[venues]]\nid = 1\nname = \"V\"\napprovers = [\"a@b.c\"]\ninactive_for = \"3 years\"\naction = \"delete\"\n", "k".repeat(40), crate::reference::SCHEMA_TOML.to_string() + labels);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        crate::config::load_with_env(&path, Default::default()).unwrap()
    }

    #[test]
    fn linked_tables_are_described_in_words() {
        let config = reference_config("");
        let delete = linked_tables_in_words(&config.schema, Action::Delete).join(" ");
        let anonymise = linked_tables_in_words(&config.schema, Action::Anonymise).join(" ");
        assert!(delete.contains("Their orders are kept, moved to the venue's Unknown Customer record; in them: billing email replaced by a keyed hash."), "{delete}");
        assert!(
            delete.contains("Their customer notes are deleted."),
            "{delete}"
        );
        assert!(
            delete.contains("The order addresses of those orders are kept; in them: "),
            "{delete}"
        );
        assert!(delete.contains("first name removed"), "{delete}");
        assert!(
            anonymise.contains(
                "Their orders are kept; in them: billing email replaced by a keyed hash."
            ),
            "{anonymise}"
        );
        assert!(
            anonymise.contains("Their customer notes are deleted."),
            "{anonymise}"
        );
        assert!(
            !delete.contains('_') && !anonymise.contains('_'),
            "no column names: {delete} {anonymise}"
        );
    }

    #[test]
    fn linked_tables_are_named_by_their_labels() {
        let config = reference_config(
            "[schema.labels]\norder_addresses = \"delivery addresses\"\nbilling_email = \"email on the invoice\"\n",
        );
        let delete = linked_tables_in_words(&config.schema, Action::Delete).join(" ");
        assert!(
            delete.contains("in them: email on the invoice replaced by a keyed hash."),
            "{delete}"
        );
        assert!(
            delete.contains("The delivery addresses of those orders are kept"),
            "{delete}"
        );
        assert!(!delete.contains("billing email"), "{delete}");
    }
}
