//! The S3-compatible server (moto) that `scripts/services.sh` starts.

use std::time::Duration;

/// The S3-compatible server (moto) that `scripts/services.sh` starts: `S3_ENDPOINT`, by
/// default http://127.0.0.1:19000, with bucket `audit`, key `test`, secret `test`.
pub fn s3_endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// Whether something accepts TCP connections at [`s3_endpoint`].
pub fn s3_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let endpoint = s3_endpoint();
    let authority = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(&endpoint)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let authority = if authority.contains(':') {
        authority
    } else if endpoint.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    authority
        .to_socket_addrs()
        .map(|mut addrs| {
            addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
        })
        .unwrap_or(false)
}
