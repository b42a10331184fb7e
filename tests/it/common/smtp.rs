//! A real SMTP listener for tests: speaks enough of the protocol for lettre (EHLO, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT) and keeps every accepted message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    pub fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_string()
    }

    /// The text with quoted-printable soft line breaks undone.
    pub fn text(&self) -> String {
        self.data.replace("=\r\n", "")
    }

    /// The first approval link in the message.
    pub fn link(&self) -> Option<String> {
        let text = self.text();
        text.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
            .find(|w| w.starts_with("http") && w.contains("/r/"))
            .map(str::to_string)
    }
}

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Healthy,
    /// Drops every connection in the middle of the message.
    Flapping,
    /// Answers the first message of the first connection one byte every 400 ms (a server that
    /// trickles, each read well inside a client's timeout), then behaves.
    TricklesFirstAnswer,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (e.g. a port that was down before).
    pub async fn start_at(addr: SocketAddr) -> SmtpSink {
        Self::start_with(addr, Behaviour::Healthy).await
    }

    /// A sink whose first answer to a message trickles in over about 5 s (see
    /// [`Behaviour::TricklesFirstAnswer`]); it keeps that message.
    pub async fn start_trickling_first() -> SmtpSink {
        Self::start_with(
            "127.0.0.1:0".parse().unwrap(),
            Behaviour::TricklesFirstAnswer,
        )
        .await
    }

    /// Listens on `addr` but drops every connection in the middle of the message (a flapping
    /// server): nothing it receives is ever accepted.
    pub async fn start_flapping_at(addr: SocketAddr) -> SmtpSink {
        Self::start_with(addr, Behaviour::Flapping).await
    }

    async fn start_with(addr: SocketAddr, behaviour: Behaviour) -> SmtpSink {
        // A stopped sink's port is released once its task is dropped: retry briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind SMTP sink: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let first = accepted.fetch_add(1, Ordering::SeqCst) == 0;
                let store = store.clone();
                let behaviour = match behaviour {
                    Behaviour::TricklesFirstAnswer if !first => Behaviour::Healthy,
                    other => other,
                };
                tokio::spawn(async move {
                    let _ = session(socket, store, behaviour).await;
                });
            }
        });
        SmtpSink {
            addr,
            mails,
            connections,
            task: Some(task),
        }
    }

    /// A free local port with nothing listening on it (the SMTP server is "down").
    pub async fn unused_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// How many connections the sink has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
    behaviour: Behaviour,
) -> std::io::Result<()> {
    let flapping = behaviour == Behaviour::Flapping;
    let mut trickle = behaviour == Behaviour::TricklesFirstAnswer;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("EHLO") || command.starts_with("HELO") {
            write
                .write_all(b"250-sink.test\r\n250 8BITMIME\r\n")
                .await?;
        } else if command.starts_with("MAIL FROM") {
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
            to.push(address);
            write.write_all(b"250 OK\r\n").await?;
        } else if command == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                if flapping && data.len() > 200 {
                    return Ok(()); // the connection drops mid-message
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
            }
            store.lock().unwrap().push(Mail {
                to: to.clone(),
                data,
            });
            if std::mem::take(&mut trickle) {
                for byte in b"250 queued\r\n" {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    write.write_all(&[*byte]).await?;
                }
            } else {
                write.write_all(b"250 queued\r\n").await?;
            }
        } else if command == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
}
