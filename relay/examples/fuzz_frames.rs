//! A long-running driver for the request decoder's fuzz target
//! (`kmip_relay::fuzz::fuzz_one`), for when cargo-fuzz (nightly) or AFL++ is not at
//! hand: `cargo run --release -p kmip-relay --example fuzz_frames -- 100000 [SEED]`.
//! Feeds random frames and mutations of valid requests; a panic is a finding.

use kmip_relay::ttlv::{self, Item};
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let valid = ttlv::encode(&Item::structure(
        0x420078,
        vec![
            Item::structure(
                0x420077,
                vec![
                    Item::structure(
                        0x420069,
                        vec![Item::integer(0x42006A, 1), Item::integer(0x42006B, 2)],
                    ),
                    Item::integer(0x42000D, 1),
                ],
            ),
            Item::structure(
                0x42000F,
                vec![
                    Item::enumeration(0x42005C, 0x21),
                    Item::structure(
                        0x420079,
                        vec![
                            Item::text(0x420094, "priv-00"),
                            Item::bytes(0x4200C2, vec![1; 32]),
                        ],
                    ),
                ],
            ),
        ],
    ));
    for _ in 0..count {
        let frame: Vec<u8> = if rng.gen_bool(0.3) {
            (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect()
        } else {
            let mut f = valid.clone();
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(0..f.len());
                f[at] = rng.gen();
            }
            f.truncate(rng.gen_range(0..=f.len()));
            f
        };
        kmip_relay::fuzz::fuzz_one(&frame);
    }
    println!("{count} frames, no panic");
}
