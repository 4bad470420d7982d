//! AFL++ target: `kmip_relay::fuzz::fuzz_one` on every input.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        kmip_relay::fuzz::fuzz_one(data);
    });
}
