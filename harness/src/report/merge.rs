//! Combining the results of disjoint runs (the shards of one partitioned run, or runs
//! of different backends) into the results of one run.
//!
//! The merge is the union of the cells; the reports written from it recompute every
//! total and group cells as a run does, so the merged shards of a run give the report
//! the unpartitioned run gives, but for times and properties. Refused, because the
//! result would be wrong rather than incomplete:
//!
//! - a cell in two inputs: shards are disjoint, so the inputs are not one run's shards
//!   (or one file was given twice);
//! - shards of different partitionings (`1/3` with `2/4`);
//! - the same shard twice, or an incomplete set: with `K/N` inputs every shard `1..=N`
//!   must be there, or the merged report would pass over the missing shard's cells.
//!
//! Inputs without a partition (whole runs) take part as they are.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use crate::report::outcome::RunResult;
use crate::run::partition::Partition;

/// One input: where it came from, for messages, and its results.
pub struct Input {
    pub path: PathBuf,
    pub run: RunResult,
}

/// Why inputs cannot be merged.
#[derive(Debug, PartialEq, Eq)]
pub enum MergeError {
    /// The same cell in two inputs.
    Overlap {
        cell: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// Shards of different partitionings.
    MixedPartitions {
        first: (PathBuf, Partition),
        second: (PathBuf, Partition),
    },
    /// The same shard in two inputs.
    RepeatedShard {
        partition: Partition,
        first: PathBuf,
        second: PathBuf,
    },
    /// Shards missing from a partitioned run (their numbers, and N).
    MissingShards { missing: Vec<u32>, n: u32 },
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::Overlap {
                cell,
                first,
                second,
            } => write!(
                f,
                "the cell {cell} is in both {} and {}: shards of one run are disjoint, \
                 so these are not the shards of one run (or a file was given twice)",
                first.display(),
                second.display()
            ),
            MergeError::MixedPartitions { first, second } => write!(
                f,
                "{} is shard {} but {} is shard {}: shards of one run share N",
                first.0.display(),
                first.1,
                second.0.display(),
                second.1
            ),
            MergeError::RepeatedShard {
                partition,
                first,
                second,
            } => write!(
                f,
                "{} and {} are both shard {partition}",
                first.display(),
                second.display()
            ),
            MergeError::MissingShards { missing, n } => {
                let list: Vec<String> = missing.iter().map(|k| format!("{k}/{n}")).collect();
                let (one, many) = (missing.len() == 1, list.join(", "));
                if one {
                    write!(
                        f,
                        "shard {many} is missing: the merged report would lack its cells"
                    )
                } else {
                    write!(
                        f,
                        "shards {many} are missing: the merged report would lack their cells"
                    )
                }
            }
        }
    }
}

impl std::error::Error for MergeError {}

/// The union of the inputs' cells, as the results of one whole run (no partition).
pub fn merge(inputs: Vec<Input>) -> Result<RunResult, MergeError> {
    check_partitions(&inputs)?;
    let mut owner: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        for cell in &input.run.cells {
            let (s, b, c) = cell.key();
            if let Some(&first) = owner.get(&(s.to_owned(), b.to_owned(), c.to_owned())) {
                return Err(MergeError::Overlap {
                    cell: cell.name(),
                    first: inputs[first].path.clone(),
                    second: input.path.clone(),
                });
            }
            owner.insert((s.to_owned(), b.to_owned(), c.to_owned()), i);
        }
    }
    let mut cells: Vec<_> = inputs.into_iter().flat_map(|i| i.run.cells).collect();
    cells.sort_by(|a, b| a.key().cmp(&b.key()));
    Ok(RunResult {
        cells,
        partition: None,
    })
}

/// The partitioned inputs share N and hold each shard 1..=N once.
fn check_partitions(inputs: &[Input]) -> Result<(), MergeError> {
    let mut shards: BTreeMap<u32, &Input> = BTreeMap::new();
    let mut first: Option<(&Input, Partition)> = None;
    for input in inputs {
        let Some(p) = input.run.partition else {
            continue;
        };
        match first {
            None => first = Some((input, p)),
            Some((f, fp)) if fp.n() != p.n() => {
                return Err(MergeError::MixedPartitions {
                    first: (f.path.clone(), fp),
                    second: (input.path.clone(), p),
                })
            }
            Some(_) => {}
        }
        if let Some(earlier) = shards.insert(p.k(), input) {
            return Err(MergeError::RepeatedShard {
                partition: p,
                first: earlier.path.clone(),
                second: input.path.clone(),
            });
        }
    }
    if let Some((_, p)) = first {
        let missing: Vec<u32> = (1..=p.n()).filter(|k| !shards.contains_key(k)).collect();
        if !missing.is_empty() {
            return Err(MergeError::MissingShards { missing, n: p.n() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::report::json::tests::cell;
    use crate::report::outcome::Status;

    fn input(path: &str, partition: Option<&str>, cases: &[&str]) -> Input {
        Input {
            path: path.into(),
            run: RunResult {
                cells: cases
                    .iter()
                    .map(|c| cell("suite", "software", c, Status::Passed))
                    .collect(),
                partition: partition.map(|p| p.parse().unwrap()),
            },
        }
    }

    #[test]
    fn the_union_of_disjoint_shards_is_one_sorted_run() {
        let merged = merge(vec![
            input("2.json", Some("2/3"), &["d", "a"]),
            input("1.json", Some("1/3"), &["c"]),
            input("3.json", Some("3/3"), &[]),
            input("whole.json", None, &["b"]),
        ])
        .unwrap();
        let names: Vec<&str> = merged.cells.iter().map(|c| c.case.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(merged.partition, None);
    }

    #[test]
    fn a_cell_in_two_inputs_is_refused_naming_it_and_both_files() {
        let err = merge(vec![
            input("1.json", Some("1/2"), &["a", "b"]),
            input("2.json", Some("2/2"), &["c", "b"]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            MergeError::Overlap {
                cell: "suite.software/b".into(),
                first: "1.json".into(),
                second: "2.json".into(),
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("suite.software/b is in both 1.json and 2.json"),
            "{text}"
        );
    }

    #[rstest]
    #[case::mixed_n(&[("1/3", "a"), ("2/2", "b")], "shard 1/3 but")]
    #[case::same_shard_twice(&[("1/2", ""), ("1/2", ""), ("2/2", "")], "are both shard 1/2")]
    #[case::one_missing(&[("1/3", "a"), ("3/3", "b")], "shard 2/3 is missing")]
    #[case::two_missing(&[("2/3", "a")], "shards 1/3, 3/3 are missing")]
    fn shards_must_be_one_complete_partitioning(
        #[case] shards: &[(&str, &str)],
        #[case] says: &str,
    ) {
        let inputs = shards
            .iter()
            .enumerate()
            .map(|(i, (p, case))| {
                let cases: Vec<&str> = if case.is_empty() { vec![] } else { vec![*case] };
                input(&format!("{i}.json"), Some(p), &cases)
            })
            .collect();
        let err = merge(inputs).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }

    #[test]
    fn whole_runs_merge_without_partitions() {
        let merged = merge(vec![
            input("softhsm.json", None, &["x"]),
            input("relay.json", None, &["y"]),
        ])
        .unwrap();
        assert_eq!(merged.cells.len(), 2);
    }
}
