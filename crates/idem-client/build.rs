//! Generates the gRPC code for `proto/idem/v1/idem.proto` (the repository's, two levels up) with
//! a vendored `protoc`, so a fresh machine needs nothing installed by hand. The server trait is
//! generated too, behind the `server` feature, so the server and its clients share one copy.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../../proto");
    let proto_file = proto_dir.join("idem/v1/idem.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .server_mod_attribute("idem.v1", "#[cfg(feature = \"server\")]")
        .file_descriptor_set_path(out_dir.join("idem_descriptor.bin"))
        .compile_protos(&[proto_file.as_path()], &[proto_dir.as_path()])?;
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    Ok(())
}
