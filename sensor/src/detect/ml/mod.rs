//! The anomaly model: flow features, the Isolation Forest, and the versioned model file that
//! holds a trained forest with its scaler and threshold.

pub mod features;
pub mod iforest;
pub mod model;
