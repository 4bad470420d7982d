//! Shards of a run for CI fleets (`--partition k/n`): n jobs, each running one share of
//! the cells, together running every cell exactly once.
//!
//! A cell belongs to shard `k` of `n` when `h(name) mod n == k - 1`, where `name` is
//! the cell's full name `suite.backend/case` and `h` is the first 8 bytes, read
//! big-endian, of the SHA-256 of its UTF-8 bytes. The shard depends on the cell's name
//! alone, not on its position in the matrix: adding or removing a case moves no other
//! cell, and every release of the harness (and any script) computes the same shards.
//! std's `DefaultHasher` is not used because its output may change between releases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Shard `k` of `n` (1 ≤ k ≤ n), written `k/n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    k: u32,
    n: u32,
}

impl Partition {
    /// Shard `k` of `n`, or why that is no shard.
    pub fn new(k: u32, n: u32) -> Result<Partition, String> {
        if n == 0 {
            return Err("the number of shards n must be at least 1".into());
        }
        if k == 0 || k > n {
            return Err(format!("the shard k must be between 1 and {n}"));
        }
        Ok(Partition { k, n })
    }

    /// This shard's number, from 1.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// How many shards there are.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Whether the cell named `suite.backend/case` is in this shard.
    pub fn contains(&self, cell_name: &str) -> bool {
        shard_of(cell_name, self.n) == self.k
    }
}

/// The shard (1..=n) the cell named `cell_name` belongs to among `n`; `n` ≥ 1.
pub fn shard_of(cell_name: &str, n: u32) -> u32 {
    let digest = Sha256::digest(cell_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // n ≥ 1 by construction of every Partition; max(1) keeps a stray 0 from dividing.
    (u64::from_be_bytes(first) % u64::from(n.max(1))) as u32 + 1
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl FromStr for Partition {
    type Err = String;

    /// `k/n` with decimal numbers, 1 ≤ k ≤ n.
    fn from_str(s: &str) -> Result<Partition, String> {
        let shape = || format!("'{s}' is not k/n (e.g. 2/3: the second of three shards)");
        let (k, n) = s.split_once('/').ok_or_else(shape)?;
        let number = |t: &str| -> Result<u32, String> {
            // u32's parser takes a leading '+'; k/n is digits only.
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(shape());
            }
            t.parse()
                .map_err(|_| format!("'{t}' in '{s}' is too large"))
        };
        Partition::new(number(k)?, number(n)?).map_err(|e| format!("'{s}': {e}"))
    }
}

impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Partition, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn names(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("suite-{}.backend-{}/case {i}", i % 7, i % 3))
            .collect()
    }

    #[rstest]
    #[case("1/1", 1, 1)]
    #[case("1/3", 1, 3)]
    #[case("3/3", 3, 3)]
    #[case("07/12", 7, 12)]
    fn parses_k_of_n(#[case] text: &str, #[case] k: u32, #[case] n: u32) {
        let p: Partition = text.parse().unwrap();
        assert_eq!((p.k(), p.n()), (k, n));
        assert_eq!(p.to_string(), format!("{k}/{n}"));
    }

    #[rstest]
    #[case("", "not k/n")]
    #[case("3", "not k/n")]
    #[case("1/3/4", "not k/n")]
    #[case("a/3", "not k/n")]
    #[case("+1/3", "not k/n")]
    #[case("-1/3", "not k/n")]
    #[case(" 1/3", "not k/n")]
    #[case("1/", "not k/n")]
    #[case("0/3", "between 1 and 3")]
    #[case("4/3", "between 1 and 3")]
    #[case("1/0", "at least 1")]
    #[case("0/0", "at least 1")]
    #[case("1/99999999999", "too large")]
    fn refuses_what_is_no_shard(#[case] text: &str, #[case] says: &str) {
        let err = text.parse::<Partition>().unwrap_err();
        assert!(err.contains(says), "{text:?}: {err}");
    }

    #[rstest]
    #[case(1)]
    #[case(2)]
    #[case(3)]
    #[case(7)]
    #[case(64)]
    fn every_cell_is_in_exactly_one_shard(#[case] n: u32) {
        for name in names(500) {
            let holders: Vec<u32> = (1..=n)
                .filter(|&k| Partition::new(k, n).unwrap().contains(&name))
                .collect();
            assert_eq!(holders, vec![shard_of(&name, n)], "{name} among {n}");
        }
    }

    #[test]
    fn adding_a_cell_moves_no_other() {
        let shards = |list: &[String]| -> std::collections::BTreeMap<String, u32> {
            list.iter().map(|c| (c.clone(), shard_of(c, 5))).collect()
        };
        let before = names(200);
        let mut after = before.clone();
        after.insert(17, "new-suite.software/a new case".into());
        after.insert(0, "suite-1.backend-1/another".into());
        let (before, after) = (shards(&before), shards(&after));
        for (name, shard) in &before {
            assert_eq!(after[name], *shard, "{name} moved");
        }
    }

    #[rstest]
    #[case(1, 1)]
    #[case(2, 2)]
    #[case(3, 1)]
    #[case(10, 6)]
    fn shards_are_stable_across_releases(#[case] n: u32, #[case] shard: u32) {
        // Pinned from outside Rust (sha256sum: 064c6f14eeb22f59...): a change here
        // would reshuffle every CI fleet's shards.
        assert_eq!(shard_of("baseline-signing.software/rsa2048 sign", n), shard);
    }

    #[test]
    fn shares_are_roughly_even() {
        let all = names(3000);
        for k in 1..=3 {
            let p = Partition::new(k, 3).unwrap();
            let count = all.iter().filter(|c| p.contains(c)).count();
            assert!((800..=1200).contains(&count), "shard {p}: {count} of 3000");
        }
    }

    #[test]
    fn round_trips_through_json_as_text() {
        let p = Partition::new(2, 3).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"2/3\"");
        assert_eq!(serde_json::from_str::<Partition>("\"2/3\"").unwrap(), p);
        assert!(serde_json::from_str::<Partition>("\"4/3\"").is_err());
        assert!(serde_json::from_str::<Partition>("23").is_err());
    }
}
