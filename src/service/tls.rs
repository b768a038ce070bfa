//! TLS for the gRPC listener: rustls (through tonic) with the PEM certificate chain and key
//! that `tls_cert` / `tls_key` name. Without both, the server speaks plaintext h2c.

use tonic::transport::{Identity, ServerTlsConfig};

use super::ServeError;
use crate::config::ServerConfig;

/// The TLS settings of `config`, or `None` for plaintext.
pub fn server_config(config: &ServerConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}
