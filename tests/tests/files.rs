//! Files: inspect and change them, and stream large files and directories in
//! and out.

use std::time::Instant;

use paddock_proto::v1::files_client::FilesClient;
use paddock_proto::v1::upload_request::Part;
use paddock_proto::v1::{
    DownloadRequest, FileType, ListDirRequest, MakeDirRequest, MoveRequest, RemoveRequest, StatRequest,
    UploadHeader, UploadRequest,
};
use paddock_tests::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

async fn files(d: &Daemon) -> FilesClient<Channel> {
    FilesClient::new(d.channel().await)
        .max_decoding_message_size(paddock_proto::MAX_MESSAGE)
        .max_encoding_message_size(paddock_proto::MAX_MESSAGE)
}

fn header(id: &str, path: &str, tar: bool) -> UploadRequest {
    UploadRequest {
        part: Some(Part::Header(UploadHeader {
            session_id: id.into(),
            path: path.into(),
            tar,
            mode: 0,
            owner: String::new(),
            ..Default::default()
        })),
    }
}

fn finish() -> UploadRequest {
    UploadRequest { part: Some(Part::Finish(true)) }
}

fn data(d: Vec<u8>) -> UploadRequest {
    UploadRequest { part: Some(Part::Data(d.into())) }
}

async fn download(f: &mut FilesClient<Channel>, id: &str, path: &str) -> Vec<u8> {
    let mut s =
        f.download(DownloadRequest { session_id: id.into(), path: path.into() }).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await.unwrap() {
        out.extend_from_slice(&c.data);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn file_operations_and_their_errors() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.as_str();
    let mut f = files(&d).await;

    let made = f
        .make_dir(MakeDirRequest { session_id: id.into(), path: "a/b/c".into(), owner: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.path, "/workspace/a/b/c");
    assert_eq!(made.r#type, FileType::Directory as i32);
    sh_ok(&mut c, id, "echo hi > /workspace/a/b/file; ln -s file /workspace/a/b/link").await;

    let st =
        f.stat(StatRequest { session_id: id.into(), path: "a/b/link".into() }).await.unwrap().into_inner();
    assert_eq!((st.r#type, st.link_target.as_str()), (FileType::Symlink as i32, "file"));
    let st = f
        .stat(StatRequest { session_id: id.into(), path: "/workspace/a/b/file".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.r#type, st.size), (FileType::File as i32, 3));

    let one = f
        .list_dir(ListDirRequest { session_id: id.into(), path: "a".into(), depth: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), vec!["/workspace/a/b"]);
    let all = f
        .list_dir(ListDirRequest { session_id: id.into(), path: "a".into(), depth: 5 })
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<_> = all.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/workspace/a/b", "/workspace/a/b/c", "/workspace/a/b/file", "/workspace/a/b/link"]
    );

    let moved = f
        .r#move(MoveRequest {
            session_id: id.into(),
            from: "a/b/file".into(),
            to: "moved".into(),
            overwrite: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.path, "/workspace/moved");
    sh_ok(&mut c, id, "echo other > /workspace/other").await;
    let e = f
        .r#move(MoveRequest {
            session_id: id.into(),
            from: "moved".into(),
            to: "other".into(),
            overwrite: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{}", e.message());

    let e = f
        .remove(RemoveRequest { session_id: id.into(), path: "a".into(), recursive: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    f.remove(RemoveRequest { session_id: id.into(), path: "a".into(), recursive: true }).await.unwrap();
    let e = f.stat(StatRequest { session_id: id.into(), path: "a".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("/workspace/a"), "{}", e.message());

    // Devices and FIFOs are refused, not read forever.
    sh_ok(&mut c, id, "mkfifo /workspace/fifo").await;
    let e = f.download(DownloadRequest { session_id: id.into(), path: "fifo".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e =
        f.download(DownloadRequest { session_id: id.into(), path: "/dev/zero".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = f.stat(StatRequest { session_id: id.into(), path: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("path"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_gib_round_trip_keeps_its_checksum() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, limits(Some(1 << 30), None, None)).await;
    let id = s.id.clone();
    let mut f = files(&d).await;

    // Pseudo-random content, hashed as it is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        tx.send(header(&id, "big.bin", false)).await.unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..CHUNKS {
            let mut chunk = vec![0u8; CHUNK];
            for word in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            hasher.update(&chunk);
            tx.send(data(chunk)).await.unwrap();
        }
        tx.send(finish()).await.unwrap();
        format!("{:x}", hasher.finalize())
    });
    let started = Instant::now();
    let info = f.upload(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let up = started.elapsed();
    let sent_sum = producer.await.unwrap();
    assert_eq!(info.size, (CHUNK * CHUNKS) as u64);
    let in_sandbox = sh_ok(&mut c, &s.id, "sha256sum /workspace/big.bin").await;
    assert!(in_sandbox.starts_with(&sent_sum), "{in_sandbox} vs {sent_sum}");

    let started = Instant::now();
    let mut stream = f
        .download(DownloadRequest { session_id: s.id.clone(), path: "big.bin".into() })
        .await
        .unwrap()
        .into_inner();
    let mut hasher = Sha256::new();
    let mut n = 0usize;
    while let Some(chunk) = stream.message().await.unwrap() {
        n += chunk.data.len();
        hasher.update(&chunk.data);
    }
    let down = started.elapsed();
    assert_eq!(n, CHUNK * CHUNKS);
    assert_eq!(format!("{:x}", hasher.finalize()), sent_sum);
    eprintln!(
        "1 GiB: upload {:.2} s ({:.0} MB/s), download {:.2} s ({:.0} MB/s)",
        up.as_secs_f64(),
        1073.741824 / up.as_secs_f64(),
        down.as_secs_f64(),
        1073.741824 / down.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn directories_round_trip_as_tar_and_broken_uploads_leave_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.clone();
    let mut f = files(&d).await;

    // A directory tree on the host, as a tar archive.
    let mut builder = tar::Builder::new(Vec::new());
    for (path, body, mode) in
        [("src/main.py", "print(1)\n", 0o644), ("run.sh", "#!/bin/sh\necho ran\n", 0o755)]
    {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        builder.append_data(&mut h, path, body.as_bytes()).unwrap();
    }
    let archive = builder.into_inner().unwrap();
    let stream = tokio_stream::iter(vec![header(&id, "proj", true), data(archive), finish()]);
    let info = f.upload(stream).await.unwrap().into_inner();
    assert_eq!(info.r#type, FileType::Directory as i32);
    assert_eq!(
        sh_ok(&mut c, &id, "cd /workspace/proj && ./run.sh && cat src/main.py").await,
        "ran\nprint(1)\n"
    );

    // And back: the same files.
    let tarball = download(&mut f, &id, "proj").await;
    let mut names: Vec<(String, Vec<u8>)> = tar::Archive::new(&tarball[..])
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            (name, body)
        })
        .filter(|(n, _)| n.ends_with(".py") || n.ends_with(".sh"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("run.sh".into(), b"#!/bin/sh\necho ran\n".to_vec()),
            ("src/main.py".into(), b"print(1)\n".to_vec())
        ]
    );

    // A stream that ends without `finish` is not kept either: to the server
    // it can look just like a client that died (an HTTP/2 CANCEL reset).
    let unfinished = tokio_stream::iter(vec![header(&id, "unfinished.bin", false), data(vec![1; 1000])]);
    let err = f.upload(unfinished).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled, "{err:?}");
    assert!(err.message().contains("finish"), "{err:?}");

    // An upload whose client dies half-way (its runtime, and so its
    // connection, torn down mid-stream) leaves no file, not even a temporary one.
    let (socket, id2) = (d.socket(), id.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tx = rt.block_on(async move {
            let mut f = FilesClient::new(paddock_proto::dial::unix(socket).await.unwrap());
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(header(&id2, "half.bin", false)).await.unwrap();
            tx.send(data(vec![7u8; 1 << 20])).await.unwrap();
            let upload = f.upload(tokio_stream::wrappers::ReceiverStream::new(rx));
            tokio::select! {
                _ = upload => panic!("the upload ended although its stream did not"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
            }
            tx
        });
        drop(rt); // the crash: every task and connection of the client goes at once
        drop(tx);
    })
    .join()
    .unwrap();
    // The temporary file goes once the daemon sees the connection gone (on a
    // loaded machine that takes a moment); the file itself never appears.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = sh_ok(&mut c, &id, "ls -A /workspace").await;
        assert!(!left.lines().any(|l| l == "half.bin"), "a broken upload was kept: {left}");
        if !left.contains("half") && !left.contains("unfinished") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a broken upload left: {left}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_directory_streams_its_changes() {
    use paddock_proto::v1::{WatchEventKind, WatchRequest};
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let id = s.id.as_str();
    let mut f = files(&d).await;
    f.make_dir(MakeDirRequest { session_id: id.into(), path: "w".into(), owner: String::new() })
        .await
        .unwrap();
    let mut events = f
        .watch(WatchRequest { session_id: id.into(), path: "w".into(), recursive: true })
        .await
        .unwrap()
        .into_inner();

    sh_ok(&mut c, id, "cd /workspace/w && echo a > a.txt && mkdir sub && sleep 0.2 && echo b > sub/b.txt && mv a.txt c.txt && rm sub/b.txt").await;
    let want = [
        ("/workspace/w/a.txt", WatchEventKind::Created),
        ("/workspace/w/a.txt", WatchEventKind::Modified),
        ("/workspace/w/sub", WatchEventKind::Created),
        ("/workspace/w/sub/b.txt", WatchEventKind::Created),
        ("/workspace/w/a.txt", WatchEventKind::MovedFrom),
        ("/workspace/w/c.txt", WatchEventKind::MovedTo),
        ("/workspace/w/sub/b.txt", WatchEventKind::Removed),
    ];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !want.iter().all(|(p, k)| seen.iter().any(|(sp, sk): &(String, i32)| sp == p && *sk == *k as i32)) {
        let ev = tokio::time::timeout_at(deadline, events.message())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
            .unwrap()
            .expect("the watch ended early");
        seen.push((ev.path, ev.kind));
    }
    // Removing the watched directory ends the stream.
    f.remove(RemoveRequest { session_id: id.into(), path: "w".into(), recursive: true }).await.unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(_ev) = events.message().await.unwrap() {}
    })
    .await;
    assert!(end.is_ok(), "the watch did not end with its directory");
}
