//! Generates the gRPC code for `proto/idem/v1/idem.proto` with a vendored `protoc`,
//! so a fresh machine needs nothing installed by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("idem_descriptor.bin"))
        .compile_protos(&["proto/idem/v1/idem.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
