//! A layer sent and received between two layer stores: the files, the
//! whiteouts and the opaque mark arrive; a corrupted byte or a record that
//! does not hash to its digest is refused and leaves nothing in the store.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use super::*;

struct Dirs(PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(tag: &str) -> Dirs {
    let d = std::env::temp_dir().join(format!("paddock-xfer-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    Dirs(d)
}

/// A layer directory like a pip step's: files, a whiteout, an opaque dir.
fn sample_layer(root: &Path) -> LayerRecord {
    let diff = root.join("diff");
    fs::create_dir_all(diff.join("usr/lib/python3/dist-packages/six")).unwrap();
    fs::create_dir_all(diff.join("opaque")).unwrap();
    fs::write(diff.join("usr/lib/python3/dist-packages/six/__init__.py"), "x = 1\n").unwrap();
    fs::write(diff.join("opaque/kept"), vec![7u8; 3 * CHUNK + 11]).unwrap();
    std::os::unix::fs::symlink("six/__init__.py", diff.join("usr/lib/python3/dist-packages/link")).unwrap();
    nix::sys::stat::mknod(
        &diff.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let (p, n) = (
        std::ffi::CString::new(diff.join("opaque").as_os_str().as_encoded_bytes()).unwrap(),
        std::ffi::CString::new(OPAQUE_XATTR).unwrap(),
    );
    assert_eq!(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) }, 0);
    let packages = vec!["six".to_string()];
    LayerRecord {
        digest: layer_key("base0", Manager::Pip, &packages, "pip 23"),
        parent: "base0".into(),
        manager: "pip".into(),
        kind: String::new(),
        packages,
        tool_version: "pip 23".into(),
        size_bytes: 0,
        created_at_ms: 0,
        build_ms: 1,
    }
}

/// The messages `send_layer` makes for `rec` in `diff`.
async fn sent(rec: &LayerRecord, diff: PathBuf) -> Vec<pb::LayerChunk> {
    let (tx, mut rx) = mpsc::channel(1024);
    let rec2 = rec.clone();
    tokio::task::spawn_blocking(move || send_layer(&rec2, &diff, &tx)).await.unwrap().unwrap();
    let mut out = vec![];
    while let Some(m) = rx.recv().await {
        out.push(m.unwrap());
    }
    out
}

fn packages_of(rec: &LayerRecord) -> Packages {
    let mut p = Packages::default();
    p.pip = rec.packages.clone();
    p
}

fn store_is_empty(store_dir: &Path, digest: &str) -> bool {
    !store_dir.join(digest).exists() && fs::read_dir(store_dir.join(".tmp")).unwrap().next().is_none()
}

#[tokio::test]
async fn a_layer_arrives_whole_and_a_corrupt_one_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root (mknod, trusted xattrs)");
        return;
    }
    let dirs = tmpdir("unit");
    let rec = sample_layer(&dirs.0.join("src"));
    let msgs = sent(&rec, dirs.0.join("src/diff")).await;
    assert!(matches!(msgs[0].part, Some(Part::Layer(_))));
    assert!(msgs.iter().filter(|m| matches!(m.part, Some(Part::Data(_)))).count() >= 3, "the tar is chunked");

    // Whole: the header checks out, the files and whiteouts are there.
    let store_dir = dirs.0.join("store");
    let store = LayerStore::open(store_dir.clone()).unwrap();
    let Some(Part::Layer(h)) = &msgs[0].part else { unreachable!() };
    let checked = check_header(h, &rec.digest, "base0", &packages_of(&rec)).unwrap();
    let mut rest = tokio_stream::iter(msgs[1..].iter().cloned().map(Ok));
    let size = receive_layer(&store, checked.clone(), &mut rest).await.unwrap();
    assert!(size > 3 * CHUNK as u64);
    let diff = store.diff(&rec.digest);
    assert_eq!(
        fs::read_to_string(diff.join("usr/lib/python3/dist-packages/six/__init__.py")).unwrap(),
        "x = 1\n"
    );
    assert_eq!(fs::read(diff.join("opaque/kept")).unwrap().len(), 3 * CHUNK + 11);
    assert_eq!(
        fs::read_link(diff.join("usr/lib/python3/dist-packages/link")).unwrap(),
        PathBuf::from("six/__init__.py")
    );
    let gone = diff.join("gone").symlink_metadata().unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "the whiteout is an overlay whiteout again"
    );
    assert!(super::super::oci::xattr_is_set(&diff.join("opaque"), OPAQUE_XATTR), "the opaque mark arrived");
    assert_eq!(store.get(&rec.digest).unwrap().packages, rec.packages);

    // One byte flipped in the middle of the tar: refused, nothing stored.
    let store2_dir = dirs.0.join("store2");
    let store2 = LayerStore::open(store2_dir.clone()).unwrap();
    let mut bad: Vec<pb::LayerChunk> = msgs[1..].to_vec();
    let Some(Part::Data(d)) = &mut bad[1].part else { panic!("the second message is data") };
    let mid = d.len() / 2;
    d[mid] ^= 0x55;
    let mut rest = tokio_stream::iter(bad.into_iter().map(Ok));
    let err = receive_layer(&store2, checked.clone(), &mut rest).await.unwrap_err();
    assert!(err.message().contains("refused"), "{}", err.message());
    assert!(store_is_empty(&store2_dir, &rec.digest), "a refused layer leaves nothing behind");

    // A stream that breaks inside the layer: refused, nothing stored.
    let mut cut: Vec<Result<pb::LayerChunk, Error>> = msgs[1..3].iter().cloned().map(Ok).collect();
    cut.push(Err(Error::unavailable("the sender went away")));
    let err = receive_layer(&store2, checked, &mut tokio_stream::iter(cut)).await.unwrap_err();
    assert_eq!(err.message(), "the sender went away");
    assert!(store_is_empty(&store2_dir, &rec.digest));

    // A record that is not what its digest addresses is refused before any byte.
    let mut forged = h.clone();
    forged.tool_version = "pip 99".into();
    let why = check_header(&forged, &rec.digest, "base0", &packages_of(&rec)).unwrap_err();
    assert!(why.contains("does not hash to its digest"), "{why}");
    let why = check_header(h, &rec.digest, "another-base", &packages_of(&rec)).unwrap_err();
    assert!(why.contains("expected on another-base"), "{why}");
}

/// An imported base's record is checked against its content address (the
/// hash of "paddock-import-v1" and the source manifest's digest) before any
/// byte of it is stored; a forged one is refused.
#[test]
fn an_imported_base_is_what_its_digest_addresses() {
    use super::super::oci::import_key;
    use super::super::transfer_imported::check_base_header;
    let manifest = format!("sha256:{}", "ab".repeat(32));
    let digest = import_key(&manifest);
    let h = pb::LayerHeader {
        digest: digest.clone(),
        parent: String::new(),
        manager: "base".into(),
        packages: vec![format!("oci:{manifest}")],
        tool_version: String::new(),
        kind: String::new(),
    };
    let rec = check_base_header(&h, &digest).unwrap();
    assert_eq!((rec.digest.as_str(), rec.manager.as_str()), (digest.as_str(), "base"));

    let mut forged = h.clone();
    forged.packages = vec![format!("oci:sha256:{}", "cd".repeat(32))];
    let why = check_base_header(&forged, &digest).unwrap_err();
    assert!(why.contains("does not hash to its digest"), "{why}");
    let mut forged = h.clone();
    forged.parent = "base0".into();
    assert!(check_base_header(&forged, &digest).unwrap_err().contains("not the record of an imported image"));
    let mut forged = h.clone();
    forged.packages = vec!["six".into()];
    assert!(check_base_header(&forged, &digest).unwrap_err().contains("oci:<manifest digest>"));
    let why = check_base_header(&h, "another-base").unwrap_err();
    assert!(why.contains("the image says its base is another-base"), "{why}");
}
