//! Mail (SPEC 4, 7): messages are queued in `retention_outbox` inside the transaction of the
//! change they report, then delivered with retries and exponential back-off. A message is never
//! lost to an SMTP outage or a restart, and is marked sent only after the server accepted it.
//! Approval links are minted at send time, so a raw token is never stored.

pub(crate) mod compose;
pub mod smtp;

use crate::approval;
use crate::config::{MailConfig, MailTransport};
use crate::db::Tx;
use crate::{store, Service};
use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use lettre::message::Mailbox;
use lettre::Message;
use secrecy::ExposeSecret;
use std::path::PathBuf;
use tracing::{info, warn};

pub use crate::policy::MailKind as Kind;

pub use crate::store::outbox::Outgoing;

/// Queues a message inside `tx`, so it exists exactly when the change it reports does.
/// Queues one message of `kind` about `report_id` to each of `venue`'s approvers that `include`
/// accepts (all, or for a reminder those yet to approve), in the caller's transaction.
pub async fn queue_to_approvers(
    tx: &mut Tx<'_>,
    venue: &crate::config::VenueConfig,
    kind: Kind,
    report_id: i64,
    now: DateTime<Utc>,
    include: impl Fn(&str) -> bool,
) -> Result<()> {
    for approver in venue.approvers.iter().filter(|a| include(a)) {
        let message = Outgoing {
            kind,
            venue_id: venue.id,
            report_id: Some(report_id),
            recipient: approver,
            detail: None,
        };
        queue(tx, &message, now).await?;
    }
    Ok(())
}

/// Queues `message` inside `tx` (see [`store::outbox::queue`]), counted by kind.
pub async fn queue(tx: &mut Tx<'_>, message: &Outgoing<'_>, now: DateTime<Utc>) -> Result<()> {
    store::outbox::queue(tx, message, now).await?;
    metrics::counter!("retentiond_mail_queued_total", "kind" => message.kind.as_str()).increment(1);
    Ok(())
}

/// Queues an alert to `mail.ops`, if one is configured.
pub async fn queue_ops_alert(
    svc: &Service,
    tx: &mut Tx<'_>,
    kind: Kind,
    venue_id: i64,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if let Some(ops) = svc.config.mail.ops.as_deref() {
        queue(
            tx,
            &Outgoing {
                kind,
                venue_id,
                report_id: None,
                recipient: ops,
                detail: Some(detail),
            },
            now,
        )
        .await?;
    }
    Ok(())
}

/// How messages leave: SMTP, or one `.eml` file per message.
pub enum Mailer {
    Smtp {
        smtp: Box<smtp::Smtp>,
        from: Mailbox,
    },
    File {
        dir: PathBuf,
        from: Mailbox,
    },
}

/// The longest a single send may take, whatever the SMTP server does (lettre's own timeout
/// covers each read and write, not a server that trickles).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// While a message is being sent it is leased: another sender skips it until then.
const LEASE: i64 = 10 * 60;

impl Mailer {
    /// Messages go one at a time over an SMTP connection kept open between them (see
    /// `mail::smtp`): a fleet's night of a thousand approval requests is a few connections,
    /// not a thousand TCP and TLS handshakes and logins, which relays also throttle.
    pub fn from_config(config: &MailConfig) -> Result<Mailer> {
        let from: Mailbox = config
            .from
            .parse()
            .context("mail.from is not a valid address")?;
        Ok(match config.transport {
            MailTransport::Smtp => Mailer::Smtp {
                smtp: Box::new(smtp::Smtp::new(
                    config.smtp_url.expose_secret(),
                    SEND_TIMEOUT,
                )?),
                from,
            },
            MailTransport::File => Mailer::File {
                dir: config.dir.clone(),
                from,
            },
        })
    }

    /// The same mailer with another limit on one SMTP send (60 s by default); tests use it to
    /// give up on a slow server sooner.
    pub fn with_send_timeout(self, timeout: std::time::Duration) -> Mailer {
        match self {
            Mailer::Smtp { smtp, from } => Mailer::Smtp {
                smtp: Box::new(smtp.with_send_timeout(timeout)),
                from,
            },
            file => file,
        }
    }

    /// Whether mail can leave: the SMTP server answers (connects and greets; nothing is sent),
    /// or the file transport's folder can be created. `Err` says why not.
    pub async fn probe(&self) -> Result<()> {
        match self {
            Mailer::Smtp { smtp, .. } => {
                let answered = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    smtp.test_connection(),
                )
                .await
                .context("the SMTP server did not answer within 10 s")?
                .context("cannot reach the SMTP server")?;
                anyhow::ensure!(answered, "the SMTP server did not accept a connection");
                Ok(())
            }
            Mailer::File { dir, .. } => std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create mail.dir {}", dir.display())),
        }
    }

    fn from(&self) -> &Mailbox {
        match self {
            Mailer::Smtp { from, .. } | Mailer::File { from, .. } => from,
        }
    }

    async fn send(&self, outbox_id: i64, kind: Kind, message: &Message) -> Result<()> {
        match self {
            Mailer::Smtp { smtp, .. } => smtp.send(message).await?,
            Mailer::File { dir, .. } => {
                let name = format!("{outbox_id:08}-{}.eml", kind.as_str());
                write_private_file(dir, &name, message.formatted())
                    .await
                    .with_context(|| format!("cannot write mail into {}", dir.display()))?;
            }
        }
        Ok(())
    }
}

/// Writes `name` in `dir` readable by the service's user only (the directory 0700, the file
/// 0600): the messages hold live approval links. Written aside and renamed, so a reader never
/// sees half a message.
async fn write_private_file(
    dir: &std::path::Path,
    name: &str,
    contents: Vec<u8>,
) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let partial = dir.join(format!(".{name}.partial"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        file.write_all(&contents)?;
        file.sync_data()?;
        std::fs::rename(&partial, dir.join(name))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Delivery counts of one pass over the outbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub sent: u64,
    pub failed: u64,
    /// Messages whose report no longer needs them (e.g. a request for a cancelled report).
    pub obsolete: u64,
}

/// Back-off after `attempts` failures: 30 s doubling, at most an hour.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 8) - 1;
    Duration::seconds((30_i64 << exp).min(3600))
}

/// Delivers every message due at `now`; the daemon calls it every few seconds and `cycle`
/// before it exits. Each message is claimed first, so two senders never send the same one.
pub async fn deliver_due(svc: &Service, mailer: &Mailer, now: DateTime<Utc>) -> Result<Delivery> {
    let mut delivery = Delivery::default();
    let mut after_id = 0_i64;
    loop {
        let messages = store::outbox::due(&svc.db, now, after_id, 50).await?;
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let id = message.id;
            after_id = id;
            let attempts = message.attempts + 1;
            let lease = Duration::seconds(LEASE);
            // A message with an approval link is claimed in the transaction that mints its
            // token (`compose::Claim`); any other before it is composed.
            let claimed_with_token = message.kind.is_some_and(Kind::carries_approval_link);
            if !claimed_with_token && !store::outbox::claim(&svc.db, &message, now, lease).await? {
                continue;
            }
            let Some(kind) = message.kind else {
                warn!(outbox.id = id, "unknown message kind; left in the outbox");
                continue;
            };
            let queued = compose::Queued {
                id,
                kind,
                venue_id: message.venue_id,
                report_id: message.report_id,
                recipient: message.recipient.clone(),
                detail: message.detail.clone(),
            };
            let claim = claimed_with_token.then_some(compose::Claim {
                message: &message,
                lease,
            });
            let outcome = match compose::compose(svc, mailer.from(), &queued, now, claim).await {
                Ok(compose::Composed::Taken) => continue,
                Ok(compose::Composed::Unbuilt { error, token }) => {
                    approval::revoke(&svc.db, &token).await?;
                    Err(error)
                }
                // Failed before a claim with its token: the failed attempt is this sender's
                // only if it can claim the message now (another sender may be sending it).
                Err(e) if claimed_with_token => {
                    if !store::outbox::claim(&svc.db, &message, now, lease).await? {
                        continue;
                    }
                    Err(e)
                }
                Ok(compose::Composed::Obsolete(reason)) => {
                    store::outbox::mark_done(&svc.db, id, now, Some(&reason)).await?;
                    delivery.obsolete += 1;
                    continue;
                }
                Ok(compose::Composed::Ready { message, token }) => {
                    match mailer.send(id, kind, &message).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            if let Some(token) = token {
                                approval::revoke(&svc.db, &token).await?;
                            }
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    store::outbox::mark_done(&svc.db, id, now, None).await?;
                    delivery.sent += 1;
                    metrics::counter!("retentiond_mail_sent_total", "kind" => kind.as_str())
                        .increment(1);
                    info!(
                        outbox.id = id,
                        mail.kind = kind.as_str(),
                        report.id = queued.report_id,
                        "mail sent"
                    );
                }
                Err(e) => {
                    let retry_at = now + backoff(attempts);
                    store::outbox::retry_later(&svc.db, id, retry_at, &format!("{e:#}")).await?;
                    delivery.failed += 1;
                    metrics::counter!("retentiond_mail_failed_total", "kind" => kind.as_str())
                        .increment(1);
                    warn!(outbox.id = id, mail.kind = kind.as_str(), attempts, retry_at = %retry_at.to_rfc3339(), error = %format!("{e:#}"), "mail not sent; will retry");
                }
            }
        }
    }
    Ok(delivery)
}

/// Messages not yet sent (for `/metrics` and tests).
pub async fn pending_count(svc: &Service) -> Result<i64> {
    store::outbox::unsent(&svc.db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_to_an_hour() {
        assert_eq!(backoff(1), Duration::seconds(30));
        assert_eq!(backoff(2), Duration::seconds(60));
        assert_eq!(backoff(5), Duration::seconds(480));
        assert_eq!(backoff(50), Duration::seconds(3600));
    }
}
