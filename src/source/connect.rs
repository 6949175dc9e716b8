//! db-sync's own connections to a PostgreSQL source (`check`, `status`, the slot guard,
//! `verify`, the signalling table, the publication's options, the source's identity), built
//! from `source:` as Debezium reads it, TLS included (`database.sslmode`,
//! `database.sslrootcert`), so a server that requires SSL (RDS and Cloud SQL by default) is
//! reachable and a plain one is not read in the clear by accident.
//!
//! `sslmode` as libpq means it: `disable`; `allow` and `prefer` (the default) try TLS first
//! and fall back to plain; `require` encrypts without checking the certificate; `verify-ca`
//! checks it against `database.sslrootcert`; `verify-full` checks the host name too.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::config::Config;
use crate::error::{Classify, ErrorKind};

/// A source setting db-sync cannot use for its own connections (`check`, `status`, signals).
#[derive(Debug, thiserror::Error)]
#[error("source.{key} {message}")]
pub struct SourceConfigError {
    pub key: String,
    pub message: String,
}

/// Why db-sync could not connect to the source, or a query on it failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Config(#[from] SourceConfigError),
    #[error("cannot connect to the source {described}: {}", pg_error(.source))]
    Connect {
        described: String,
        source: tokio_postgres::Error,
    },
    /// A statement failed; `what` says what it was for and on which source.
    #[error("{what}: {}", pg_error(.source))]
    Query {
        what: String,
        source: tokio_postgres::Error,
    },
}

impl SourceError {
    /// A failed statement, `what` naming its purpose (and the source, where it helps).
    pub fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
        let what = what.into();
        move |source| SourceError::Query { what, source }
    }
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Config(_) => ErrorKind::Config,
            SourceError::Connect { .. } => ErrorKind::Transient,
            SourceError::Query { source, .. } => {
                if is_transient(source) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                }
            }
        }
    }
}

/// Whether a retry can get past a failed statement: the connection went away, or the server
/// said so (SQLSTATE classes 08 connection, 40 rollback, 53 resources, 57 operator
/// intervention). A statement the server refuses otherwise fails the same way again.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => ["08", "40", "53", "57"]
            .iter()
            .any(|class| db.code().code().starts_with(class)),
        None => true,
    }
}

/// The server's own message when there is one (tokio-postgres' Display says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    }
}

/// A PostgreSQL source as `source:` names it: the client config (5 s connect timeout, the TLS
/// mode), a description (`host:port/db as user`, no password) for messages, and the TLS
/// connector for it.
pub fn pg_config(
    config: &Config,
    application: &str,
) -> Result<
    (
        tokio_postgres::Config,
        String,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    SourceConfigError,
> {
    let prop = |k: &str, d: &str| config.source_prop(k).unwrap_or_else(|| d.to_string());
    let host = prop("database.hostname", "localhost");
    let port = prop("database.port", "5432");
    let user = prop("database.user", "postgres");
    let dbname = prop("database.dbname", "postgres");
    let password = config.source_prop("database.password").unwrap_or_default();
    let port_num = port.parse::<u16>().map_err(|_| SourceConfigError {
        key: "database.port".into(),
        message: format!("{port:?} is not a port number"),
    })?;
    let mode = prop("database.sslmode", "prefer").to_ascii_lowercase();
    let (ssl_mode, verify) = match mode.as_str() {
        "disable" => (SslMode::Disable, Verify::None),
        "allow" | "prefer" => (SslMode::Prefer, Verify::None),
        "require" => (SslMode::Require, Verify::None),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => {
            return Err(SourceConfigError {
                key: "database.sslmode".into(),
                message: format!(
                    "{other:?} is not a mode; use disable, allow, prefer, require, verify-ca or verify-full"
                ),
            })
        }
    };
    let roots = config.source_prop("database.sslrootcert");
    let tls = connector(verify, roots.as_deref())?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&host)
        .port(port_num)
        .user(&user)
        .dbname(&dbname)
        .password(password)
        .ssl_mode(ssl_mode)
        .connect_timeout(std::time::Duration::from_secs(5))
        .application_name(application);
    Ok((pg, format!("{host}:{port}/{dbname} as {user}"), tls))
}

/// Connects to the source; the connection task runs on the current runtime.
pub async fn connect(
    config: &Config,
    application: &str,
) -> Result<(tokio_postgres::Client, String), SourceError> {
    let (pg, described, tls) = pg_config(config, application)?;
    let (client, conn) = pg
        .connect(tls)
        .await
        .map_err(|source| SourceError::Connect {
            described: described.clone(),
            source,
        })?;
    tokio::spawn(conn);
    Ok((client, described))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypt, trust any certificate (libpq's prefer and require).
    None,
    /// The certificate must chain to a trusted root; any host name.
    Chain,
    Full,
}

fn connector(
    verify: Verify,
    root_file: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SourceConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let bad = |message: String| SourceConfigError {
        key: "database.sslrootcert".into(),
        message,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("no TLS version: {e}")))?;
    let config = if verify == Verify::None {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match root_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(format!("cannot read {path}: {e}")))?;
                for cert in certs {
                    let cert = cert.map_err(|e| bad(format!("{path}: {e}")))?;
                    roots.add(cert).map_err(|e| bad(format!("{path}: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::Chain => Arc::new(AnyName(webpki)),
            _ => webpki,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Accepts any certificate, still checking the handshake's signatures (libpq's `require`).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain must verify; the host name may be any (libpq's `verify-ca`).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
