//! Compiles proto/*.proto with the protoc shipped inside protoc-bin-vendored, so a fresh
//! machine needs no protobuf-compiler package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/meridian/v1/time.proto",
        "../../proto/meridian/v1/raft.proto",
        "../../proto/meridian/v1/peer.proto",
        "../../proto/meridian/v1/api.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["../../proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
