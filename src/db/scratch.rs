//! Scratch databases, shared by the tests and the benchmark: a fresh PostgreSQL schema or MySQL
//! database on the server a URL names, and the URL that reaches it. (A SQLite scratch database
//! is a file in a temporary directory.) Production never makes one.

use super::{Backend, Db, Query};
use anyhow::{bail, Context, Result};

/// The variable that names the test server of a server backend (`.ci/run` sets both).
pub fn server_variable(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some("RETENTIOND_TEST_POSTGRES_URL"),
        Backend::Mysql => Some("RETENTIOND_TEST_MYSQL_URL"),
    }
}

/// The URL of the scratch `name` (a schema on PostgreSQL, a database on MySQL) on the server
/// that `base` reaches, its query string kept.
pub fn url_of(backend: Backend, base: &str, name: &str) -> String {
    match backend {
        Backend::Postgres => {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{name}")
        }
        Backend::Mysql => {
            let (server, query) = base
                .split_once('?')
                .map_or((base, None), |(s, q)| (s, Some(q)));
            let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
            match query {
                Some(q) => format!("{server}/{name}?{q}"),
                None => format!("{server}/{name}"),
            }
        }
        Backend::Sqlite => base.to_string(),
    }
}

/// What a scratch is on `backend`, in SQL.
fn kind(backend: Backend) -> Result<&'static str> {
    match backend {
        Backend::Postgres => Ok("SCHEMA"),
        Backend::Mysql => Ok("DATABASE"),
        Backend::Sqlite => bail!("a SQLite scratch database is a file, not made on a server"),
    }
}

/// Only names the tests and the benchmark make (letters, digits, `_`) are accepted.
fn checked(name: &str) -> Result<&str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("scratch database name {name:?}: expected lowercase letters, digits and _");
    }
    Ok(name)
}

/// Makes the scratch `name` afresh on the server `base` reaches (one left by an earlier run
/// of the same name is dropped first) and returns its URL.
pub async fn create(backend: Backend, base: &str, name: &str) -> Result<String> {
    let (kind, name) = (kind(backend)?, checked(name)?);
    let cascade = if backend == Backend::Postgres {
        " CASCADE"
    } else {
        ""
    };
    let admin = Db::connect(base)
        .await
        .with_context(|| format!("reaching the {} test server", backend.name()))?;
    admin
        .execute(&Query::new(&format!(
            "DROP {kind} IF EXISTS {name}{cascade}"
        )))
        .await?;
    admin
        .execute(&Query::new(&format!("CREATE {kind} {name}")))
        .await?;
    admin.close().await;
    Ok(url_of(backend, base, name))
}

/// Drops the scratch `name` from the server `base` reaches, if it is there.
pub async fn drop(backend: Backend, base: &str, name: &str) -> Result<()> {
    let (kind, name) = (kind(backend)?, checked(name)?);
    let cascade = if backend == Backend::Postgres {
        " CASCADE"
    } else {
        ""
    };
    let admin = Db::connect(base).await?;
    admin
        .execute(&Query::new(&format!(
            "DROP {kind} IF EXISTS {name}{cascade}"
        )))
        .await?;
    admin.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_url_keeps_the_server_and_its_options() {
        assert_eq!(
            url_of(
                Backend::Mysql,
                "mysql://root@127.0.0.1:3306/test?ssl-mode=disabled",
                "t_1"
            ),
            "mysql://root@127.0.0.1:3306/t_1?ssl-mode=disabled"
        );
        assert_eq!(
            url_of(
                Backend::Postgres,
                "postgres://postgres@127.0.0.1/test",
                "t_1"
            ),
            "postgres://postgres@127.0.0.1/test?options=-c%20search_path%3Dt_1"
        );
        assert!(checked("t_1; DROP").is_err());
    }
}
