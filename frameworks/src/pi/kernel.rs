//! The Leibniz kernel: Σ (-1)^k / (2k+1) over a contiguous range of k, as fast as one core
//! allows and bit-for-bit reproducible.
//!
//! Speed: terms are taken in (even, odd) pairs, 1/(2k+1) - 1/(2k+3) = 2/((2k+2)² - 1), so the
//! alternating sign disappears and there is one division per two terms. Eight independent
//! lanes of straight-line arithmetic let the compiler use SIMD (SSE2/AVX on x86-64, NEON on the
//! Pi's Cortex-A) without any licence to reassociate floating point. No allocation.
//!
//! Accuracy and reproducibility: each lane keeps a Kahan-compensated sum; lanes are merged in a
//! fixed order into a double-double ([`Sum`]); chunks are merged in chunk order the same way.
//! Every step is plain IEEE-754 f64 arithmetic (Rust never contracts to FMA on its own), so a
//! chunk's result depends only on its range — not on the machine, the number of agents, or the
//! order in which chunks finish — and the job's result is bit-identical however it was split
//! across the cluster.

const LANES: usize = 8;

/// A double-double: `hi + lo` with |lo| ≤ ulp(hi)/2, the exact sum carried along.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Sum {
    pub hi: f64,
    pub lo: f64,
}

impl Sum {
    pub const ZERO: Sum = Sum { hi: 0.0, lo: 0.0 };

    /// Adds `x` with an error-free transformation (Knuth's TwoSum).
    #[inline]
    pub fn add_f64(self, x: f64) -> Sum {
        let (s, e) = two_sum(self.hi, x);
        let (hi, lo) = fast_two_sum(s, e + self.lo);
        Sum { hi, lo }
    }

    /// Adds another double-double.
    #[inline]
    pub fn plus(self, other: Sum) -> Sum {
        let (s, e) = two_sum(self.hi, other.hi);
        let (hi, lo) = fast_two_sum(s, e + self.lo + other.lo);
        Sum { hi, lo }
    }

    pub fn value(self) -> f64 {
        self.hi + self.lo
    }

    /// Exact wire form (bit patterns), so results travel without any rounding.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.hi.to_bits().to_le_bytes());
        out[8..].copy_from_slice(&self.lo.to_bits().to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Sum> {
        let hi: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let lo: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| Sum {
            hi: f64::from_bits(u64::from_le_bytes(hi)),
            lo: f64::from_bits(u64::from_le_bytes(lo)),
        })
    }
}

#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

#[inline]
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// 1/(2k+1) with its sign, for the odd edges of a range.
#[inline]
fn term(k: u64) -> f64 {
    let t = 1.0 / (2.0 * k as f64 + 1.0);
    if k.is_multiple_of(2) {
        t
    } else {
        -t
    }
}

/// Σ_{k=begin}^{end-1} (-1)^k / (2k+1), exactly reproducible for a given range.
pub fn leibniz_range(begin: u64, end: u64) -> Sum {
    if begin >= end {
        return Sum::ZERO;
    }
    let mut total = Sum::ZERO;
    let mut k = begin;
    // Start the pairs on an even k.
    if k % 2 == 1 {
        total = total.add_f64(term(k));
        k += 1;
    }
    let pairs = (end - k) / 2;
    let blocks = pairs / LANES as u64;

    // d = 2k + 2 for the even k of each lane; the pair's value is 2 / (d² - 1).
    // d stays below 2^53 for any k this program will ever see, so it is exact.
    let mut d = [0.0f64; LANES];
    for (j, dj) in d.iter_mut().enumerate() {
        *dj = (2 * (k + 2 * j as u64) + 2) as f64;
    }
    let step = (4 * LANES) as f64;
    let mut s = [0.0f64; LANES];
    let mut c = [0.0f64; LANES];
    for _ in 0..blocks {
        for j in 0..LANES {
            let pair = 2.0 / (d[j] * d[j] - 1.0);
            // Kahan, per lane: independent lanes keep the loop vectorisable.
            let y = pair - c[j];
            let t = s[j] + y;
            c[j] = (t - s[j]) - y;
            s[j] = t;
            d[j] += step;
        }
    }
    for j in 0..LANES {
        total = total.add_f64(s[j]).add_f64(-c[j]);
    }
    k += blocks * LANES as u64 * 2;
    // The pairs that did not fill a block, then a trailing odd term.
    while k + 1 < end {
        let dk = (2 * k + 2) as f64;
        total = total.add_f64(2.0 / (dk * dk - 1.0));
        k += 2;
    }
    if k < end {
        total = total.add_f64(term(k));
    }
    total
}

/// Splits `0..terms` into `tasks` contiguous chunks, sizes differing by at most one.
pub fn chunks(terms: u64, tasks: u64) -> Vec<(u64, u64)> {
    let tasks = tasks.max(1).min(terms.max(1));
    let base = terms / tasks;
    let extra = terms % tasks;
    let mut out = Vec::with_capacity(tasks as usize);
    let mut begin = 0;
    for i in 0..tasks {
        let len = base + u64::from(i < extra);
        out.push((begin, begin + len));
        begin += len;
    }
    out
}

/// Combines chunk sums in chunk order and multiplies by four: the Leibniz estimate of pi.
pub fn combine(chunk_sums: impl IntoIterator<Item = Sum>) -> f64 {
    let total = chunk_sums.into_iter().fold(Sum::ZERO, Sum::plus);
    4.0 * total.hi + 4.0 * total.lo
}

/// Decimal digits of pi, for counting how many an estimate gets right.
const PI_DIGITS: &str = "3.14159265358979323846264338327950288";

/// How many digits after the decimal point `estimate` shares with pi (truncated, not rounded).
pub fn correct_digits(estimate: f64) -> u32 {
    if !estimate.is_finite() {
        return 0;
    }
    let shown = format!("{estimate:.17}");
    let mut digits = 0;
    for (i, (a, b)) in shown.chars().zip(PI_DIGITS.chars()).enumerate() {
        if a != b {
            break;
        }
        if i >= 2 {
            digits += 1;
        }
    }
    // f64 cannot carry more than about 15 decimals of pi.
    digits.min(15)
}

/// The estimate as text showing only its correct digits, e.g. `3.14159`.
pub fn correct_prefix(estimate: f64) -> String {
    let d = correct_digits(estimate) as usize;
    if d == 0 {
        return format!("{:.0}", estimate.trunc());
    }
    PI_DIGITS[..2 + d].to_string()
}

#[cfg(test)]
#[allow(clippy::approx_constant)] // the tests use pi's digits on purpose
mod tests {
    use super::*;

    fn naive(begin: u64, end: u64) -> f64 {
        (begin..end).map(term).sum()
    }

    #[test]
    fn small_ranges_match_the_textbook_sum() {
        for (b, e) in [
            (0, 1),
            (0, 2),
            (0, 17),
            (1, 2),
            (3, 40),
            (5, 6),
            (7, 1000),
            (0, 999),
        ] {
            let fast = leibniz_range(b, e).value();
            let slow = naive(b, e);
            assert!((fast - slow).abs() < 1e-14, "{b}..{e}: {fast} vs {slow}");
        }
        assert_eq!(leibniz_range(10, 10), Sum::ZERO);
    }

    #[test]
    fn the_estimate_converges_like_leibniz() {
        let pi = combine([leibniz_range(0, 1_000_000)]);
        // The partial sum's error is about 1/N.
        assert!((pi - std::f64::consts::PI).abs() < 1.1e-6, "{pi}");
        assert!((pi - std::f64::consts::PI).abs() > 0.9e-6, "{pi}");
        assert_eq!(correct_digits(pi), 5);
    }

    #[test]
    fn result_is_bit_identical_however_the_terms_are_chunked() {
        let terms = 10_000_003;
        // Same chunking, chunks finishing in any order: identical bits.
        let parts: Vec<Sum> = chunks(terms, 7)
            .iter()
            .map(|&(b, e)| leibniz_range(b, e))
            .collect();
        let forward = combine(parts.clone());
        let mut shuffled: Vec<(usize, Sum)> = parts.iter().copied().enumerate().rev().collect();
        shuffled.sort_by_key(|(i, _)| *i);
        assert_eq!(
            combine(shuffled.into_iter().map(|(_, s)| s)).to_bits(),
            forward.to_bits()
        );
        // Recomputing a chunk (a relaunch after a loss) gives the same bits.
        let (b, e) = chunks(terms, 7)[3];
        assert_eq!(leibniz_range(b, e), parts[3]);
        // Different chunk counts agree to within the double-double's precision.
        let other = combine(chunks(terms, 13).iter().map(|&(b, e)| leibniz_range(b, e)));
        assert!(
            (other - forward).abs() <= f64::EPSILON * 4.0,
            "{other} vs {forward}"
        );
    }

    #[test]
    fn chunks_cover_the_range_without_gaps() {
        for (n, t) in [(10, 3), (3, 10), (1_000_000_007, 64), (0, 4)] {
            let c = chunks(n, t);
            assert_eq!(c.first().map(|x| x.0), Some(0));
            assert_eq!(c.last().map(|x| x.1), Some(n));
            assert!(c.windows(2).all(|w| w[0].1 == w[1].0));
            let sizes: Vec<u64> = c.iter().map(|(b, e)| e - b).collect();
            assert!(sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn correct_digits_truncate_rather_than_round() {
        // 3.141595 is stored as 3.14159500000000014…: five digits agree, then 5 vs 2.
        assert_eq!(correct_digits(3.141595), 5);
        // 3.1416 is stored as 3.14159999…: truncated, five digits agree.
        assert_eq!(correct_digits(3.1416), 5);
        assert_eq!(correct_digits(3.14158), 4);
        assert_eq!(correct_digits(std::f64::consts::PI), 15);
        assert_eq!(correct_digits(2.9), 0);
        assert_eq!(correct_prefix(3.1415926), "3.1415926");
        assert_eq!(correct_prefix(3.2), "3");
    }

    #[test]
    fn sums_travel_as_exact_bytes() {
        let s = leibniz_range(12345, 67890);
        assert_eq!(Sum::from_bytes(&s.to_bytes()), Some(s));
        assert_eq!(Sum::from_bytes(&[1, 2, 3]), None);
    }
}
