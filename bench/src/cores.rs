//! Core lists as `taskset -c` takes them (`1`, `0-3`, `8-15`, `0,2,4-5`),
//! parsed once from the command line into the cores they name, in the
//! order given. Scenario 8 pins a proxy to a prefix of its list (the first
//! k cores), written back as a taskset list.

use std::fmt;
use std::str::FromStr;

/// The cores of a taskset list, in the order listed, none twice, at least
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(Vec<usize>);

/// A `--*-cores` value that is not a taskset core list this harness
/// understands.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidCoreList {
    list: String,
    reason: String,
}

impl fmt::Display for InvalidCoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid core list {:?}: {} (expected a taskset list such as 1, 0-3, 8-15 or 0,2,4-5)",
            self.list, self.reason
        )
    }
}

impl std::error::Error for InvalidCoreList {}

impl FromStr for CoreList {
    type Err = InvalidCoreList;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| InvalidCoreList {
            list: list.to_owned(),
            reason,
        };
        let core = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| invalid(format!("{:?} is not a core number", s.trim())))
        };
        let mut cores = Vec::new();
        for part in list.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (core(a)?, core(b)?),
                None => (core(part)?, core(part)?),
            };
            if last < first {
                return Err(invalid(format!("range {first}-{last} runs backwards")));
            }
            for c in first..=last {
                if cores.contains(&c) {
                    return Err(invalid(format!("core {c} is listed twice")));
                }
                cores.push(c);
            }
        }
        // `split` yields at least one part, and every part at least one
        // core, so the list is never empty here.
        Ok(Self(cores))
    }
}

impl fmt::Display for CoreList {
    /// The taskset list, ascending runs written as ranges (`8-11,14`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = i;
            while end + 1 < self.0.len() && self.0[end + 1] == self.0[end] + 1 {
                end += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            if end > i {
                write!(f, "{start}-{}", self.0[end])?;
            } else {
                write!(f, "{start}")?;
            }
            i = end + 1;
        }
        Ok(())
    }
}

impl CoreList {
    /// How many cores it names (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first `k` cores listed (all of them when `k` is larger; at
    /// least the first one).
    pub fn first(&self, k: usize) -> Self {
        Self(self.0[..k.clamp(1, self.0.len())].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CoreList {
        s.parse().expect("a valid core list")
    }

    #[test]
    fn counts_single_cores_ranges_and_mixtures() {
        assert_eq!(parse("1").len(), 1);
        assert_eq!(parse("0-3").len(), 4);
        assert_eq!(parse("8-15").len(), 8);
        assert_eq!(parse("0,2,4-5").len(), 4);
    }

    #[test]
    fn prefixes_of_a_range_stay_ranges() {
        let cores = parse("8-15");
        assert_eq!(cores.first(1).to_string(), "8");
        assert_eq!(cores.first(2).to_string(), "8-9");
        assert_eq!(cores.first(4).to_string(), "8-11");
        assert_eq!(cores.first(8).to_string(), "8-15");
        assert_eq!(cores.first(99).to_string(), "8-15");
    }

    #[test]
    fn prefixes_keep_the_listed_order() {
        let cores = parse("4-5,0,2");
        assert_eq!(cores.to_string(), "4-5,0,2");
        assert_eq!(cores.first(3).to_string(), "4-5,0");
        assert_eq!(parse("0,1").to_string(), "0-1");
    }

    #[test]
    fn rejects_what_taskset_would_not_mean() {
        for bad in ["", "a", "3-1", "0,0", "0-2,1", "1-", "0,,1"] {
            assert!(bad.parse::<CoreList>().is_err(), "{bad:?} accepted");
        }
    }
}
