//! Configuration loading: environment overrides, defaults, and refusals that need no database.

use crate::common::{anonymise_venue, config_toml, delete_venue, HASH_KEY};
use retentiond::config::{load_with_env, ConfigError};
use std::collections::BTreeMap;

fn load(text: &str, env: &[(&str, &str)]) -> Result<retentiond::config::Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retentiond.toml");
    std::fs::write(&path, text).unwrap();
    load_with_env(
        &path,
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[test]
fn environment_overrides_file_values() {
    use secrecy::ExposeSecret;
    let text = config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""));

    let config = load(
        &text,
        &[
            ("RETENTIOND__DATABASE__URL", "postgres://db.internal/venues"),
            (
                "RETENTIOND__SECRETS__HASH_KEY",
                "from-the-environment-0123456789-abc",
            ),
        ],
    )
    .unwrap();

    assert_eq!(
        config.database_url.expose_secret(),
        "postgres://db.internal/venues"
    );
    assert_eq!(
        config.hash_key.unwrap().expose_secret(),
        "from-the-environment-0123456789-abc"
    );
}

#[test]
fn defaults_apply_where_keys_are_omitted() {
    let config = load(
        &config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""))
            .replace("max_share = 1.0", ""),
        &[],
    )
    .unwrap();

    let venue = config.venue(2).unwrap();
    assert_eq!(venue.max_share, 0.75);
    assert_eq!(venue.report_interval.to_string(), "30 days");
    assert_eq!(config.batch_size, 500);
    assert_eq!(config.max_transaction_ms, 100);
    assert_eq!(config.approval.required, 1);
    assert_eq!(config.approval.link_valid_for.to_string(), "14 days");
}

#[test]
fn refusals_name_the_key() {
    let two_venues = config_toml(
        "sqlite://file.db",
        &(delete_venue(2, "3 years", "") + &delete_venue(2, "1 year", "")),
    );
    let no_key = config_toml("sqlite://file.db", &anonymise_venue(1, "3 years", ""))
        .replace("hash_key =", "# hash_key =");
    let no_key_for_customers = no_key
        .replace("billing_email = \"hash\"", "billing_email = \"null\"")
        .replace(
            "postcode = \"prefix:4\"\nemail = \"hash\"",
            "postcode = \"prefix:4\"\nemail = \"null\"",
        );
    let delete = config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""));
    let activity = |via: &str| {
        config_toml(
            "sqlite://file.db",
            &format!("[[schema.activity]]\ntable = \"tickets\"\ncolumn = \"order_id\"\nat = \"performance_at\"\n{via}\n{}", delete_venue(2, "3 years", "")),
        )
    };
    assert!(load(&activity("via = \"orders\""), &[]).is_ok());
    let hold = |body: &str| {
        config_toml(
            "sqlite://file.db",
            &format!(
                "[[schema.holds]]\nname = \"Gift Aid declaration\"\n{body}\n{}",
                delete_venue(2, "3 years", "")
            ),
        )
    };
    assert!(load(&hold("table = \"gift_aid\"\ncolumn = \"customer_id\"\nafter = \"declared_at\"\nfor = \"6 years\""), &[]).is_ok());
    let prospects = |body: &str| {
        config_toml(
            "sqlite://file.db",
            &delete_venue(2, "3 years", &format!("[venues.prospects]\n{body}")),
        )
    };
    assert!(load(&prospects("inactive_for = \"1 year\""), &[]).is_ok());
    let cases = [
        (hold("table = \"gift_aid\"\ncolumn = \"customer_id\"\nfor = \"6 years\""), "schema.holds[0].for"),
        (hold("table = \"gift_aid\"\ncolumn = \"customer_id\"\nafter = \"declared_at\"\nfor = \"six years\""), "schema.holds[0].for"),
        (hold("table = \"customers\"\nwhen = \"balance_pence != 0 or 1 = 1\""), "schema.holds[0].when"),
        (hold("table = \"customers\"\ncolumn = \"id\"\nwhen = \"balance_pence != 0\""), "schema.holds[0].column"),
        (hold("table = \"customers\""), "schema.holds[0].when"),
        (hold("table = \"gift_aid\""), "schema.holds[0].column"),
        (hold("table = \"customers\"\nwhen = \"x = 1\"\n[[schema.holds]]\nname = \"gift aid declaration\"\ntable = \"customers\"\nwhen = \"y = 1\""), "schema.holds[1].name"),
        (
            prospects("inactive_for = \"1 year\"\naction = \"anonymise\""),
            "venues[0].prospects.action",
        ),
        (
            prospects("inactive_for = \"a year\""),
            "venues[0].prospects.inactive_for",
        ),
        (
            prospects("inactive_for = \"1 year\"\naction = \"shred\""),
            "venues[0].prospects.action",
        ),
        (activity("via = \"invoices\""), "schema.activity[0].via"),
        (
            activity("via_key = \"order_id\""),
            "schema.activity[0].via_key",
        ),
        (
            activity("").replace("\"tickets\"", "\"tickets; DROP TABLE x\""),
            "schema.activity[0].table",
        ),
        (two_venues, "venues[1].id"),
        (no_key_for_customers, "venues[0].anonymise.email"),
        (no_key, "schema.references[0].columns.billing_email"),
        (
            delete.replace(
                &format!("hash_key = \"{HASH_KEY}\""),
                "hash_key = \"short-key-0123456789\"",
            ),
            "secrets.hash_key",
        ),
        (
            delete.replace("via = \"orders\"", "via = \"invoices\""),
            "schema.references[2].via",
        ),
        (
            delete.replace(
                "via = \"orders\"",
                "via = \"orders\"\non_delete = \"delete\"",
            ),
            "schema.references[2].via",
        ),
        (
            delete.replacen(
                "on_delete = \"delete\"",
                "on_delete = \"delete\"\non_anonymise = \"scrub\"",
                1,
            ),
            "schema.references[1].on_anonymise",
        ),
        (
            delete.replace("billing_email = \"hash\"", "billing_email = \"shred\""),
            "schema.references[0].columns.billing_email",
        ),
        (
            delete.clone() + "\n[journal]\npath = \"\"\n",
            "journal.path",
        ),
        (
            delete.replace(
                r#"approvers = ["boxoffice@venue2.example"]"#,
                r#"approvers = ["Boss@venue2.example", "boss@venue2.example"]"#,
            ),
            "venues[0].approvers[1]",
        ),
        (
            config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""))
                .replace("max_share = 1.0", "max_share = 1.5"),
            "venues[0].max_share",
        ),
        (
            config_toml("oracle://x", &delete_venue(2, "3 years", "")),
            "database.url",
        ),
        (
            config_toml(
                "sqlite://file.db",
                &delete_venue(2, "3 years", "unknown_customer_id = \"x\""),
            ),
            "venues[0].unknown_customer_id",
        ),
        (
            config_toml(
                "sqlite://file.db",
                &anonymise_venue(1, "3 years", "")
                    .replace("city = \"keep\"", "id = \"null\"\ncity = \"keep\""),
            ),
            "venues[0].anonymise.id",
        ),
        (config_toml("sqlite://file.db", ""), "venues"),
        (
            config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""))
                + "\n[apply]\nmax_transaction_ms = 0\n",
            "apply.max_transaction_ms",
        ),
        (
            config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""))
                .replace("[schema]", "[schema]\ncustomer_activity = [\"last login\"]"),
            "schema.customer_activity[0]",
        ),
        (
            config_toml("sqlite://file.db", &delete_venue(2, "3 years", ""))
                .replace("[schema]", "[schema]\norders = \"naïve\""),
            "schema.orders",
        ),
    ];
    for (text, key) in cases {
        let err = load(&text, &[]).expect_err(key).to_string();
        assert!(
            err.contains(&format!(": {key}: ")),
            "expected key {key} in: {err}"
        );
        assert!(err.contains("retentiond.toml"), "{err}");
    }
}

#[test]
fn shipped_example_configuration_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/retentiond.example.toml");

    let config = load_with_env(&path, BTreeMap::new()).expect("the example configuration loads");

    assert_eq!(config.venues.len(), 2);
    assert_eq!(
        config.venues[0].anonymise.len(),
        13,
        "the example classifies every reference column"
    );
}
