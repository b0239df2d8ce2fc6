//! KitNET (Mirsky et al., NDSS 2018): an ensemble of small autoencoders, each over a cluster
//! of correlated features, and an output autoencoder over their reconstruction errors; the
//! output's root-mean-square reconstruction error is the anomaly score. Everything learns
//! online, one sample at a time (stochastic gradient descent), so it trains in one pass over
//! a baseline and needs no stored matrix.
//!
//! Training has two phases, as in Kitsune: the first samples only feed the feature mapper
//! (incremental correlation of every feature pair; single-linkage clustering of the
//! correlation distance, split until each cluster has at most `max_cluster` features), the
//! rest train the autoencoders.

#![allow(
    clippy::needless_range_loop,
    reason = "index-parallel arrays (weights, sums, decay rates): indices read as the maths"
)]

use serde::{Deserialize, Serialize};

/// One denoising-free autoencoder with tied weights, sigmoid units and min-max scaling learnt
/// during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Autoencoder {
    pub n_in: usize,
    pub n_hidden: usize,
    /// Row-major `n_in x n_hidden`.
    pub w: Vec<f64>,
    pub hidden_bias: Vec<f64>,
    pub visible_bias: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Scratch space for one autoencoder pass.
#[derive(Default)]
struct Pass {
    x: Vec<f64>,
    y: Vec<f64>,
    z: Vec<f64>,
}

impl Autoencoder {
    fn new(n_in: usize, hidden_ratio: f64, rng: &mut impl rand::Rng) -> Self {
        let n_hidden = ((n_in as f64 * hidden_ratio).ceil() as usize).max(1);
        let a = 1.0 / n_in as f64;
        Self {
            n_in,
            n_hidden,
            w: (0..n_in * n_hidden)
                .map(|_| rng.random_range(-a..=a))
                .collect(),
            hidden_bias: vec![0.0; n_hidden],
            visible_bias: vec![0.0; n_in],
            lo: vec![f64::INFINITY; n_in],
            hi: vec![f64::NEG_INFINITY; n_in],
        }
    }

    /// Scales `input` by the training range, encodes and decodes it into `p`.
    fn forward(&self, input: &[f64], p: &mut Pass) {
        p.x.clear();
        p.x.extend(input.iter().enumerate().map(|(i, v)| {
            let span = self.hi[i] - self.lo[i];
            if span.is_finite() && span > 0.0 {
                (v - self.lo[i]) / span
            } else if self.lo[i].is_finite() {
                // A feature constant in training: 0 at that value, 1 per unit away from it.
                (v - self.lo[i]).abs()
            } else {
                0.0
            }
        }));
        // Row by row over the weights (contiguous), accumulating every hidden unit at once.
        p.y.clear();
        p.y.extend_from_slice(&self.hidden_bias);
        for i in 0..self.n_in {
            let xi = p.x[i];
            let row = &self.w[i * self.n_hidden..(i + 1) * self.n_hidden];
            for (y, w) in p.y.iter_mut().zip(row) {
                *y += xi * w;
            }
        }
        for y in &mut p.y {
            *y = sigmoid(*y);
        }
        p.z.clear();
        for i in 0..self.n_in {
            let row = &self.w[i * self.n_hidden..(i + 1) * self.n_hidden];
            let s: f64 =
                self.visible_bias[i] + row.iter().zip(&p.y).map(|(w, y)| w * y).sum::<f64>();
            p.z.push(sigmoid(s));
        }
    }

    fn rmse(p: &Pass) -> f64 {
        let n = p.x.len().max(1) as f64;
        (p.x.iter()
            .zip(&p.z)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    }

    /// One SGD step on `input`; returns its reconstruction error before the step.
    fn train(&mut self, input: &[f64], lr: f64, p: &mut Pass, hidden_grad: &mut Vec<f64>) -> f64 {
        for (i, v) in input.iter().enumerate() {
            self.lo[i] = self.lo[i].min(*v);
            self.hi[i] = self.hi[i].max(*v);
        }
        self.forward(input, p);
        let err = Self::rmse(p);
        // Visible error and its back-propagation to the hidden layer (tied weights).
        hidden_grad.clear();
        hidden_grad.resize(self.n_hidden, 0.0);
        for i in 0..self.n_in {
            let e = p.x[i] - p.z[i];
            let row = &self.w[i * self.n_hidden..(i + 1) * self.n_hidden];
            for (g, w) in hidden_grad.iter_mut().zip(row) {
                *g += e * w;
            }
        }
        for (g, y) in hidden_grad.iter_mut().zip(&p.y) {
            *g *= y * (1.0 - y);
        }
        for i in 0..self.n_in {
            let e = p.x[i] - p.z[i];
            for j in 0..self.n_hidden {
                self.w[i * self.n_hidden + j] += lr * (p.x[i] * hidden_grad[j] + e * p.y[j]);
            }
            self.visible_bias[i] += lr * e;
        }
        for j in 0..self.n_hidden {
            self.hidden_bias[j] += lr * hidden_grad[j];
        }
        err
    }

    fn execute(&self, input: &[f64], p: &mut Pass) -> f64 {
        self.forward(input, p);
        Self::rmse(p)
    }

    fn consistent(&self) -> bool {
        self.n_in > 0
            && self.n_hidden > 0
            && self.w.len() == self.n_in * self.n_hidden
            && self.hidden_bias.len() == self.n_hidden
            && self.visible_bias.len() == self.n_in
            && self.lo.len() == self.n_in
            && self.hi.len() == self.n_in
    }
}

/// Incremental correlation of every feature pair (Kitsune's corClust).
struct Correlation {
    n: f64,
    sum: Vec<f64>,
    residual_sq: Vec<f64>,
    /// Row-major `d x d` sums of residual products.
    products: Vec<f64>,
}

impl Correlation {
    fn new(d: usize) -> Self {
        Self {
            n: 0.0,
            sum: vec![0.0; d],
            residual_sq: vec![0.0; d],
            products: vec![0.0; d * d],
        }
    }

    fn update(&mut self, x: &[f64]) {
        let d = self.sum.len();
        self.n += 1.0;
        let r: Vec<f64> = x
            .iter()
            .zip(self.sum.iter_mut())
            .map(|(v, s)| {
                *s += v;
                v - *s / self.n
            })
            .collect();
        for i in 0..d {
            self.residual_sq[i] += r[i] * r[i];
            for j in 0..d {
                self.products[i * d + j] += r[i] * r[j];
            }
        }
    }

    /// Clusters of at most `max` feature indices: single linkage on `1 - correlation`,
    /// the dendrogram split from the top until every part is small enough.
    fn clusters(&self, max: usize) -> Vec<Vec<usize>> {
        let d = self.sum.len();
        let max = max.clamp(1, d.max(1));
        let dist = |i: usize, j: usize| {
            let den = (self.residual_sq[i] * self.residual_sq[j]).sqrt();
            let c = if den > 0.0 {
                self.products[i * d + j] / den
            } else {
                0.0
            };
            (1.0 - c).max(0.0)
        };
        // Dendrogram nodes: leaves 0..d, merges after; each node's leaves in order.
        let mut members: Vec<Vec<usize>> = (0..d).map(|i| vec![i]).collect();
        let mut children: Vec<Option<(usize, usize)>> = vec![None; d];
        let mut active: Vec<usize> = (0..d).collect();
        // Distances between active clusters, indexed by node id.
        let mut node_dist: std::collections::HashMap<(usize, usize), f64> = Default::default();
        for i in 0..d {
            for j in i + 1..d {
                node_dist.insert((i, j), dist(i, j));
            }
        }
        while active.len() > 1 {
            let mut best = (f64::INFINITY, 0, 1);
            for a in 0..active.len() {
                for b in a + 1..active.len() {
                    let (x, y) = (active[a].min(active[b]), active[a].max(active[b]));
                    let v = node_dist[&(x, y)];
                    if v < best.0 {
                        best = (v, a, b);
                    }
                }
            }
            let (na, nb) = (active[best.1], active[best.2]);
            let id = members.len();
            let mut m = members[na].clone();
            m.extend_from_slice(&members[nb]);
            members.push(m);
            children.push(Some((na, nb)));
            active.retain(|&n| n != na && n != nb);
            for &k in &active {
                let d1 = node_dist[&(na.min(k), na.max(k))];
                let d2 = node_dist[&(nb.min(k), nb.max(k))];
                node_dist.insert((k.min(id), k.max(id)), d1.min(d2));
            }
            active.push(id);
        }
        let mut out = Vec::new();
        let mut stack: Vec<usize> = active;
        while let Some(n) = stack.pop() {
            match children[n] {
                Some((a, b)) if members[n].len() > max => {
                    stack.push(b);
                    stack.push(a);
                }
                _ => out.push(members[n].clone()),
            }
        }
        out
    }
}

/// Training knobs (Kitsune's defaults except the grace periods, which are shares of the
/// baseline here).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KitParams {
    /// Most features per ensemble autoencoder.
    pub max_cluster: usize,
    pub hidden_ratio: f64,
    pub learning_rate: f64,
    /// Samples that only map features before the autoencoders learn.
    pub mapping_samples: usize,
    pub seed: u64,
}

impl Default for KitParams {
    fn default() -> Self {
        Self {
            max_cluster: 10,
            hidden_ratio: 0.75,
            learning_rate: 0.1,
            mapping_samples: 5_000,
            seed: 42,
        }
    }
}

/// The trained ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KitNet {
    /// Feature indices of each ensemble member.
    pub clusters: Vec<Vec<usize>>,
    pub ensemble: Vec<Autoencoder>,
    pub output: Autoencoder,
}

/// Reusable buffers for scoring (one per thread of use).
#[derive(Default)]
pub struct Scratch {
    pass: Pass,
    sub: Vec<f64>,
    errors: Vec<f64>,
    grad: Vec<f64>,
    feature_err: Vec<f64>,
}

impl Scratch {
    /// Squared reconstruction error per feature (scaled units) of the last scored vector:
    /// what explains its score.
    pub fn feature_errors(&self) -> &[f64] {
        &self.feature_err
    }
}

impl KitNet {
    /// Anomaly score of one (transformed) feature vector. The per-feature reconstruction
    /// errors stay in `s` for [`Scratch::feature_errors`].
    pub fn score(&self, x: &[f64], s: &mut Scratch) -> f64 {
        s.errors.clear();
        s.feature_err.clear();
        s.feature_err.resize(x.len(), 0.0);
        for (c, ae) in self.clusters.iter().zip(&self.ensemble) {
            s.sub.clear();
            s.sub.extend(c.iter().map(|&i| x[i]));
            s.errors.push(ae.execute(&s.sub, &mut s.pass));
            for (k, &i) in c.iter().enumerate() {
                s.feature_err[i] = (s.pass.x[k] - s.pass.z[k]).powi(2);
            }
        }
        self.output.execute(&s.errors, &mut s.pass)
    }

    /// The ensemble is whole: clusters cover valid indices below `d`, sizes agree.
    pub fn consistent(&self, d: usize) -> bool {
        self.clusters.len() == self.ensemble.len()
            && !self.clusters.is_empty()
            && self
                .clusters
                .iter()
                .zip(&self.ensemble)
                .all(|(c, ae)| ae.consistent() && ae.n_in == c.len() && c.iter().all(|&i| i < d))
            && self.output.consistent()
            && self.output.n_in == self.ensemble.len()
    }
}

/// Online training: feature mapping first, then the autoencoders.
pub struct Trainer {
    params: KitParams,
    dims: usize,
    correlation: Option<Correlation>,
    net: Option<KitNet>,
    seen: usize,
    scratch: Scratch,
    rng: rand::rngs::StdRng,
}

impl Trainer {
    pub fn new(dims: usize, params: KitParams) -> Self {
        use rand::SeedableRng as _;
        Self {
            params,
            dims,
            correlation: Some(Correlation::new(dims)),
            net: None,
            seen: 0,
            scratch: Scratch::default(),
            rng: rand::rngs::StdRng::seed_from_u64(params.seed),
        }
    }

    /// Learns from one sample; returns the score it had before the step once the
    /// autoencoders are learning.
    pub fn learn(&mut self, x: &[f64]) -> Option<f64> {
        self.seen += 1;
        if let Some(c) = &mut self.correlation {
            c.update(x);
            if self.seen >= self.params.mapping_samples {
                self.end_mapping();
            }
            return None;
        }
        let net = self.net.as_mut()?;
        let s = &mut self.scratch;
        s.errors.clear();
        for (c, ae) in net.clusters.iter().zip(net.ensemble.iter_mut()) {
            s.sub.clear();
            s.sub.extend(c.iter().map(|&i| x[i]));
            s.errors
                .push(ae.train(&s.sub, self.params.learning_rate, &mut s.pass, &mut s.grad));
        }
        Some(net.output.train(
            &s.errors,
            self.params.learning_rate,
            &mut s.pass,
            &mut s.grad,
        ))
    }

    /// Ends feature mapping (if still mapping): the clusters are fixed, the autoencoders
    /// start learning with the next sample.
    pub fn end_mapping(&mut self) {
        let Some(c) = self.correlation.take() else {
            return;
        };
        if c.n < 2.0 {
            self.correlation = Some(c);
            return;
        }
        let clusters = c.clusters(self.params.max_cluster);
        let ensemble = clusters
            .iter()
            .map(|c| Autoencoder::new(c.len(), self.params.hidden_ratio, &mut self.rng))
            .collect::<Vec<_>>();
        let output = Autoencoder::new(ensemble.len(), self.params.hidden_ratio, &mut self.rng);
        self.net = Some(KitNet {
            clusters,
            ensemble,
            output,
        });
    }

    /// Samples seen.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The trained ensemble; None when the baseline ended during feature mapping.
    pub fn finish(self) -> Option<KitNet> {
        self.net
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn params(&self) -> KitParams {
        self.params
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    /// Correlated features share a cluster; no cluster exceeds the limit.
    #[test]
    fn the_mapper_groups_correlated_features() {
        let mut c = Correlation::new(6);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..2_000 {
            let a: f64 = rng.random_range(0.0..1.0);
            let b: f64 = rng.random_range(0.0..1.0);
            c.update(&[a, 2.0 * a + 0.01, b, a * 3.0, b + 1.0, -b]);
        }
        let cl = c.clusters(3);
        assert!(cl.iter().all(|k| k.len() <= 3), "{cl:?}");
        let of = |i: usize| {
            cl.iter()
                .position(|k| k.contains(&i))
                .expect("every feature")
        };
        assert_eq!(of(0), of(1));
        assert_eq!(of(0), of(3));
        assert_eq!(of(2), of(4));
        assert_ne!(of(0), of(2));
        let mut all: Vec<usize> = cl.concat();
        all.sort_unstable();
        assert_eq!(all, (0..6).collect::<Vec<_>>());
    }

    /// Trained on one regime, the ensemble scores it low and a different one high.
    #[test]
    fn it_learns_what_normal_looks_like() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let params = KitParams {
            mapping_samples: 500,
            ..KitParams::default()
        };
        let mut t = Trainer::new(8, params);
        let normal = |rng: &mut rand::rngs::StdRng| -> Vec<f64> {
            let a: f64 = rng.random_range(0.0..1.0);
            let b: f64 = rng.random_range(0.0..1.0);
            vec![a, a * 0.5, 1.0 - a, b, b * b, 0.3, a * b, 1.0 - b]
        };
        for _ in 0..20_000 {
            t.learn(&normal(&mut rng));
        }
        let net = t.finish().expect("trained");
        assert!(net.consistent(8));
        let mut s = Scratch::default();
        let benign: f64 = (0..200)
            .map(|_| net.score(&normal(&mut rng), &mut s))
            .sum::<f64>()
            / 200.0;
        // Broken correlations: each feature plausible alone, the combination not.
        let odd: f64 = (0..200)
            .map(|_| {
                let a: f64 = rng.random_range(0.0..1.0);
                net.score(&[a, 1.0 - a, a, 0.9, 0.0, 0.8, 1.0, 0.9], &mut s)
            })
            .sum::<f64>()
            / 200.0;
        assert!(odd > 2.0 * benign, "benign {benign:.4}, odd {odd:.4}");
        net.score(&[0.5, 0.25, 0.5, 0.5, 0.25, 5.0, 0.25, 0.5], &mut s);
        let e = s.feature_errors();
        let top = e
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(
            top,
            Some(5),
            "the feature far outside its range explains it: {e:?}"
        );
    }
}
