//! How client commands reach a server: URL, token and TLS CA, each a flag or an `IDEM_*`
//! variable, shared by every client command (`#[command(flatten)]`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use idem_client::{ClientOptions, IdemClient, Transport};

use crate::proto::idem_client::IdemClient as RawClient;

/// Default server address of client commands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where the server is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Server URL (https://… for a TLS server, with --ca-file).
    #[arg(long, env = "IDEM_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API token of a server with `[auth]`, sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "IDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's TLS certificate.
    #[arg(long, env = "IDEM_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Name the server's certificate carries, when it is not the URL's host.
    #[arg(long, env = "IDEM_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

impl ServerArgs {
    /// The client options these flags describe.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca_file: self.ca_file.clone(),
            tls_domain: self.tls_domain.clone(),
        }
    }

    /// A typed client, connected now.
    pub async fn client(&self) -> anyhow::Result<IdemClient> {
        IdemClient::connect_with(&self.server, &self.options())
            .await
            .with_context(|| {
                format!(
                    "cannot connect to idem server at {} (is `idem serve` running?)",
                    self.server
                )
            })
    }

    /// The generated client whose RPCs may take up to `timeout` (long polls such as
    /// WaitForCall; the others are capped by the client's usual timeout).
    pub async fn raw_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<RawClient<Transport>> {
        let options = self.options();
        let channel = idem_client::endpoint(&self.server, &options)?
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to idem server at {}", self.server))?;
        Ok(IdemClient::from_channel_with(channel, options.token.as_deref())?.raw())
    }

    /// The generated client, connected now (for RPCs the typed client does not wrap).
    pub async fn raw(&self) -> anyhow::Result<RawClient<Transport>> {
        Ok(self.client().await?.raw())
    }
}
