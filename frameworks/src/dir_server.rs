//! `bramble serve-dir`: the http framework's server — HTTP/1.1 (axum on hyper) listing a
//! directory and serving its files.
//!
//! Directories get an HTML listing written here; files go to tower-http's `ServeDir`, which
//! already does ranges, HEAD, content types and conditional requests right. Request paths are
//! resolved component by component and `..` is refused, so nothing above the root is listed
//! (symlinks inside the root are followed: the root is the task's own sandbox).
//!
//! The server runs until SIGTERM or Ctrl-C — the agent's kill sends SIGTERM first — and then
//! finishes the requests in flight before it exits 0.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Router;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::services::ServeDir;
use tracing::{info, warn};

/// Characters left as they are in listing links (RFC 3986 unreserved).
const LINK: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Serves `dir` on `0.0.0.0:port` until SIGTERM or Ctrl-C.
pub async fn serve_dir(port: u16, dir: PathBuf) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the directory server to {addr}"))?;
    serve_dir_on(listener, dir, termination()).await
}

/// Serves `dir` on `listener` until `shutdown` resolves (for tests: any port, any signal).
pub async fn serve_dir_on(
    listener: TcpListener,
    dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("opening the directory to serve, {}", dir.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let addr = listener.local_addr()?;
    info!(%addr, dir = %root.display(), "serving a directory listing");
    let app = Router::new().fallback(handle).with_state(Arc::new(root));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    info!("directory server stopped");
    Ok(())
}

/// SIGTERM (the agent's kill) or Ctrl-C.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!("cannot watch SIGTERM ({e}); only Ctrl-C stops the server gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn handle(State(root): State<Arc<PathBuf>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "only GET and HEAD\n",
        )
            .into_response();
    }
    let url_path = req.uri().path().to_string();
    let Some(relative) = resolve(&url_path) else {
        return (StatusCode::BAD_REQUEST, "bad path\n").into_response();
    };
    let full = root.join(&relative);
    let is_dir = tokio::fs::metadata(&full).await.is_ok_and(|m| m.is_dir());
    if is_dir {
        if !url_path.ends_with('/') {
            // Relative links in the listing need the trailing slash.
            return Redirect::permanent(&format!("{url_path}/")).into_response();
        }
        return match listing(&full, &url_path).await {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                warn!(dir = %full.display(), "listing failed: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot list: {e}\n"),
                )
                    .into_response()
            }
        };
    }
    match ServeDir::new(root.as_path()).try_call(req).await {
        Ok(response) => response.map(Body::new),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The request path as a path relative to the root; `None` when it is not valid UTF-8 once
/// decoded, or tries to leave the root.
fn resolve(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(url_path).decode_utf8().ok()?;
    let mut out = PathBuf::new();
    for part in decoded.split('/') {
        if part.contains('\0') || part.contains('\\') {
            return None;
        }
        match Path::new(part).components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::Normal(name)) if Path::new(part).components().count() == 1 => {
                out.push(name)
            }
            _ => return None,
        }
    }
    Some(out)
}

/// An HTML listing of `dir`, shown as `url_path`: directories first, then files with sizes.
async fn listing(dir: &Path, url_path: &str) -> std::io::Result<String> {
    let mut entries = Vec::new();
    let mut read = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = read.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows symlinks; a dangling one is listed as a 0-byte file.
        let meta = tokio::fs::metadata(entry.path()).await.ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        let size = meta.map_or(0, |m| m.len());
        entries.push((!is_dir, name, size));
    }
    entries.sort();
    let title = escape(url_path);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n"
    );
    if url_path != "/" {
        html.push_str("<tr><td><a href=\"../\">../</a></td><td></td></tr>\n");
    }
    for (is_file, name, size) in entries {
        let slash = if is_file { "" } else { "/" };
        let href = utf8_percent_encode(&name, LINK);
        let size = if is_file {
            size.to_string()
        } else {
            String::new()
        };
        html.push_str(&format!(
            "<tr><td><a href=\"{href}{slash}\">{}{slash}</a></td><td align=\"right\">{size}</td></tr>\n",
            escape(&name)
        ));
    }
    html.push_str("</table>\n</body></html>\n");
    Ok(html)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(resolve("/"), Some(PathBuf::new()));
        assert_eq!(resolve("/a/./b/"), Some(PathBuf::from("a/b")));
        assert_eq!(resolve("/a%20b"), Some(PathBuf::from("a b")));
        assert_eq!(resolve("/../etc/passwd"), None);
        assert_eq!(resolve("/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(resolve("/a%2f..%2f..%2fx"), None);
        assert_eq!(resolve("/%00"), None);
        assert_eq!(resolve("/%ff"), None);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }

    /// One HTTP/1.1 request over a plain socket; returns (status code, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (code, body)
    }

    #[tokio::test]
    async fn lists_directories_serves_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("greeting <1>.txt"), "hello\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/inner"), "deep\n").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_dir_on(listener, dir.path().to_path_buf(), async {
            let _ = stopped.await;
        }));

        let (code, body) = get(addr, "/").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("greeting%20%3C1%3E.txt"), "{body}");
        assert!(body.contains("greeting &lt;1&gt;.txt"), "{body}");
        assert!(body.contains("href=\"sub/\""), "{body}");

        let (code, body) = get(addr, "/greeting%20%3C1%3E.txt").await;
        assert_eq!((code, body.as_str()), (200, "hello\n"));
        assert_eq!(get(addr, "/sub").await.0, 308);
        let (code, body) = get(addr, "/sub/").await;
        assert_eq!(code, 200);
        assert!(body.contains("inner") && body.contains("../"), "{body}");
        assert_eq!(get(addr, "/sub/inner").await, (200, "deep\n".to_string()));
        assert_eq!(get(addr, "/missing").await.0, 404);
        assert_eq!(get(addr, "/../etc/passwd").await.0, 400);

        stop.send(()).unwrap();
        server.await.unwrap().expect("clean shutdown");
    }
}
