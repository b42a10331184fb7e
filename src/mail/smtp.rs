//! Sending over SMTP on connections kept open between messages (lettre's pool), and what is
//! done when a send has to be given up midway.
//!
//! A connection is used again only after a NOOP shows the server still answers, and one that
//! failed is closed. What lettre cannot know is a send this module stops at its deadline (a
//! server that trickles its answer, each read inside lettre's own timeout): that connection's
//! place in the conversation is unknown, and used again it would read the stopped message's
//! answer as the next command's, and so on, which can make a refused message look accepted.
//! So a send stopped at its deadline throws the whole pool away: the next message opens a new
//! connection, and the stopped one is closed with the old pool.

use anyhow::{bail, Context, Result};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Mutex;
use std::time::Duration;

/// The pool's shape: delivery sends one message at a time, so one connection is in use at
/// once (two leave room for `check`'s probe beside it); an idle minute closes it (a night's mail
/// comes in a burst, and the next night is a day away).
fn pool() -> PoolConfig {
    PoolConfig::new()
        .max_size(2)
        .idle_timeout(Duration::from_secs(60))
}

/// An SMTP server's transport, renewed after a send stopped at its deadline.
pub struct Smtp {
    builder: AsyncSmtpTransportBuilder,
    transport: Mutex<AsyncSmtpTransport<Tokio1Executor>>,
    send_timeout: Duration,
}

impl Smtp {
    /// For `url` (`smtp://`, `smtps://`; see `mail.smtp_url`), each read and write given up
    /// after 30 s and a whole send after `send_timeout`.
    pub(super) fn new(url: &str, send_timeout: Duration) -> Result<Smtp> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .context("mail.smtp_url is not a valid SMTP URL")?
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(pool());
        Ok(Smtp {
            transport: Mutex::new(builder.clone().build()),
            builder,
            send_timeout,
        })
    }

    pub(super) fn with_send_timeout(self, send_timeout: Duration) -> Smtp {
        Smtp {
            send_timeout,
            ..self
        }
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        self.transport.lock().expect("the SMTP transport").clone()
    }

    /// Sends `message`; a send that outlasts `send_timeout` is stopped and the pool renewed.
    pub(super) async fn send(&self, message: &Message) -> Result<()> {
        let transport = self.transport();
        match tokio::time::timeout(self.send_timeout, transport.send(message.clone())).await {
            Ok(sent) => {
                sent.context("SMTP send failed")?;
                Ok(())
            }
            Err(_) => {
                *self.transport.lock().expect("the SMTP transport") = self.builder.clone().build();
                bail!(
                    "SMTP send timed out after {} s; its connection is closed",
                    self.send_timeout.as_secs_f64()
                )
            }
        }
    }

    /// Whether the server accepts a connection and greets (nothing is sent).
    pub(super) async fn test_connection(&self) -> Result<bool> {
        Ok(self.transport().test_connection().await?)
    }
}
