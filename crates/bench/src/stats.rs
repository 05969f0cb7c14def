//! Order statistics over samples: median and nearest-rank percentiles, and
//! the byte-size parser for `--bytes`.

use std::time::Duration;

/// Samples of one measured path, in milliseconds (latency) or MB/s.
#[derive(Clone, Debug, Default)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    pub(crate) fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds every sample of `other`.
    pub(crate) fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    pub(crate) fn push_ms(&mut self, d: Duration) {
        self.push(d.as_secs_f64() * 1e3);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (mean of the two middle values for an even count).
    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The `p`-th percentile by nearest rank: the smallest sample with at
    /// least `p`% of the samples at or below it.
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The median of `self[i] / base[i]`: each sample against the baseline
    /// sample of the same round. Load that drifts from round to round (a
    /// shared machine) moves both samples of a round together, so this is
    /// steadier than a ratio of medians. NaN without common rounds.
    pub(crate) fn paired_ratio(&self, base: &Samples) -> f64 {
        let ratios: Samples = Samples(self.0.iter().zip(&base.0).map(|(x, b)| x / b).collect());
        ratios.median()
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

impl FromIterator<f64> for Samples {
    fn from_iter<I: IntoIterator<Item = f64>>(values: I) -> Self {
        Self(values.into_iter().collect())
    }
}

/// Parses a byte count: a plain number or one with a binary suffix
/// (`K`, `M`, `G`, optionally followed by `iB` or `B`), e.g. `1GiB`, `64M`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a byte count such as 1073741824 or 1GiB, got {text:?}"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "unknown size suffix {suffix:?}: use K, M or G (binary)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("byte count {text:?} must be between 1 and 2^64-1"))
}

/// Formats a byte count the way `--bytes` accepts it back.
pub(crate) fn format_bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Samples {
        values.iter().copied().collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(samples(&[3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(samples(&[4.0, 1.0, 3.0, 2.0]).median(), 2.5);
        assert!(samples(&[]).median().is_nan());
    }

    #[test]
    fn paired_ratio_follows_the_baseline_round_by_round() {
        // The machine slows down in round 2: both paths halve, the ratio holds.
        let base = samples(&[1000.0, 500.0, 1000.0]);
        let x = samples(&[800.0, 400.0, 900.0]);
        assert_eq!(x.paired_ratio(&base), 0.8);
        // A ratio of medians mixes rounds: 800 / 1000 here only by luck.
        let y = samples(&[900.0, 450.0, 850.0]);
        assert_eq!(y.paired_ratio(&base), 0.9);
        assert_eq!(y.median() / base.median(), 0.85);
        assert!(samples(&[]).paired_ratio(&base).is_nan());
    }

    #[test]
    fn p99_of_200_samples_is_the_198th() {
        let s = samples(&(1..=200).map(f64::from).collect::<Vec<_>>());
        assert_eq!(s.percentile(99.0), 198.0);
        assert_eq!(s.percentile(100.0), 200.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(samples(&[5.0]).percentile(99.0), 5.0);
    }

    #[test]
    fn byte_counts_accept_binary_suffixes() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("4 KiB"), Ok(4096));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1TB").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn byte_counts_format_in_the_largest_exact_unit() {
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(3 << 20), "3 MiB");
        assert_eq!(format_bytes(1000), "1000 B");
    }
}
