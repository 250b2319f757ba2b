use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let public = [
        proto_root.join("paddock/v1/sessions.proto"),
        proto_root.join("paddock/v1/network.proto"),
        proto_root.join("paddock/v1/tools.proto"),
        proto_root.join("paddock/v1/processes.proto"),
        proto_root.join("paddock/v1/files.proto"),
        proto_root.join("paddock/v1/code.proto"),
        proto_root.join("paddock/v1/environments.proto"),
        proto_root.join("paddock/v1/tokens.proto"),
        proto_root.join("paddock/v1/events.proto"),
        proto_root.join("paddock/v1/fleet.proto"),
    ];
    let guest = proto_root.join("paddock/guest/v1/guest.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    // Two descriptor sets: reflection on paddockd serves only the public API.
    tonic_build::configure()
        .file_descriptor_set_path(out.join("paddock_v1_descriptor.bin"))
        // File transfer payloads as `Bytes`: decoding slices the receive
        // buffer instead of copying each megabyte (measured: BENCHMARKS.md).
        .bytes([".paddock.v1.UploadRequest", ".paddock.v1.DownloadChunk"])
        .compile_protos(&public, &[&proto_root])?;
    // Generated into its own directory: this run also emits a paddock.v1.rs
    // (pointing at the extern path), which must not overwrite the real one.
    let guest_out = out.join("guest");
    std::fs::create_dir_all(&guest_out)?;
    tonic_build::configure()
        .out_dir(&guest_out)
        .extern_path(".paddock.v1", "crate::v1")
        .compile_protos(&[&guest], &[&proto_root])?;
    Ok(())
}
