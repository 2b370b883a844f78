//! Compiles our subset of etcd's v3 protocol buffers into the gRPC client in `src/etcd.rs`.
//!
//! A fresh machine has no system `protoc`, so the build uses the one vendored by
//! `protoc-bin-vendored` unless the developer points `PROTOC` at another.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: a build script is single-threaded here; nothing else reads the environment
        // concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd.proto", "proto/kv.proto"], &["proto"])?;
    Ok(())
}
