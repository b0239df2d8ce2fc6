//! Isolation Forest (Liu, Ting and Zhou, 2008) on ndarray.
//!
//! Each tree isolates points of a sub-sample (256 by default) by random axis-parallel splits up
//! to a height limit of ceil(log2(sub-sample)); a point's path length, corrected at the leaves
//! by c(n) for the points left unsplit there, is short when it is easy to isolate. The score
//! `2^(-E[h(x)] / c(psi))` lies in [0, 1]; about 0.5 and below is normal, close to 1 anomalous.
//! Trees are stored as flat node arrays (cache friendly, serde friendly).

use ndarray::{ArrayView1, ArrayView2};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::index::sample};
use serde::{Deserialize, Serialize};

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
const LEAF: u32 = u32::MAX;

/// Average path length of an unsuccessful search in a binary search tree of `n` points: the
/// expected depth still to go at a leaf holding `n` points.
pub fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// One node, 16 bytes so a whole tree sits in L1 while a batch is scored through it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Split value; at a leaf, the path length to report (depth + c(points left here)).
    pub value: f64,
    /// Split feature, or `u32::MAX` for a leaf.
    pub feature: u32,
    /// Index of the left child; the right child is `left + 1`.
    pub left: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Training points that reached each node (for attribution; scoring never reads it).
    pub sizes: Vec<u32>,
}

impl Tree {
    /// Path length of `row`, leaf correction included.
    #[inline]
    fn path(&self, row: &[f64]) -> f64 {
        let mut i = 0usize;
        loop {
            let n = self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            i = n.left as usize + usize::from(row[n.feature as usize] >= n.value);
        }
    }
}

/// Training parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub trees: usize,
    pub sample_size: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            sample_size: 256,
            seed: 42,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    pub trees: Vec<Tree>,
    /// The sub-sample size actually used (min of the parameter and the data).
    pub psi: usize,
    pub features: usize,
}

impl IsolationForest {
    /// Fits on the rows of `x` (already scaled). Deterministic for a given seed.
    pub fn fit(x: ArrayView2<'_, f64>, p: ForestParams) -> Self {
        let n = x.nrows();
        let psi = p.sample_size.min(n).max(1);
        let limit = (psi as f64).log2().ceil() as usize;
        let mut rng = StdRng::seed_from_u64(p.seed);
        let trees = (0..p.trees)
            .map(|_| {
                let mut idx: Vec<usize> = if n == 0 {
                    Vec::new()
                } else {
                    sample(&mut rng, n, psi).into_vec()
                };
                let mut tree = Tree {
                    nodes: Vec::with_capacity(2 * psi),
                    sizes: Vec::with_capacity(2 * psi),
                };
                tree.nodes.push(Node {
                    value: 0.0,
                    feature: LEAF,
                    left: 0,
                });
                tree.sizes.push(0);
                build(x, &mut idx, 0, 0, limit, &mut rng, &mut tree);
                tree
            })
            .collect();
        Self {
            trees,
            psi,
            features: x.ncols(),
        }
    }

    fn norm(&self) -> f64 {
        c(self.psi).max(f64::MIN_POSITIVE)
    }

    /// Anomaly score in [0, 1].
    pub fn score(&self, row: ArrayView1<'_, f64>) -> f64 {
        if self.trees.is_empty() {
            return 0.5;
        }
        let owned;
        let r = match row.as_slice() {
            Some(r) => r,
            None => {
                owned = row.to_vec();
                &owned
            }
        };
        let mean: f64 = self.trees.iter().map(|t| t.path(r)).sum::<f64>() / self.trees.len() as f64;
        2f64.powf(-mean / self.norm())
    }

    /// Scores every row, tree by tree: each tree stays in cache for the whole batch.
    pub fn score_all(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        if self.trees.is_empty() {
            return vec![0.5; x.nrows()];
        }
        let owned;
        let data = match x.as_slice() {
            Some(d) => d,
            None => {
                owned = x
                    .as_standard_layout()
                    .into_owned()
                    .into_raw_vec_and_offset()
                    .0;
                &owned
            }
        };
        let w = x.ncols().max(1);
        let mut sum = vec![0.0; x.nrows()];
        for t in &self.trees {
            // Walk LANES rows at once: their node loads are independent, so the CPU overlaps
            // them instead of waiting on one dependent chain at a time.
            const LANES: usize = 8;
            for (sums, rows) in sum.chunks_mut(LANES).zip(data.chunks(w * LANES)) {
                let lanes = sums.len();
                let mut at = [0usize; LANES];
                let mut live = lanes;
                let mut done = [false; LANES];
                while live > 0 {
                    for k in 0..lanes {
                        if done[k] {
                            continue;
                        }
                        let n = t.nodes[at[k]];
                        if n.feature == LEAF {
                            sums[k] += n.value;
                            done[k] = true;
                            live -= 1;
                        } else {
                            let v = rows[k * w + n.feature as usize];
                            at[k] = n.left as usize + usize::from(v >= n.value);
                        }
                    }
                }
            }
        }
        let k = self.trees.len() as f64 * self.norm();
        sum.iter().map(|s| 2f64.powf(-s / k)).collect()
    }

    /// Why `row` scored as it did: per feature, the share of the isolating work its splits did
    /// along the row's paths. A split that sends the row from a node of `n` training points to
    /// a child of `m` removed `log2(n/m)` bits of company; each feature is credited with the
    /// bits of its splits, normalised per tree and averaged over trees, so shares sum to 1. An
    /// outlier in one feature is cut off by that feature's splits (many bits each) while splits
    /// on its ordinary features halve its company at most.
    pub fn attribution(&self, row: ArrayView1<'_, f64>) -> Vec<f64> {
        let mut total = vec![0.0; self.features];
        let mut per = vec![0.0; self.features];
        for tree in &self.trees {
            per.fill(0.0);
            let mut sum = 0.0;
            let mut i = 0usize;
            loop {
                let node = tree.nodes[i];
                if node.feature == LEAF {
                    break;
                }
                let next =
                    node.left as usize + usize::from(row[node.feature as usize] >= node.value);
                let bits = log2_count(tree.sizes[i]) - log2_count(tree.sizes[next]);
                per[node.feature as usize] += bits;
                sum += bits;
                i = next;
            }
            if sum > 0.0 {
                for (t, p) in total.iter_mut().zip(&per) {
                    *t += p / sum;
                }
            }
        }
        let n = self.trees.len().max(1) as f64;
        total.iter().map(|t| t / n).collect()
    }
}

/// Node sizes up to this have their log2 in a table (the usual sample sizes are 256-4096).
const LOG2_TABLE: usize = 4096;

/// log2 of a node's training-point count (at least 1): attribution takes two per split,
/// thousands per flow, so the common sizes are looked up.
fn log2_count(n: u32) -> f64 {
    static TABLE: std::sync::LazyLock<Vec<f64>> =
        std::sync::LazyLock::new(|| (0..=LOG2_TABLE).map(|n| (n.max(1) as f64).log2()).collect());
    TABLE
        .get(n as usize)
        .copied()
        .unwrap_or_else(|| f64::from(n.max(1)).log2())
}

/// Fills node `me` (already allocated) for the points `idx` at `depth`: a leaf, or a split
/// whose two children are allocated side by side before either subtree is grown.
fn build(
    x: ArrayView2<'_, f64>,
    idx: &mut [usize],
    me: usize,
    depth: usize,
    limit: usize,
    rng: &mut StdRng,
    tree: &mut Tree,
) {
    tree.sizes[me] = idx.len() as u32;
    let leaf = Node {
        value: depth as f64 + c(idx.len()),
        feature: LEAF,
        left: 0,
    };
    tree.nodes[me] = leaf;
    if idx.len() <= 1 || depth >= limit {
        return;
    }
    // Features that still vary among these points; a constant one cannot split them.
    let ranges: Vec<(usize, f64, f64)> = (0..x.ncols())
        .filter_map(|f| {
            let (lo, hi) = idx
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                    let v = x[[i, f]];
                    (lo.min(v), hi.max(v))
                });
            (hi > lo).then_some((f, lo, hi))
        })
        .collect();
    if ranges.is_empty() {
        return;
    }
    let (f, lo, hi) = ranges[rng.random_range(0..ranges.len())];
    let threshold = rng.random_range(lo..hi);
    // Partition in place: values below the threshold first.
    let mut split = 0;
    for k in 0..idx.len() {
        if x[[idx[k], f]] < threshold {
            idx.swap(k, split);
            split += 1;
        }
    }
    let left = tree.nodes.len();
    tree.nodes.extend([leaf, leaf]);
    tree.sizes.extend([0, 0]);
    tree.nodes[me] = Node {
        value: threshold,
        feature: f as u32,
        left: left as u32,
    };
    let (l, r) = idx.split_at_mut(split);
    build(x, l, left, depth + 1, limit, rng, tree);
    build(x, r, left + 1, depth + 1, limit, rng, tree);
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(c(1), 0.0);
        assert_eq!(c(2), 1.0);
        // c(256) = 2 H(255) - 2*255/256 ~ 10.24
        assert!((c(256) - 10.2448).abs() < 1e-3, "{}", c(256));
    }

    #[test]
    fn outliers_score_high_and_the_fit_is_deterministic() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut x = Array2::<f64>::zeros((1003, 3));
        for mut r in x.rows_mut() {
            for v in r.iter_mut() {
                *v = rng.random_range(-1.0..1.0);
            }
        }
        let f = IsolationForest::fit(x.view(), ForestParams::default());
        let inlier = ndarray::arr1(&[0.0, 0.1, -0.1]);
        let outlier = ndarray::arr1(&[9.0, 9.0, 9.0]);
        let (si, so) = (f.score(inlier.view()), f.score(outlier.view()));
        assert!(si < 0.5 && so > 0.6, "inlier {si}, outlier {so}");
        assert_eq!(
            f,
            IsolationForest::fit(x.view(), ForestParams::default()),
            "same seed, same forest"
        );
        let one_off = ndarray::arr1(&[0.0, 9.0, 0.0]);
        assert!(
            f.score(one_off.view()) > si,
            "an outlier in one feature still scores above an inlier"
        );
        let a = f.attribution(one_off.view());
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(
            a[1] > a[0] && a[1] > a[2],
            "feature 1 isolates the outlier: {a:?}"
        );
    }
}
