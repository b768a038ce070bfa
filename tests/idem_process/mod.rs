//! `idem serve` as a child process of a test (several instances on one store): started on a
//! loopback port, its log kept in a temporary file, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use idem::proto::idem_client::IdemClient;
use tonic::transport::Channel;

/// A running `idem serve`.
pub struct IdemProcess {
    child: Child,
    pub url: String,
    log: tempfile::NamedTempFile,
}

impl IdemProcess {
    /// Starts `idem serve --listen 127.0.0.1:0` with `args` and waits for its banner.
    pub fn start(args: &[&str]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "idem=info")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn idem serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut p = Self {
            child,
            url: String::new(),
            log,
        };
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(addr) = line.trim().strip_prefix("idem listening on ") else {
            panic!("idem serve did not start: {line:?}\n{}", p.log());
        };
        p.url = format!("http://{addr}");
        p
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A client of this instance.
    pub async fn client(&self) -> IdemClient<Channel> {
        IdemClient::connect(self.url.clone())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

impl Drop for IdemProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
