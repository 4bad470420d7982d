//! The oracle shares no code with what it judges: its manifest names none of the
//! workspace's other crates. (Cargo then keeps the code apart; this test keeps the
//! manifest that way.)

const MANIFEST: &str = include_str!("../Cargo.toml");

#[test]
fn the_manifest_depends_on_no_crate_of_the_product() {
    for line in MANIFEST.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        for product in ["hsm-signers", "kmip-relay", "p11shim", "hsm-harness"] {
            assert!(
                !line.starts_with(product),
                "oracle/Cargo.toml depends on {product}: {line}"
            );
        }
    }
}
