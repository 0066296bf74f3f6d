//! Health probes, run by the service scheduler (not the agent) against an instance's host and
//! ports, each bounded by its check's timeout: an HTTP GET (plain HTTP/1.0, status line read),
//! a TCP connect, or a command on the scheduler's host (`/bin/sh -c`, `HOST` and `PORT0`… in
//! its environment, killed at the timeout). The result is `Err(what was seen)` for the
//! instance's kill reason.

use super::spec::{HealthCheck, Protocol};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much of an HTTP answer is read looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// Runs `check` once against an instance on `host` with `ports`.
pub async fn probe(check: &HealthCheck, host: &str, ports: &[u16]) -> Result<(), String> {
    let timeout =
        Duration::try_from_secs_f64(check.timeout_secs.max(0.01)).unwrap_or(Duration::from_secs(1));
    let run = async {
        match check.protocol {
            Protocol::Tcp => {
                let port = port(check, ports)?;
                TcpStream::connect((host, port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("connecting to {host}:{port}: {e}"))
            }
            Protocol::Http => http(check, host, port(check, ports)?).await,
            Protocol::Command => command(check, host, ports).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:.1} s", timeout.as_secs_f64())),
    }
}

fn port(check: &HealthCheck, ports: &[u16]) -> Result<u16, String> {
    ports
        .get(check.port_index as usize)
        .copied()
        .ok_or_else(|| format!("the instance has no PORT{}", check.port_index))
}

async fn http(check: &HealthCheck, host: &str, port: u16) -> Result<(), String> {
    let path = check.path.as_deref().unwrap_or("/");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: bramble-services\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending GET {path}: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer to GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = parse_status(&head)
        .ok_or_else(|| format!("GET {path}: no HTTP status line in the answer"))?;
    let ok = match check.status {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if ok {
        Ok(())
    } else {
        let want = check
            .status
            .map_or_else(|| "2xx or 3xx".to_string(), |s| s.to_string());
        Err(format!("GET {path} answered {status}, expected {want}"))
    }
}

/// `HTTP/1.x NNN …` → NNN.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

async fn command(check: &HealthCheck, host: &str, ports: &[u16]) -> Result<(), String> {
    let line = check.command.as_deref().unwrap_or("false");
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(line)
        .env("HOST", host)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Dropped at the timeout: the check does not outlive it.
        .kill_on_drop(true);
    for (n, p) in ports.iter().enumerate() {
        cmd.env(format!("PORT{n}"), p.to_string());
    }
    if let Some(first) = ports.first() {
        cmd.env("PORT", first.to_string());
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("starting /bin/sh: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let how = match out.status.code() {
        Some(code) => format!("exited {code}"),
        None => "was killed by a signal".to_string(),
    };
    if tail.is_empty() {
        Err(how)
    } else {
        Err(format!("{how}: {tail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn check(protocol: Protocol) -> HealthCheck {
        HealthCheck {
            protocol,
            path: None,
            status: None,
            port_index: 0,
            command: None,
            grace_secs: 0.0,
            interval_secs: 1.0,
            timeout_secs: 2.0,
            max_failures: 1,
        }
    }

    /// A one-shot HTTP server answering every request with `status`.
    async fn server(status: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.0 {status} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_checks_compare_the_status() {
        let ok = server(200).await;
        let bad = server(500).await;
        let c = check(Protocol::Http);
        probe(&c, "127.0.0.1", &[ok]).await.expect("200 passes");
        let e = probe(&c, "127.0.0.1", &[bad]).await.expect_err("500 fails");
        assert!(e.contains("answered 500"), "{e}");
        let mut want_500 = check(Protocol::Http);
        want_500.status = Some(500);
        probe(&want_500, "127.0.0.1", &[bad])
            .await
            .expect("as expected");
    }

    #[tokio::test]
    async fn tcp_and_command_checks() {
        let open = server(200).await;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = check(Protocol::Tcp);
        probe(&c, "127.0.0.1", &[open]).await.expect("connects");
        let e = probe(&c, "127.0.0.1", &[closed])
            .await
            .expect_err("refused");
        assert!(e.contains("connecting"), "{e}");
        let e = probe(&c, "127.0.0.1", &[]).await.expect_err("no port");
        assert!(e.contains("no PORT0"), "{e}");

        let mut cmd = check(Protocol::Command);
        cmd.command = Some("test \"$PORT0\" = 7 && test \"$HOST\" = h".into());
        probe(&cmd, "h", &[7]).await.expect("exit 0");
        cmd.command = Some("echo broken >&2; exit 3".into());
        let e = probe(&cmd, "h", &[7]).await.expect_err("exit 3");
        assert_eq!(e, "exited 3: broken");
        cmd.command = Some("exec sleep 5".into());
        cmd.timeout_secs = 0.2;
        let e = probe(&cmd, "h", &[7]).await.expect_err("timeout");
        assert!(e.contains("no answer within"), "{e}");
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"SSH-2.0-x\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
