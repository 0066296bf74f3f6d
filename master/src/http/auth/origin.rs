//! Where a request came from, as far as a browser tells us: the `Origin` header, else the
//! `Referer`, compared with the `Host` the request was sent to.
//!
//! Why not `SameSite` alone: "same site" is the registrable domain, not the port. A task's
//! web server on a Pi (`http://pi-a:8080`) is same-site with the master's UI
//! (`http://pi-a:5050`), so a page it serves could post to the master with the operator's
//! cookie attached. Browsers send `Origin` on every POST (same-origin ones included), which
//! names the scheme, host and port exactly; that is what is compared here.

use axum::http::uri::{Authority, Uri};
use axum::http::{header, HeaderMap};

/// What the headers say about a request's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// `Origin` (or, without it, `Referer`) names the host and port the request was sent to.
    SameOrigin,
    /// It names somewhere else (or is `null`, or cannot be parsed): the value, for the log.
    CrossOrigin(String),
    /// Neither header is present: not a browser, or a browser told to send no referrer.
    Unknown,
}

/// Classifies a request by its `Origin`, falling back on `Referer`, against its `Host`.
pub fn provenance(headers: &HeaderMap) -> Provenance {
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER));
    let Some(claimed) = claimed else {
        return Provenance::Unknown;
    };
    let claimed_text = String::from_utf8_lossy(claimed.as_bytes()).into_owned();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok());
    match (claimed.to_str().ok().and_then(origin_of), host) {
        (Some(origin), Some(host)) if origin.serves(&host) => Provenance::SameOrigin,
        _ => Provenance::CrossOrigin(claimed_text),
    }
}

/// The scheme, host and port of an `Origin` or `Referer` value.
struct Origin {
    host: String,
    port: u16,
    /// The port a `Host` header without one means, for this origin's scheme.
    default_port: u16,
}

fn origin_of(value: &str) -> Option<Origin> {
    // Only the scheme and authority matter (a Referer goes on with a path, query, fragment).
    // `null` (sandboxed frames, some redirects) has no scheme and so is cross-origin.
    let value = value.trim();
    let authority_at = value.find("://")? + 3;
    let end = value[authority_at..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| authority_at + i);
    let uri: Uri = value[..end].parse().ok()?;
    let default_port = match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("http") => 80,
        s if s.eq_ignore_ascii_case("https") => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    Some(Origin {
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(default_port),
        default_port,
    })
}

impl Origin {
    /// Whether a request sent to `host` (the `Host` header) came from this origin. A `Host`
    /// without a port means the default port of the scheme the origin used.
    fn serves(&self, host: &Authority) -> bool {
        host.host().eq_ignore_ascii_case(&self.host)
            && host.port_u16().unwrap_or(self.default_port) == self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn origin_must_name_the_host_and_port_the_request_went_to() {
        let same = [
            ("http://pi-a:5050", "pi-a:5050"),
            ("http://PI-A:5050", "pi-a:5050"),
            ("http://127.0.0.1:5050", "127.0.0.1:5050"),
            ("http://[::1]:5050", "[::1]:5050"),
            ("https://bramble.example", "bramble.example"),
            ("http://bramble.example:80", "bramble.example"),
        ];
        for (origin, host) in same {
            let h = headers(&[(header::ORIGIN, origin), (header::HOST, host)]);
            assert_eq!(provenance(&h), Provenance::SameOrigin, "{origin} → {host}");
        }
        let foreign = [
            // A task's web server on the same Pi: same site, not same origin.
            ("http://pi-a:8080", "pi-a:5050"),
            ("http://evil.example", "pi-a:5050"),
            ("http://pi-a.evil.example:5050", "pi-a:5050"),
            ("null", "pi-a:5050"),
            ("file://", "pi-a:5050"),
            ("http://bramble.example:8080", "bramble.example"),
        ];
        for (origin, host) in foreign {
            let h = headers(&[(header::ORIGIN, origin), (header::HOST, host)]);
            assert!(
                matches!(provenance(&h), Provenance::CrossOrigin(_)),
                "{origin} → {host}"
            );
        }
        let no_host = headers(&[(header::ORIGIN, "http://pi-a:5050")]);
        assert!(matches!(provenance(&no_host), Provenance::CrossOrigin(_)));
    }

    #[test]
    fn referer_stands_in_for_a_missing_origin_and_origin_wins_over_it() {
        let h = headers(&[
            (header::REFERER, "http://pi-a:5050/#/tasks/x"),
            (header::HOST, "pi-a:5050"),
        ]);
        assert_eq!(provenance(&h), Provenance::SameOrigin);
        let h = headers(&[
            (header::REFERER, "http://pi-a:8080/attack.html"),
            (header::HOST, "pi-a:5050"),
        ]);
        assert!(matches!(provenance(&h), Provenance::CrossOrigin(_)));
        let h = headers(&[
            (header::ORIGIN, "http://pi-a:8080"),
            (header::REFERER, "http://pi-a:5050/"),
            (header::HOST, "pi-a:5050"),
        ]);
        assert!(matches!(provenance(&h), Provenance::CrossOrigin(_)));
        let h = headers(&[(header::HOST, "pi-a:5050")]);
        assert_eq!(provenance(&h), Provenance::Unknown);
    }
}
