//! The fetcher against a loopback HTTP server of the test's own (std threads: real sockets,
//! no framework), and hostile archives built byte by byte.

use super::*;
use bramble_proto::task::Artifact;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Serves `files` (path → body) over HTTP/1.1 on loopback until the test ends; counts the
/// requests. Unknown paths are 404.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split(' ').nth(1).unwrap_or("/").to_string();
            let reply = match files.get(&path) {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None if path == "/moved" => {
                    b"HTTP/1.1 302 Found\r\nLocation: /hello.txt\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    (base, hits)
}

fn fetcher(dir: &Path, max_bytes: u64) -> Fetcher {
    let opts = FetchOptions {
        cache_dir: dir.join("cache"),
        cache_bytes: 1 << 20,
        max_bytes,
        timeout: Duration::from_secs(20),
    };
    Fetcher::new(opts, MasterFetch::default()).unwrap()
}

fn sandbox(dir: &Path) -> PathBuf {
    let s = dir.join("sandbox");
    std::fs::create_dir_all(&s).unwrap();
    s
}

/// An archive entry: path, kind, contents or link target.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

/// A tar archive of `entries`, written raw so paths the tar crate's builder refuses (`..`,
/// absolute) can be made.
fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o4755);
        if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
            let raw = h.as_old_mut();
            raw.linkname[..data.len()].copy_from_slice(data);
            h.set_size(0);
        } else {
            h.set_size(data.len() as u64);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if *kind != tar::EntryType::Symlink && *kind != tar::EntryType::Link {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    let mut d = Digest::default();
    d.update(bytes);
    d.finish()
}

#[tokio::test]
async fn files_and_archives_land_in_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let archive = gz(&tar_of(&[
        ("app/", tar::EntryType::Directory, b""),
        (
            "app/run.sh",
            tar::EntryType::Regular,
            b"#!/bin/sh\necho hi\n",
        ),
        ("app/current", tar::EntryType::Symlink, b"run.sh"),
    ]));
    let files = HashMap::from([
        ("/hello.txt".to_string(), b"hello\n".to_vec()),
        ("/app.tgz".to_string(), archive),
        ("/tool".to_string(), b"#!/bin/sh\n".to_vec()),
    ]);
    let (base, _) = serve(files);
    let sandbox = sandbox(dir.path());
    let mut tool = Artifact::new(format!("{base}/tool"));
    tool.executable = true;
    let mut kept = Artifact::new(format!("{base}/app.tgz"));
    kept.extract = false;
    kept.output_file = Some("copy.tgz".into());
    let artifacts = vec![
        Artifact::new(format!("{base}/hello.txt")),
        Artifact::new(format!("{base}/app.tgz")),
        tool,
        kept,
        Artifact::new(format!("{base}/moved")),
    ];
    fetcher(dir.path(), 1 << 20)
        .fetch_all(&sandbox, &artifacts, None)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::read(sandbox.join("hello.txt")).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("app/run.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    let mode = std::fs::metadata(sandbox.join("app/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "permission bits kept, setuid dropped");
    assert!(
        !sandbox.join("app.tgz").exists(),
        "an unpacked archive is not kept"
    );
    assert!(
        sandbox.join("copy.tgz").is_file(),
        "extract = false keeps it"
    );
    let mode = std::fs::metadata(sandbox.join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Followed a redirect, named after the uri it was asked for.
    assert_eq!(std::fs::read(sandbox.join("moved")).unwrap(), b"hello\n");
    let leftovers: Vec<_> = std::fs::read_dir(&sandbox)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn failures_name_the_uri_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![7u8; 4096];
    let (base, _) = serve(HashMap::from([("/big".to_string(), body.clone())]));
    let sandbox = sandbox(dir.path());
    let f = fetcher(dir.path(), 1024);
    let missing = format!("{base}/nothing");
    let e = f
        .fetch_all(&sandbox, &[Artifact::new(&missing)], None)
        .await
        .unwrap_err();
    assert_eq!(e.uri, missing);
    assert!(e.cause.contains("404"), "{e}");
    let e = f
        .fetch_all(&sandbox, &[Artifact::new(format!("{base}/big"))], None)
        .await
        .unwrap_err();
    assert!(e.cause.contains("larger than"), "{e}");
    let f = fetcher(dir.path(), 1 << 20);
    let mut wrong = Artifact::new(format!("{base}/big"));
    wrong.sha256 = Some("0".repeat(64));
    let e = f.fetch_all(&sandbox, &[wrong], None).await.unwrap_err();
    assert!(e.cause.contains("sha256 mismatch"), "{e}");
    assert!(
        !sandbox.join("big").exists(),
        "nothing of a bad download stays"
    );
    let mut right = Artifact::new(format!("{base}/big"));
    right.sha256 = Some(sha(&body).to_uppercase());
    f.fetch_all(&sandbox, &[right], None).await.unwrap();
    // Nothing listens there: a clear connection error, not a hang.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    let e = f
        .fetch_all(&sandbox, &[Artifact::new(&gone)], None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("fetching {gone}: ")),
        "{e}"
    );
    // master: with no master link.
    let e = f
        .fetch_all(&sandbox, &[Artifact::new("master:app.tgz")], None)
        .await
        .unwrap_err();
    assert!(e.cause.contains("not connected to the master"), "{e}");
    // A uri the fetcher does not take.
    let e = f
        .fetch_all(&sandbox, &[Artifact::new("file:///etc/passwd")], None)
        .await
        .unwrap_err();
    assert!(e.cause.contains("only http://"), "{e}");
}

#[tokio::test]
async fn a_cached_artifact_is_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let body = b"cached bytes".to_vec();
    let (base, hits) = serve(HashMap::from([("/c.bin".to_string(), body.clone())]));
    let f = fetcher(dir.path(), 1 << 20);
    let mut a = Artifact::new(format!("{base}/c.bin"));
    a.cache = true;
    a.sha256 = Some(sha(&body));
    for n in 0..3 {
        let sandbox = dir.path().join(format!("s{n}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        f.fetch_all(&sandbox, std::slice::from_ref(&a), None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(sandbox.join("c.bin")).unwrap(), body);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "downloaded once, then copied"
    );
    // Another digest is another cache entry (and here, a mismatch).
    let mut other = a.clone();
    other.sha256 = Some("1".repeat(64));
    let sandbox = sandbox(dir.path());
    assert!(f.fetch_all(&sandbox, &[other], None).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn the_cache_keeps_to_its_budget_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = cache::Cache::open(&cache_dir, 2500).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![0u8; 1000]).unwrap();
    rt.block_on(async {
        for key in ["a", "b"] {
            cache.store(key, &src).await;
        }
        // `a` is used: `b` is now the least recently used.
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(cache_dir.join("b"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.store("c", &src).await;
    });
    assert!(cache_dir.join("a").exists());
    assert!(
        !cache_dir.join("b").exists(),
        "the least recently used went"
    );
    assert!(cache_dir.join("c").exists());
}

/// Unpacks `archive` (a plain tar) into a fresh sandbox.
fn unpack_tar(archive: Vec<u8>) -> (tempfile::TempDir, Result<u64, String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, archive).unwrap();
    let sandbox = sandbox(dir.path());
    let r = extract::unpack(
        &path,
        bramble_proto::artifact::ArchiveKind::Tar,
        &sandbox,
        1 << 20,
        std::time::Instant::now() + std::time::Duration::from_secs(60),
    );
    (dir, r)
}

#[test]
fn archive_entries_never_leave_the_sandbox() {
    use tar::EntryType::{Directory, Fifo, Link, Regular, Symlink};
    let hostile: [(&str, Vec<Entry>); 11] = [
        ("dot-dot", vec![("../escaped", Regular, b"x")]),
        ("nested dot-dot", vec![("a/../../escaped", Regular, b"x")]),
        (
            "absolute",
            vec![("/tmp/escaped-by-bramble-test", Regular, b"x")],
        ),
        ("symlink up", vec![("out", Symlink, b"../..")]),
        ("symlink absolute", vec![("etc", Symlink, b"/etc")]),
        (
            "write through a symlink",
            vec![("d", Directory, b""), ("d/up", Symlink, b"../../x")],
        ),
        ("hard link", vec![("shadow", Link, b"/etc/shadow")]),
        // Lexically inside, but `p` is the sandbox itself: the kernel climbs out.
        (
            "a chain through a link",
            vec![
                ("p", Symlink, b"."),
                ("stdout", Symlink, b"p/p/p/../../../etc/passwd"),
            ],
        ),
        (
            "a link whose directory is a link",
            vec![("p", Symlink, b"."), ("p/p/p/x", Symlink, b"../../../etc")],
        ),
        ("dot-dot after a name", vec![("x", Symlink, b"a/../../etc")]),
        ("fifo", vec![("pipe", Fifo, b"")]),
    ];
    for (what, entries) in hostile {
        let (dir, r) = unpack_tar(tar_of(&entries));
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(!dir.path().join("escaped").exists(), "{what}");
    }
    assert!(!Path::new("/tmp/escaped-by-bramble-test").exists());
    // Links that stay inside are fine.
    let (dir, r) = unpack_tar(tar_of(&[
        ("lib/", Directory, b""),
        ("lib/a.so.1", Regular, b"elf"),
        ("lib/a.so", Symlink, b"a.so.1"),
        ("bin/", Directory, b""),
        ("bin/a", Symlink, b"../lib/a.so"),
    ]));
    assert_eq!(r.unwrap(), 3);
    let sandbox = dir.path().join("sandbox");
    assert_eq!(std::fs::read(sandbox.join("bin/a")).unwrap(), b"elf");
}

#[test]
fn an_archive_bigger_unpacked_than_allowed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![0u8; 600 << 10];
    let archive = tar_of(&[
        ("a", tar::EntryType::Regular, &big),
        ("b", tar::EntryType::Regular, &big),
    ]);
    let path = dir.path().join("bomb.tgz");
    std::fs::write(&path, gz(&archive)).unwrap();
    let sandbox = sandbox(dir.path());
    let e = extract::unpack(
        &path,
        bramble_proto::artifact::ArchiveKind::TarGz,
        &sandbox,
        1 << 20,
        std::time::Instant::now() + std::time::Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(e.contains("unpacks to more than"), "{e}");
}

#[tokio::test]
async fn fetched_files_go_to_the_task_user_links_untouched() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP fetched files' owner: needs root (chown)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"agent's").unwrap();
    let archive = tar_of(&[
        ("d/", tar::EntryType::Directory, b""),
        ("d/f", tar::EntryType::Regular, b"x"),
        ("d/l", tar::EntryType::Symlink, b"f"),
    ]);
    let (base, _) = serve(HashMap::from([("/a.tar".to_string(), archive)]));
    let sandbox = sandbox(dir.path());
    // A link out of the sandbox, as an earlier run's task could leave (an archive cannot
    // hold one): handing the sandbox over must change the link, not the file it names.
    std::os::unix::fs::symlink(&outside, sandbox.join("out")).unwrap();
    let owner = Owner {
        uid: 70123,
        gid: 70123,
    };
    fetcher(dir.path(), 1 << 20)
        .fetch_all(
            &sandbox,
            &[Artifact::new(format!("{base}/a.tar"))],
            Some(owner),
        )
        .await
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    for p in ["d", "d/f", "d/l", "out"] {
        let m = std::fs::symlink_metadata(sandbox.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (70123, 70123), "{p}");
    }
    let m = std::fs::metadata(&outside).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "chowned through the link");
}

/// The tar crate reads a GNU long name whole into memory: a huge one (which gzip would make
/// tiny) is cut off at the allowance between two entries, and so is an unpack past its
/// deadline.
#[test]
fn headers_between_entries_and_the_time_taken_are_bounded() {
    let long_name = vec![b'a'; 2 << 20];
    let (_dir, r) = unpack_tar(tar_of(&[
        ("././@LongLink", tar::EntryType::GNULongName, &long_name),
        ("x", tar::EntryType::Regular, b"x"),
    ]));
    let e = r.unwrap_err();
    assert!(e.contains("of headers between two entries"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, tar_of(&[("x", tar::EntryType::Regular, b"x")])).unwrap();
    let sandbox = sandbox(dir.path());
    let e = extract::unpack(
        &path,
        bramble_proto::artifact::ArchiveKind::Tar,
        &sandbox,
        1 << 20,
        std::time::Instant::now() - std::time::Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(e.contains("took longer"), "{e}");
}
