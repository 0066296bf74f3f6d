//! `http://` and `https://` artifacts: a GET streamed into the sink, following up to
//! [`MAX_REDIRECTS`] redirects. HTTPS trusts the Mozilla roots compiled in (`webpki-roots`):
//! a card has no system certificate store to rely on.

use super::Sink;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{header, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

pub(super) struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http::Client")
    }
}

impl Client {
    pub(super) fn new() -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(https),
        })
    }

    /// GETs `url` into `sink`.
    pub(super) async fn download(&self, url: &str, sink: &mut Sink) -> Result<(), String> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
            let request = Request::get(uri.clone())
                .header(
                    header::USER_AGENT,
                    concat!("bramble-agent/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| format!("bad request for {url:?}: {e}"))?;
            let response = self.inner.request(request).await.map_err(|e| chain(&e))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("HTTP {status} without a Location"))?;
                url = redirect_target(&uri, location)?;
                continue;
            }
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            let announced = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(total) = announced {
                sink.expect(total)?;
            }
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading the body: {}", chain(&e)))?;
                if let Ok(data) = frame.into_data() {
                    sink.write(&data).await?;
                }
            }
            if let Some(total) = announced {
                if sink.written() != total {
                    return Err(format!(
                        "the body ended after {} of the {total} bytes announced",
                        sink.written()
                    ));
                }
            }
            return Ok(());
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

/// Where a redirect leads: an absolute http(s) URL, or a path on the same server.
fn redirect_target(from: &Uri, location: &str) -> Result<String, String> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(location.to_string());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = from.scheme_str().unwrap_or("http");
        let authority = from.authority().map_or("", |a| a.as_str());
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(format!("redirected to {location:?}: not an http(s) URL"))
}

/// An error with its causes: hyper's own text alone says little ("client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_http() {
        let from: Uri = "http://h:8080/a/b".parse().unwrap();
        assert_eq!(redirect_target(&from, "/c").unwrap(), "http://h:8080/c");
        assert_eq!(
            redirect_target(&from, "https://x/y").unwrap(),
            "https://x/y"
        );
        assert!(redirect_target(&from, "file:///etc/passwd").is_err());
        assert!(redirect_target(&from, "//evil/x").is_err());
    }
}
