//! Turning a queued outbox row into a message: subject, plain text and HTML from the kind's own
//! templates in `templates/mail/`. Messages carry counts, policy, expiry and the link; never
//! customer data.

use super::Kind;
use crate::approval;
use crate::policy::{Action, Outcome, ReportState};
use crate::reports::{self, Report};
use crate::Service;
use anyhow::{Context, Result};
use askama::Template;
use chrono::{DateTime, Utc};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

pub struct Queued {
    pub id: i64,
    pub kind: Kind,
    pub venue_id: i64,
    pub report_id: Option<i64>,
    pub recipient: String,
    pub detail: Option<String>,
}

pub enum Composed {
    /// `token` is the approval token minted for this message, revoked if the send fails.
    Ready {
        message: Message,
        token: Option<String>,
    },
    Obsolete(String),
    /// Another sender claimed the message first (only with a [`Claim`]).
    Taken,
    /// The message could not be built after its token was minted (and, with a [`Claim`], its
    /// claim committed with it): a failed attempt of this sender's, whose token is revoked.
    /// Any `Err` of [`compose`] came before a token, and so before such a claim.
    Unbuilt {
        error: anyhow::Error,
        token: String,
    },
}

/// The outbox row to claim in the transaction that mints an approval link's token: the claim
/// and the token are committed together, one commit a message rather than two (a fleet's first
/// night sends an approval request a venue). Messages without a link are claimed by the caller
/// before they are composed.
pub struct Claim<'a> {
    pub message: &'a crate::store::outbox::Queued,
    pub lease: chrono::Duration,
}

/// The values a message's templates render (`templates/mail/<kind>.txt` and `.html`).
struct View {
    /// An approval request sent again to those yet to approve.
    reminder: bool,
    subject: String,
    venue_name: String,
    report_id: i64,
    customer_count: i64,
    cutoff: String,
    policy: String,
    action_phrase: String,
    approvals_required: i64,
    link: String,
    expires: String,
    done: u64,
    done_verb: &'static str,
    skipped: u64,
    skip_lines: Vec<String>,
    /// What the holds kept back when the report was made ("" when nobody).
    held_back: String,
    detail: String,
}

/// One message kind's two templates, plain text and HTML, over the same [`View`].
macro_rules! mail_templates {
    ($($text:ident = $text_path:literal, $html:ident = $html_path:literal;)*) => {
        $(
            #[derive(Template)]
            #[template(path = $text_path)]
            struct $text<'a> {
                v: &'a View,
            }

            #[derive(Template)]
            #[template(path = $html_path)]
            struct $html<'a> {
                v: &'a View,
            }
        )*
    };
}

mail_templates! {
    RequestText = "mail/request.txt", RequestHtml = "mail/request.html";
    ExpiredText = "mail/expired.txt", ExpiredHtml = "mail/expired.html";
    AppliedText = "mail/applied.txt", AppliedHtml = "mail/applied.html";
    AlertText = "mail/alert.txt", AlertHtml = "mail/alert.html";
}

/// The plain text and the HTML of a message of `kind`: one template pair per kind (an
/// approval request and its reminder share theirs).
fn render(kind: Kind, v: &View) -> Result<(String, String)> {
    Ok(match kind {
        Kind::ApprovalRequest | Kind::Reminder => {
            (RequestText { v }.render()?, RequestHtml { v }.render()?)
        }
        Kind::Expired => (ExpiredText { v }.render()?, ExpiredHtml { v }.render()?),
        Kind::Applied => (AppliedText { v }.render()?, AppliedHtml { v }.render()?),
        Kind::BrakeAlert | Kind::FailureAlert => {
            (AlertText { v }.render()?, AlertHtml { v }.render()?)
        }
    })
}

pub fn skip_reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::SkippedActive => "active again since the report was made",
        Outcome::SkippedHeld => "under a hold",
        Outcome::SkippedGone => "no longer in the database",
        Outcome::SkippedIneligible => {
            "no longer covered by the policy (moved venue or already anonymised)"
        }
        Outcome::Kept => "kept out of the report by an approver",
        Outcome::Deleted | Outcome::Anonymised => "processed",
    }
}

fn action_phrase(svc: &Service, report: &Report) -> String {
    let linked =
        crate::wording::linked_tables_in_words(&svc.config.schema, report.action).join(" ");
    match report.action {
        Action::Delete => format!("delete the customers. {linked}"),
        Action::Anonymise => format!(
            "anonymise the customers (identifying fields removed, general fields kept). {linked}"
        ),
    }
}

pub async fn compose(
    svc: &Service,
    from: &Mailbox,
    queued: &Queued,
    now: DateTime<Utc>,
    claim: Option<Claim<'_>>,
) -> Result<Composed> {
    let words = crate::wording::VenueWords::of(&svc.config, queued.venue_id);
    let venue_name = words.name.clone();
    let report = match queued.report_id {
        Some(id) => Some(
            reports::get(&svc.db, id)
                .await?
                .with_context(|| format!("report {id} is missing"))?,
        ),
        None => None,
    };
    let mut view = View {
        reminder: queued.kind == Kind::Reminder,
        subject: String::new(),
        venue_name: venue_name.clone(),
        report_id: report.as_ref().map_or(0, |r| r.id),
        customer_count: report.as_ref().map_or(0, |r| r.customer_count),
        cutoff: report
            .as_ref()
            .map_or(String::new(), |r| words.date(r.cutoff)),
        policy: report.as_ref().map_or(String::new(), |r| r.policy.clone()),
        action_phrase: report
            .as_ref()
            .map_or(String::new(), |r| action_phrase(svc, r)),
        approvals_required: report.as_ref().map_or(0, |r| r.approvals_required),
        link: String::new(),
        expires: report
            .as_ref()
            .map_or(String::new(), |r| words.time(r.expires_at)),
        done: 0,
        done_verb: "",
        skipped: 0,
        skip_lines: vec![],
        held_back: String::new(),
        detail: queued.detail.clone().unwrap_or_default(),
    };
    let mut token = None;
    match (queued.kind, &report) {
        (Kind::ApprovalRequest | Kind::Reminder, Some(report)) => {
            view.held_back = report.held_back.in_words().unwrap_or_default();
            if report.state != ReportState::Pending || report.expires_at <= now {
                return Ok(Composed::Obsolete(format!(
                    "not sent: report is {}",
                    report.state
                )));
            }
            let mut tx = svc.db.begin().await?;
            if let Some(Claim { message, lease }) = claim {
                if !crate::store::outbox::claim_in(&mut tx, message, now, lease).await? {
                    return Ok(Composed::Taken);
                }
            }
            let minted = approval::mint(&mut tx, report, &queued.recipient, now).await?;
            tx.commit().await?;
            view.link = format!("{}/r/{minted}", svc.config.http.public_url);
            token = Some(minted);
            view.subject = if queued.kind == Kind::Reminder {
                format!(
                    "Reminder: approval needed for {venue_name} report {}",
                    report.id
                )
            } else {
                format!(
                    "Approval needed: {} {} inactive customers of {venue_name}",
                    report.action.as_str(),
                    report.customer_count
                )
            };
        }
        (Kind::Expired, Some(report)) => {
            view.subject = format!(
                "Expired: {venue_name} report {} was not approved",
                report.id
            );
        }
        (Kind::Applied, Some(report)) => {
            let (counts, holds) = reports::outcome_and_held_counts(&svc.db, report.id).await?;
            for (outcome, n) in &counts {
                match outcome {
                    Some(o @ Outcome::SkippedHeld) if !holds.is_empty() => {
                        view.skipped += n;
                        view.skip_lines.push(format!(
                            "{n} {} ({})",
                            skip_reason(*o),
                            reports::holds_in_words(&holds)
                        ));
                    }
                    Some(o) if o.is_skip() => {
                        view.skipped += n;
                        view.skip_lines.push(format!("{n} {}", skip_reason(*o)));
                    }
                    Some(_) => view.done += n,
                    None => {}
                }
            }
            view.done_verb = if report.action == Action::Delete {
                "deleted (order history kept on the Unknown Customer record)"
            } else {
                "anonymised"
            };
            view.subject = format!(
                "Done: {} customers {} at {venue_name}",
                view.done,
                if report.action == Action::Delete {
                    "deleted"
                } else {
                    "anonymised"
                }
            );
        }
        (Kind::BrakeAlert, _) => {
            view.subject = format!("ALERT: retentiond brake engaged for {venue_name}")
        }
        // A run's alert names one venue, or (venue id 0) lists several in its text.
        (Kind::FailureAlert, _) if svc.config.venue(queued.venue_id).is_none() => {
            view.venue_name = "your venues".into();
            view.subject = "ALERT: retentiond cycles failed for several venues".into()
        }
        (Kind::FailureAlert, _) => {
            view.subject = format!("ALERT: retentiond cycle failed for {venue_name}")
        }
        (_, None) => anyhow::bail!("a {} message needs a report", queued.kind.as_str()),
    }
    match build(from, queued, &view) {
        Ok(message) => Ok(Composed::Ready { message, token }),
        // Its claim is committed with the token: the caller counts the failure, revokes it.
        Err(error) => match token {
            Some(token) => Ok(Composed::Unbuilt { error, token }),
            None => Err(error),
        },
    }
}

/// The message of `view` to `queued`'s recipient: both templates rendered, and the headers.
fn build(from: &Mailbox, queued: &Queued, view: &View) -> Result<Message> {
    let (text, html) = render(queued.kind, view)?;
    let message = Message::builder()
        .from(from.clone())
        .to(queued
            .recipient
            .parse()
            .with_context(|| format!("outbox {}: invalid recipient", queued.id))?)
        .subject(view.subject.clone())
        .message_id(Some(format!(
            "<retentiond.outbox.{}@{}>",
            queued.id,
            from.email.domain()
        )))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )?;
    Ok(message)
}
