//! What a record says about one row: its hash, statistics and a spread sample.

use serde::{Deserialize, Serialize};

/// xxh3-64 of the row's values widened to f32, little-endian: equal hashes mean bit-equal
/// values whatever the storage dtype.
pub fn hash(row: &[f32]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for v in row {
        h.update(&v.to_le_bytes());
    }
    format!("{:016x}", h.digest())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub rms: f64,
    pub abs_max: f32,
    pub nan: usize,
    pub inf: usize,
    pub zero: usize,
}

/// Statistics over the whole row. min/max/mean/rms skip NaN and inf (counted apart), so a
/// single NaN does not hide what the rest of the row looks like.
pub fn stats(row: &[f32]) -> Stats {
    let mut s = Stats {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        mean: 0.0,
        rms: 0.0,
        abs_max: 0.0,
        nan: 0,
        inf: 0,
        zero: 0,
    };
    let (mut sum, mut sq, mut finite) = (0f64, 0f64, 0usize);
    for &v in row {
        if v.is_nan() {
            s.nan += 1;
            continue;
        }
        if v.is_infinite() {
            s.inf += 1;
            continue;
        }
        if v == 0.0 {
            s.zero += 1;
        }
        s.min = s.min.min(v);
        s.max = s.max.max(v);
        s.abs_max = s.abs_max.max(v.abs());
        sum += v as f64;
        sq += (v as f64) * (v as f64);
        finite += 1;
    }
    if finite > 0 {
        s.mean = sum / finite as f64;
        s.rms = (sq / finite as f64).sqrt();
    } else {
        s.min = 0.0;
        s.max = 0.0;
    }
    s
}

/// `n` values spread evenly over the whole row (first and last included), with their
/// indices, so that a diff from samples sees every part of the row.
pub fn sample(row: &[f32], n: usize) -> Vec<(usize, f32)> {
    if row.is_empty() || n == 0 {
        return Vec::new();
    }
    if n >= row.len() {
        return row.iter().copied().enumerate().collect();
    }
    (0..n)
        .map(|i| {
            let idx = if n == 1 {
                0
            } else {
                i * (row.len() - 1) / (n - 1)
            };
            (idx, row[idx])
        })
        .collect()
}

/// The `k` largest values with their indices, largest first (ties: lower index first).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| (i, row[i as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_of_the_values_and_stats_cover_the_row() {
        let a = [1.0f32, -2.0, 0.0, 3.5];
        assert_eq!(hash(&a), hash(&[1.0, -2.0, 0.0, 3.5]));
        assert_ne!(hash(&a), hash(&[1.0, -2.0, 0.0, 3.5000002]));
        let s = stats(&[1.0, f32::NAN, -3.0, 0.0, f32::INFINITY]);
        assert_eq!(
            (s.min, s.max, s.abs_max, s.nan, s.inf, s.zero),
            (-3.0, 1.0, 3.0, 1, 1, 1)
        );
        assert!((s.mean - (-2.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn sample_spreads_over_the_whole_row() {
        let row: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let s = sample(&row, 5);
        assert_eq!(
            s.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 24, 49, 74, 99]
        );
        assert_eq!(top_k(&[0.5, 2.0, 2.0, -1.0], 2), vec![(1, 2.0), (2, 2.0)]);
    }
}
